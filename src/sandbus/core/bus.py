"""The bus, sans I/O: peers come and go, messages come in, deliveries go out
through each peer's sink.  Routing: driver calls, unicast (with reply
tracking), broadcast through the match index, copies to monitors and
eavesdroppers."""

import logging

from ..wire.message import (
    ERROR,
    FIELD_CONTAINER_INSTANCE,
    FIELD_SENDER,
    METHOD_CALL,
    METHOD_RETURN,
    NO_REPLY_EXPECTED,
    SIGNAL,
    Message,
    ProtocolError,
    build_message,
    string_field,
)
from . import errors
from .errors import DBusError
from ..config.model import Limits
from .match import MatchIndex
from .mediation import HIDDEN, NO_MEDIATION
from .monitors import Monitors
from .names import NameRegistry
from .peer import BusPseudoPeer, Credentials, Peer
from .replies import ReplyTracker

log = logging.getLogger("sandbus.bus")

DRIVER_NAME = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"
DRIVER_INTERFACE = "org.freedesktop.DBus"
PEER_INTERFACE = "org.freedesktop.DBus.Peer"

# CONTAINER_INSTANCE for messages from outside any container instance, and
# SENDER for the bus's own messages, marshalled once per byte order.
UNCONTAINED_FIELDS = {e: string_field(FIELD_CONTAINER_INSTANCE, "/", e, "o") for e in "lB"}
DRIVER_SENDER_FIELDS = {e: string_field(FIELD_SENDER, DRIVER_NAME, e) for e in "lB"}
# A body at least this large is handed to a sink that takes it (send_parts)
# as a view beside its header, instead of being copied into one buffer with
# it: smaller messages keep the one-buffer path the common case is tuned for.
LARGE_BODY = 64 * 1024


class BusSettings:
    """What the bus is told about itself; the daemon supplies the process
    facts (bus_uid, bus_pid), so the core asks the system nothing."""

    def __init__(self, guid: str, machine_id: str, *, bus_type: str = "session",
                 limits: Limits = None, bus_uid: int = None, bus_pid: int = None, activation=None):
        self.guid = guid
        self.machine_id = machine_id
        self.bus_type = bus_type
        self.limits = limits or Limits.defaults(bus_type)
        self.bus_uid = bus_uid
        self.bus_pid = bus_pid
        self.activation = activation


class Bus:
    def __init__(self, settings: BusSettings, release_fds=None, mediation=None):
        from .driver import Driver  # the driver needs Bus; import here to keep one direction

        self.settings = settings
        self.limits = settings.limits
        self.peers = {}  # unique name -> Peer
        self.connections = set()  # every Peer, registered or not
        self.registry = NameRegistry()
        self.matches = MatchIndex()
        self.eavesdrop_rules = []  # rules with eavesdrop='true', checked for unicast
        self.monitors = Monitors(self)
        self.replies = ReplyTracker(self)
        self.driver_peer = BusPseudoPeer(DRIVER_NAME)
        self._next_peer_id = 0
        self._next_unique = 0
        self._serial = 0
        # The io layer owns fds: it says how to let go of the ones a message carried.
        self.release_fds = release_fds or (lambda fds: None)
        self.mediation = mediation or NO_MEDIATION
        self.driver = Driver(self)
        # Timers come from the io layer: call_later(seconds, fn, *args) -> handle with cancel().
        self.call_later = None

    def set_mediation(self, mediation) -> None:
        """Before any peer connects (peers already there keep their verdicts)."""
        self.mediation = mediation

    # -- connections -----------------------------------------------------------

    def connect(self, sink, creds: Credentials, unix_fds: bool, listener=None) -> Peer:
        self._next_peer_id += 1
        peer = Peer(self._next_peer_id, sink, creds, unix_fds, listener)
        self.connections.add(peer)
        self.mediation.connected(peer, listener)
        return peer

    def new_unique_name(self) -> str:
        name = f":1.{self._next_unique}"
        self._next_unique += 1
        return name

    def disconnect(self, peer: Peer) -> None:
        if peer.closed:
            return
        peer.closed = True
        self.connections.discard(peer)
        if peer.incoming_fds:
            self.release_fds(peer.incoming_fds)
            peer.incoming_fds = []
        for rule in peer.rules:
            self._unindex_rule(rule)
        peer.rules = []
        if peer.is_monitor:
            self.monitors.remove(peer)
        self.replies.callee_left(peer)
        self.replies.caller_left(peer)
        unique = peer.unique_name
        if unique is not None and not peer.is_monitor:
            # Announced while the peer is still known, so that mediators can
            # decide who may see its names go; it receives nothing any more.
            for change in self.registry.drop_peer(peer):
                self.announce(change)
            # the unique name is lost last, NameLost first, as dbus-daemon
            # (only monitors can see that NameLost now)
            if self.monitors:
                self.emit_signal("NameLost", "s", (unique,), destination=peer)
            self.emit_name_owner_changed(unique, unique, "")
            del self.peers[unique]
        self.mediation.disconnected(peer)

    def kick(self, peer: Peer, reason: str) -> None:
        """Disconnect a misbehaving peer, and only it."""
        log.info("disconnecting %s: %s", peer.unique_name or f"connection #{peer.id}", reason)
        peer.sink.close(reason)
        self.disconnect(peer)

    # -- incoming --------------------------------------------------------------

    def receive(self, peer: Peer, data: bytes) -> None:
        """One complete message frame from peer."""
        if peer.closed:
            return
        try:
            msg = Message(data)
        except ProtocolError as e:
            self.kick(peer, f"invalid message: {e}")
            return
        n = msg.unix_fds
        if not n:
            self.route(peer, msg)
            return
        if n > len(peer.incoming_fds):
            self.kick(peer, "message declares more unix fds than were passed")
            return
        if n > self.limits.max_message_unix_fds:
            self.kick(peer, "message carries more unix fds than max_message_unix_fds")
            return
        msg.fds = peer.incoming_fds[:n]
        del peer.incoming_fds[:n]
        try:
            self.route(peer, msg)
        finally:
            self.release_fds(msg.fds)

    def route(self, sender: Peer, msg: Message) -> None:
        dest = msg.destination
        if dest is None and (msg.type != SIGNAL or msg.interface == PEER_INTERFACE):
            # dbus-daemon never dispatches these: libdbus in the daemon
            # answers them on the connection itself, before the bus (and its
            # monitors) see them, registered or not (core/driver.py).
            self.driver.answer_locally(sender, msg)
            return
        if sender.unique_name is None:
            self.driver.handle_unregistered(sender, msg)
            return
        if msg.type > SIGNAL:
            self.send_error_to(sender, msg.serial, errors.ACCESS_DENIED,
                               f"Message type {msg.type} is not one the bus knows how to route")
            return
        if sender.is_monitor:
            self.kick(sender, "monitors may not send messages")
            return
        if dest is None:
            self.broadcast(sender, msg)
            return
        if dest == DRIVER_NAME:
            self._to_driver(sender, msg)
            return
        if sender.restricted and self.mediation.hides(sender, msg):
            # before any lookup: a hidden name and a missing one take the
            # same path from here on (core/mediation.py)
            self.driver.deliver_to_missing(sender, msg, capture=True)
            return
        if dest[0] == ":":
            target = self.peers.get(dest)
        else:
            target = self.peers.get(self._owner_name(dest))
            if sender.restricted:
                # a name may resolve to another peer for it (core/mediation.py)
                target = self.mediation.owner(sender, dest, target)
        if target is None:
            self.driver.deliver_to_missing(sender, msg, capture=True)
            return
        self.unicast(sender, target, msg)

    def _to_driver(self, sender: Peer, msg: Message) -> None:
        # Monitors see every message, also the ones refused next, as
        # dbus-daemon captures before its policy check (bus/dispatch.c), and
        # a call before all the bus does about it (Monitors.hold); a signal
        # only after the driver acted on it: dbus-daemon answers systemd's
        # ActivationFailure in a transaction of its own, sent before the
        # one that carries the captured signal.
        monitors = self.monitors
        if msg.type == METHOD_CALL and monitors:
            holding = monitors.hold()
            monitors.copy(sender, msg, None)
            try:
                self._driver_acts(sender, msg)
            finally:
                if holding:
                    monitors.release()
            return
        self._driver_acts(sender, msg)

    def _driver_acts(self, sender: Peer, msg: Message) -> None:
        signal = msg.type != METHOD_CALL
        if sender.restricted:
            verdict = self.mediation.unicast(sender, self.driver_peer, msg, False)
            if verdict is not None:
                if signal and self.monitors:
                    self.monitors.copy(sender, msg, None)
                self._refuse(sender, msg, verdict)
                return
        handled = self.driver.handle(sender, msg)
        if signal and self.monitors:
            self.monitors.copy(sender, msg, None)
        # eavesdroppers see what the bus was sent, once it acted on it
        # without an error (dbus-daemon matches it like any message then)
        if handled and self.eavesdrop_rules:
            self._copy_to_eavesdroppers(sender, msg, self.driver_peer)

    def _owner_name(self, name: str):
        owner = self.registry.owner(name)
        return owner.unique_name if owner is not None else None

    def _refuse(self, sender: Peer, msg: Message, verdict) -> None:
        """Answer what a mediator refused (core/mediation.py): a hidden name
        takes the very path a missing one takes."""
        if verdict is HIDDEN:
            self.driver.deliver_to_missing(sender, msg)
            return
        error = verdict.error
        if error is not None and (verdict.always or msg.expects_reply):
            self.send_error_to(sender, msg.serial, error.name, error.message)

    def unicast(self, sender: Peer, target: Peer, msg: Message, capture: bool = True) -> None:
        """capture False: monitors saw msg already (queued for activation)."""
        mtype = msg.type
        if capture and self.monitors:
            # before any refusal, as with the driver (route)
            self.monitors.copy(sender, msg, target)
        if mtype == METHOD_RETURN or mtype == ERROR:
            requested = self.replies.take(sender, target, msg.reply_serial)
            ask = not requested or sender.replies_restricted or target.replies_restricted
        else:
            requested = False
            ask = sender.restricted or target.restricted
        if ask:
            verdict = self.mediation.unicast(sender, target, msg, requested)
            if verdict is not None:
                self._refuse(sender, msg, verdict)
                return
        if mtype == METHOD_CALL and not msg.flags & 1:
            if target.sink.queued_bytes > self.limits.max_outgoing_bytes:
                self.send_error_to(sender, msg.serial, errors.LIMITS_EXCEEDED,
                                   "The destination service's message queue is full")
                return
            if sender.pending_calls >= self.limits.max_replies_per_connection:
                self.send_error_to(sender, msg.serial, errors.LIMITS_EXCEEDED,
                                   "The maximum number of pending replies per connection has been reached")
                return
        if msg.fds and not target.unix_fds:
            if msg.expects_reply:
                self.send_error_to(sender, msg.serial, errors.NOT_SUPPORTED,
                                   "Tried to send message with Unix file descriptors to a client that doesn't support that.")
            return
        if mtype == METHOD_CALL and not msg.flags & 1:
            self.replies.expect(sender, target, msg.serial)
        self._send(sender, target, msg)
        if self.eavesdrop_rules:
            self._copy_to_eavesdroppers(sender, msg, target)

    def _queue_full(self, target: Peer, mtype: int) -> bool:
        """True if target's outgoing queue is over max_outgoing_bytes: a
        signal to it is dropped (as dbus-daemon does); anything else means
        it does not read what it asked for, and it alone is disconnected."""
        if target.sink.queued_bytes <= self.limits.max_outgoing_bytes:
            return False
        if mtype != SIGNAL:
            self.kick(target, "its outgoing queue exceeds max_outgoing_bytes (it does not read)")
        return True

    def _send(self, sender, target: Peer, msg: Message) -> None:
        if target.sink.queued_bytes > self.limits.max_outgoing_bytes and self._queue_full(target, msg.type):
            return
        if target.wants_instance_header:
            e = msg.endian
            data = msg.forwarded(sender.sender_fields[e], (sender.instance_field or UNCONTAINED_FIELDS)[e])
        else:
            if msg.body_len >= LARGE_BODY:
                send_parts = getattr(target.sink, "send_parts", None)
                if send_parts is not None:
                    parts = msg.forwarded_parts(sender.sender_fields[msg.endian])
                    if parts is not None:
                        send_parts(parts[0], parts[1], msg.fds)
                        return
            data = msg.forwarded(sender.sender_fields[msg.endian])
        target.sink.send(data, msg.fds)

    def _stamped(self, msg: Message) -> bytes:
        """A bus message for a peer that asked for CONTAINER_INSTANCE."""
        return msg.forwarded(DRIVER_SENDER_FIELDS[msg.endian], UNCONTAINED_FIELDS[msg.endian])

    def broadcast(self, sender, msg: Message) -> None:
        monitors = self.monitors
        if monitors:
            monitors.copy(sender, msg, None)
        candidates = self.matches.candidates(msg, sender)
        if candidates:
            delivered = set()
            mediation = self.mediation
            for rule in candidates:
                p = rule.owner
                if p in delivered:
                    continue
                if rule.matches(msg, sender, None):
                    delivered.add(p)
                    if msg.fds and not p.unix_fds:
                        continue
                    if (sender.restricted or p.restricted) and not mediation.receive(sender, p, msg):
                        if monitors:
                            # dbus-daemon shows monitors the AccessDenied it
                            # would have sent, though the sender never gets it
                            monitors.copy_error(sender, msg, errors.ACCESS_DENIED,
                                                f"Rejected broadcast to {p.unique_name}: refused by the bus's rules")
                        continue
                    self._deliver_any(sender, p, msg)

    def _deliver_any(self, sender, target: Peer, msg: Message) -> None:
        if sender is self.driver_peer:
            if self._queue_full(target, msg.type):
                return
            target.sink.send(self._stamped(msg) if target.wants_instance_header else msg.data, ())
        else:
            self._send(sender, target, msg)

    def _copy_to_eavesdroppers(self, sender, msg: Message, target) -> None:
        recipient = target.unique_name if target is not None else None
        done = set()
        mediation = self.mediation
        for rule in self.eavesdrop_rules:
            p = rule.owner
            if p is target or p in done:
                continue
            if rule.matches(msg, sender, recipient, target):
                done.add(p)
                if msg.fds and not p.unix_fds:
                    continue
                if (sender.restricted or p.restricted) and not mediation.receive(sender, p, msg, target):
                    continue
                self._deliver_any(sender, p, msg)

    # -- match rules -----------------------------------------------------------

    def add_rule(self, peer: Peer, rule) -> None:
        peer.rules.append(rule)
        if rule.eavesdrop:
            self.eavesdrop_rules.append(rule)
        self.matches.add(rule)

    def remove_rule(self, peer: Peer, rule) -> None:
        peer.rules.remove(rule)
        self._unindex_rule(rule)

    def _unindex_rule(self, rule) -> None:
        if rule.eavesdrop:
            self.eavesdrop_rules.remove(rule)
        self.matches.remove(rule)

    # -- messages from the bus itself -----------------------------------------

    def next_serial(self) -> int:
        self._serial = (self._serial % 0xFFFFFFFF) + 1
        return self._serial

    def send_bus_message(self, target: Peer, data: bytes, fds=(), capture: bool = True) -> None:
        """A message from the driver to one peer (reply, error, unicast signal).
        Monitors see it even when target is gone or its rules refuse it, as
        dbus-daemon captures before it checks (bus/connection.c:
        bus_transaction_send_from_driver); capture False: they saw it when
        it was queued for a peer still to come (activation)."""
        monitors = self.monitors if capture else None
        msg = None
        if monitors:
            msg = Message(data)
            monitors.copy(self.driver_peer, msg, target)
        if target.restricted:
            msg = msg or Message(data)
            verdict = self.mediation.from_bus(target, msg)
            if verdict is not None:
                if self.monitors and verdict.error is not None:
                    self.monitors.copy_error(self.driver_peer, msg, verdict.error.name, verdict.error.message)
                return
        if target.closed or self._queue_full(target, data[1]):
            return
        if target.wants_instance_header:
            target.sink.send(self._stamped(msg or Message(data)), fds)
        else:
            target.sink.send(data, fds)

    def send_error_to(self, target: Peer, reply_serial: int, name: str, text: str) -> None:
        self._send_error(target, target.unique_name, reply_serial, name, text)

    def _send_error(self, target: Peer, destination, reply_serial: int, name: str, text: str) -> None:
        data = build_message(ERROR, self.next_serial(), flags=NO_REPLY_EXPECTED, error_name=name,
                             reply_serial=reply_serial, destination=destination, sender=DRIVER_NAME,
                             signature="s", body=(text,))
        self.send_bus_message(target, data)

    def emit_signal(self, member: str, signature: str, body, destination: Peer = None,
                    interface: str = DRIVER_INTERFACE, path: str = DRIVER_PATH) -> None:
        if destination is None and not self.monitors \
                and not self.matches.may_match(member, interface, path, self.driver_peer):
            return  # a broadcast with no rule to receive it (NameOwnerChanged of every connect)
        data = build_message(SIGNAL, self.next_serial(), flags=NO_REPLY_EXPECTED, path=path, interface=interface, member=member,
                             destination=destination.unique_name if destination else None,
                             sender=DRIVER_NAME, signature=signature, body=body)
        if destination is not None:
            # not to eavesdroppers: dbus-daemon shows them none of its own
            # unicast messages (bus/connection.c: bus_transaction_send_from_driver)
            self.send_bus_message(destination, data)
        else:
            self.broadcast(self.driver_peer, Message(data))

    def emit_name_owner_changed(self, name: str, old: str, new: str) -> None:
        self.emit_signal("NameOwnerChanged", "sss", (name, old, new))

    def announce(self, change) -> None:
        """Signals for one ownership change, in dbus-daemon's order."""
        old, new = change.old_owner, change.new_owner
        if old is not None:
            self.emit_signal("NameLost", "s", (change.name,), destination=old)
        self.emit_name_owner_changed(change.name, old.unique_name if old else "",
                                     new.unique_name if new else "")
        if new is not None:
            self.emit_signal("NameAcquired", "s", (change.name,), destination=new)
            if self.settings.activation is not None:  # deliver what waited for it to start
                self.settings.activation.name_owned(change.name, new)


__all__ = ["Bus", "BusSettings", "DBusError", "DRIVER_NAME", "UNCONTAINED_FIELDS"]
