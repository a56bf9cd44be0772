"""The XML policy (config.policy) as one of the bus's mediators
(core/mediation.py).

Each connection gets its compiled view once, at connect time; a view that
allows everything (the stock session.conf) is dropped so the hot path pays
nothing for it."""

import logging

from ..config.policy import Creds, MessageFacts
from .mediation import Mediator, access_denied

log = logging.getLogger("sandbus.policy")

DRIVER_NAME = "org.freedesktop.DBus"


def _all_names(bus, peer) -> tuple:
    """Unique name, owned names and names it is queued for (send_destination
    matches any of them, as in dbus-daemon)."""
    if peer is None:
        return ()
    if peer is bus.driver_peer:  # a message to the bus, seen by an eavesdropper
        return (DRIVER_NAME,)
    return (peer.unique_name, *bus.registry.names_of(peer))


class PolicyEnforcer(Mediator):
    # dbus-daemon's policy decides unrequested replies (send_requested_reply)
    grants_unrequested_replies = True

    def __init__(self, policy, bus):
        self.policy = policy
        self.bus = bus
        self._logged = set()

    def connected(self, peer, listener) -> None:
        creds = peer.creds
        view = self.policy.for_connection(Creds(uid=creds.uid if creds.uid is not None else -1,
                                                gids=tuple(creds.gids or ())))
        peer.policy = view
        peer.send_policy = None if view.sends_unrestricted else view
        peer.receive_policy = None if view.receives_unrestricted else view

    def restricts(self, peer) -> bool:
        return peer.send_policy is not None or peer.receive_policy is not None

    # -- the three questions (core/mediation.py) --------------------------------

    def unicast(self, sender, target, msg, requested: bool):
        activating = target is None
        if target is self.bus.driver_peer:
            target = None  # the driver has no receive policy
        if requested and sender.send_policy is None and (target is None or target.receive_policy is None):
            return None
        denial = self.denial(self.bus, sender, target, msg, requested)
        if denial is None:
            return None
        # Every refused message is answered, whatever its type and flags, as
        # dbus-daemon does (bus/dispatch.c sends the error it set for any
        # message), and monitors see that error too (dbus's /monitor/forbidden).
        return access_denied(denial, always=True)

    def receive(self, sender, receiver, msg, target=None) -> bool:
        if target is None:
            if receiver.receive_policy is None and sender.send_policy is None:
                return True
            return self.denial(self.bus, sender, receiver, msg) is None
        # An eavesdropper: as dbus-daemon's bus_context_check_security_policy
        # with proposed != addressed recipient, the sender's send rules are
        # asked about the eavesdropper and the eavesdropper's own receive
        # rules decide, with requested_reply false (not the addressed
        # recipient's rules: a restricted eavesdropper on an unrestricted
        # peer's traffic is still restricted).
        if receiver.receive_policy is None and sender.send_policy is None:
            return True
        return self.denial(self.bus, sender, receiver, msg, False, eavesdropping=True) is None

    def from_bus(self, target, msg):
        """The driver's own messages meet the receiver's receive rules too
        (dbus's /monitor/forbidden-reply: a policy that denies receiving
        NameAcquired); a reply from the bus is always a requested one."""
        if target.receive_policy is None:
            return None
        denial = self.denial(self.bus, self.bus.driver_peer, target, msg, msg.type in (2, 3))
        return access_denied(denial) if denial is not None else None

    def allows_connect(self, uid: int, gids: tuple) -> bool:
        return self.policy.allows_connect(Creds(uid=uid, gids=gids))

    def _facts(self, bus, sender, target, msg, requested: bool, eavesdropping: bool = False) -> MessageFacts:
        return MessageFacts(
            msg_type=msg.type, interface=msg.interface, member=msg.member,
            error_name=msg.error_name, path=msg.path,
            sender_names=_all_names(bus, sender) if sender is not bus.driver_peer else (DRIVER_NAME,),
            destination_names=_all_names(bus, target) if target is not None else (
                (msg.destination,) if msg.destination else ()),
            destination=msg.destination, requested_reply=requested,
            eavesdropping=eavesdropping, n_fds=len(msg.fds),
        )

    def denial(self, bus, sender, target, msg, requested: bool = False, eavesdropping: bool = False):
        """None if sender may send msg to target (None = the driver or a
        broadcast with no particular recipient), else the AccessDenied text."""
        facts = None
        sp = getattr(sender, "send_policy", None)
        if sp is not None:
            facts = self._facts(bus, sender, target, msg, requested, eavesdropping)
            decision = sp.check_send(facts)
            if not decision.allowed:
                return self._describe(sender, target, msg, decision, "send")
        rp = target.receive_policy if target is not None else None
        if rp is not None:
            facts = facts or self._facts(bus, sender, target, msg, requested, eavesdropping)
            decision = rp.check_eavesdrop(facts) if eavesdropping else rp.check_receive(facts)
            if not decision.allowed:
                return self._describe(sender, target, msg, decision, "receive")
        return None

    def _describe(self, sender, target, msg, decision, direction: str) -> str:
        dest = target.unique_name if target is not None else (msg.destination or "(broadcast)")
        text = (f"Rejected {direction}: {msg.interface or '(no interface)'}.{msg.member or msg.error_name or ''} "
                f"from {getattr(sender, 'unique_name', '?')} to {dest} "
                f"(requested_reply={1 if msg.type in (2, 3) else 0}) by the rule "
                f"{decision.rule or 'default deny (no rule matched)'}")
        key = (direction, decision.rule, msg.interface, msg.member)
        if key not in self._logged:
            self._logged.add(key)
            log.warning("%s", text)
        return text
