"""Per-instance quotas: what all connections of one container instance may
hold on the bus together (docs/containers.md, "Limits").

Per-connection limits alone let an instance multiply them by its
max_connections_per_container; these bound the instance as a whole, in the
spirit of dbus-broker's per-user quotas.  Checked by the containers'
mediator (access.py) at the points core asks it: a driver call, a unicast,
a broadcast receiver.
"""

from ..core import errors
from ..core.errors import DBusError
from ..core.mediation import DROP, Denial
from ..wire.message import METHOD_CALL, NO_REPLY_EXPECTED, SIGNAL


def _exceeded(inst, what: str, limit_name: str, limit: int) -> DBusError:
    return DBusError(errors.LIMITS_EXCEEDED, f"Container instance {inst.path} has reached its quota of {what} "
                     f"({limit_name}={limit})")


def check_driver_call(bus, peer, member: str, args) -> None:
    """AddMatch and RequestName count against the instance's quotas."""
    inst = peer.container
    limits = bus.limits
    if member == "AddMatch":
        held = sum(len(p.rules) for p in inst.connections)
        if held >= limits.max_container_match_rules:
            raise _exceeded(inst, "match rules", "max_container_match_rules", limits.max_container_match_rules)
    elif member == "RequestName":
        if args and args[0] in peer.names:
            return  # asking again for a name it has costs nothing
        held = sum(bus.registry.queued_names_count(p) for p in inst.connections)  # well-known, owned or queued
        if held >= limits.max_container_names:
            raise _exceeded(inst, "bus names", "max_container_names", limits.max_container_names)


def queued_bytes(inst) -> int:
    return sum(p.sink.queued_bytes for p in inst.connections)


def queued_fds(inst) -> int:
    return sum(getattr(p.sink, "queued_fds", 0) for p in inst.connections)


def _over_queue(bus, inst, msg) -> str:
    """Why a message to inst cannot be queued, or ''."""
    limits = bus.limits
    if queued_bytes(inst) > limits.max_container_queued_bytes:
        return "queued bytes"
    if msg.fds and queued_fds(inst) + len(msg.fds) > limits.max_container_unix_fds:
        return "queued unix fds"
    return ""


def unicast(bus, sender, target, msg):
    """None, or the Denial for a message the rules allow but a quota refuses."""
    limits = bus.limits
    mtype = msg.type
    inst = sender.container
    if inst is not None and mtype == METHOD_CALL and not msg.flags & NO_REPLY_EXPECTED:
        if inst.pending_calls >= limits.max_container_pending_replies:
            return Denial(_exceeded(inst, "pending replies", "max_container_pending_replies",
                                    limits.max_container_pending_replies))
    inst = target.container
    if inst is not None and (mtype == METHOD_CALL or mtype == SIGNAL):
        # Replies pass: each is bounded by the caller's pending replies.
        why = _over_queue(bus, inst, msg)
        if why:
            if mtype == SIGNAL:
                return DROP
            name = "max_container_queued_bytes" if why == "queued bytes" else "max_container_unix_fds"
            return Denial(DBusError(errors.LIMITS_EXCEEDED, f"The destination's container instance "
                                    f"{inst.path} has reached its quota of {why} ({name}="
                                    f"{getattr(limits, name)})"))
    return None


def may_receive_broadcast(bus, receiver, msg) -> bool:
    inst = receiver.container
    return inst is None or not _over_queue(bus, inst, msg)
