"""Monitors (org.freedesktop.DBus.Monitoring.BecomeMonitor): a connection
that gives up its names and from then on receives a copy of every message
its rules match, and may send nothing."""

from ..wire.message import ERROR, FIELD_SENDER, NO_REPLY_EXPECTED, Message, build_message, string_field

# dbus-daemon stamps a message from a connection that has not said Hello
# with this sender before monitors see it (bus/dispatch.c), so that the
# connection can neither forge a sender nor show none.
NOT_ACTIVE_YET = ":not.active.yet"
_NOT_ACTIVE_FIELDS = {e: string_field(FIELD_SENDER, NOT_ACTIVE_YET, e) for e in "lB"}


class Monitors(list):
    """The bus's monitors, in the order they became monitors."""

    __slots__ = ("bus", "held", "_driver_fields", "_uncontained_fields")

    def __init__(self, bus):
        super().__init__()
        self.bus = bus
        from .bus import DRIVER_SENDER_FIELDS, UNCONTAINED_FIELDS   # bus imports this module
        self._driver_fields = DRIVER_SENDER_FIELDS
        self._uncontained_fields = UNCONTAINED_FIELDS
        # While the driver answers a call, copies wait here (with the
        # monitors there were then) and follow the call: dbus-daemon shows
        # monitors one transaction at a time, and only what it sends in a
        # transaction of its own (copy_now) goes ahead of the call.
        self.held = None

    def hold(self) -> bool:
        """Hold copies until release(); False if they are held already
        (then the outer holder releases, and copies stay in order)."""
        if self.held is not None:
            return False
        self.held = []
        return True

    def release(self) -> None:
        held, self.held = self.held, None
        for sender, msg, target, mons in held:
            self._copy(sender, msg, target, mons)

    def add(self, peer, rules) -> None:
        """peer becomes a monitor: to everyone else it looks as if it had
        disconnected (its names released and announced)."""
        bus = self.bus
        unique = peer.unique_name
        # As dbus-daemon: every name, the unique one last, is released while
        # the peer is still an ordinary connection with its match rules, and
        # only then does it become a monitor, so that it never sees copies
        # of the signals its own change caused.
        for change in bus.registry.drop_peer(peer):
            bus.announce(change)
        bus.emit_signal("NameLost", "s", (unique,), destination=peer)
        bus.emit_name_owner_changed(unique, unique, "")
        for rule in list(peer.rules):
            bus.remove_rule(peer, rule)
        del bus.peers[unique]
        peer.is_monitor = True
        peer.monitor_rules = rules
        self.append(peer)

    def copy(self, sender, msg, target) -> None:
        """msg from sender (to target, or None: a broadcast or the driver)."""
        if self.held is not None:
            self.held.append((sender, msg, target, tuple(self)))
            return
        self._copy(sender, msg, target, self)

    def copy_now(self, sender, msg, target) -> None:
        """Ahead of anything held: what dbus-daemon sends in a transaction
        of its own (systemd's ActivationRequest, bus/activation.c)."""
        self._copy(sender, msg, target, self)

    def _copy(self, sender, msg, target, monitors) -> None:
        bus = self.bus
        recipient = target.unique_name if target is not None else None
        if sender is bus.driver_peer:
            data = msg.data
        else:
            data = msg.forwarded((sender.sender_fields or _NOT_ACTIVE_FIELDS)[msg.endian])
        stamped = None
        for mon in monitors:
            if mon.closed:
                continue
            rules = mon.monitor_rules
            if rules and not any(r.matches(msg, sender, recipient, target) for r in rules):
                continue
            if mon.wants_instance_header:
                # A monitor that asked (RequestHeader, before BecomeMonitor)
                # learns each sender's container instance in the copy itself:
                # asking GetConnectionInstance later loses to senders that
                # have already gone (`sandbus monitor`, tools/monitor.py).
                if stamped is None:
                    stamped = self._with_instance(sender, msg)
                mon.sink.send(stamped, msg.fds if mon.unix_fds else ())
            else:
                mon.sink.send(data, msg.fds if mon.unix_fds else ())

    def copy_error(self, sender, msg, name: str, text: str) -> None:
        """Show monitors an error from the bus to sender about msg that is
        never sent (a broadcast one receiver's rules refused, or a message
        of the bus itself that its receiver's rules refused: then the error
        is addressed to the bus, as dbus-daemon's capture_error_reply)."""
        bus = self.bus
        data = build_message(ERROR, bus.next_serial(), flags=NO_REPLY_EXPECTED, error_name=name,
                             reply_serial=msg.serial, destination=sender.unique_name,
                             sender=bus.driver_peer.unique_name,
                             signature="s", body=(text,))
        self.copy(bus.driver_peer, Message(data), sender)

    def _with_instance(self, sender, msg) -> bytes:
        e = msg.endian
        if sender is self.bus.driver_peer:
            return msg.forwarded(self._driver_fields[e], self._uncontained_fields[e])
        return msg.forwarded((sender.sender_fields or _NOT_ACTIVE_FIELDS)[e],
                             (sender.instance_field or self._uncontained_fields)[e])

