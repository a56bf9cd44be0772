"""Containers1: container instances, their lifetime and limits
(docs/containers.md).  The driver methods are in driver_methods.py, the
access rules (the bus's mediator for contained peers) in access.py.
Sockets are made by the io layer through `sockets` (an object with
default_directory/create/adopt/check_notification_fd/start/stop/watch), so this module stays
free of I/O."""

import logging
import secrets

from ..core import errors
from ..core.errors import DBusError
from ..wire.marshal import Variant
from ..wire.names import is_valid_bus_name

log = logging.getLogger("sandbus.containers")

DRIVER_NAME = "org.freedesktop.DBus"
IFACE_CONTAINERS = "org.freedesktop.DBus.Containers1"
CREDENTIALS_KEY = "org.freedesktop.DBus.Containers1.Instance"

# name -> D-Bus type; validated before anything is created
SUPPORTED_ARGUMENTS = {
    "Allow": "a(usos)",
    "Socket": "h",
    "ReadyNotification": "h",
    "StopOnNotify": "h",
    "StopOnDisconnect": "b",
    "MaxConnections": "u",
    "VirtualMachineId": "s",
    "HideMachineId": "b",
    "Learn": "b",
    "LogDenials": "b",
    "ScopedNames": "as",
    "Parent": "o",
}
# At most this many ScopedNames per instance: each is looked up on every
# message the instance sends to a well-known name.
MAX_SCOPED_NAMES = 16

# Learned rules of removed learn-mode instances, kept for GetLearnedRules.
LEARNED_ARCHIVE_SIZE = 32

class ContainerManager:
    """Containers1 on one bus: add it with ``ContainerManager(bus)`` and
    put ``manager.access`` among the bus's mediators (daemon.py)."""

    def __init__(self, bus, sockets=None):
        from .access import AccessControl
        from .driver_methods import methods

        self.bus = bus
        self.instances = {}  # path -> ContainerInstance
        self._next_number = 1
        self.sockets = sockets  # from the io layer
        self.socket_directory = None  # None: sockets.default_directory(bus type)
        self._hidden_machine_ids = {}
        self.learned_archive = {}  # path -> (creator uid, allow rules, observations) of removed instances
        self.access = AccessControl(self)
        bus.driver.add_methods(methods(self), IFACE_CONTAINERS, self.properties)

    # -- a contained connection comes and goes (through access.AccessControl) ----

    def on_connect(self, peer, instance) -> None:
        instance.authenticating -= 1
        instance.pending.discard(peer.sink)
        peer.container = instance
        peer.instance_field = instance.fields
        peer.extra_credentials = {CREDENTIALS_KEY: Variant("o", instance.path)}
        peer.machine_id = self._machine_id_for(instance)
        instance.connections.add(peer)

    def on_disconnect(self, peer) -> None:
        instance = peer.container
        if instance is not None:
            instance.connections.discard(peer)
            self._maybe_remove(instance)
        for inst in list(self.instances.values()):
            if inst.creator is peer:
                inst.creator = None
                self._scoped_names_gone(inst, peer)
                if inst.stop_on_disconnect:
                    self._stop_listening(inst)

    def _scoped_names_gone(self, inst, creator) -> None:
        """The creator owned inst's scoped names for its connections: they
        see those names lose their owner (a NameOwnerChanged to each of them
        alone, as nobody else saw the names owned)."""
        for name in sorted(inst.scoped):
            for p in list(inst.connections):
                if p.unique_name is not None:
                    self.bus.emit_signal("NameOwnerChanged", "sss", (name, creator.unique_name, ""),
                                         destination=p)

    def _machine_id_for(self, inst):
        if inst.virtual_machine_id is not None:
            return inst.virtual_machine_id
        if inst.hide_machine_id:
            # A stable, meaningless id per instance: nothing that identifies the host.
            return self._hidden_machine_ids.setdefault(inst.path, secrets.token_hex(16))
        return None

    def properties(self) -> dict:
        return {
            "SupportedArguments": Variant("as", list(SUPPORTED_ARGUMENTS)),
            "SupportedAccessFlags": Variant("a{su}", dict(self.access.FLAG_NAMES)),
        }

    # -- lifetime --------------------------------------------------------------

    def _stop_listening(self, inst) -> None:
        if inst.listening:
            inst.listening = False
            for cancel in inst.watches:
                cancel()
            inst.watches = []
            if inst.listener is not None and self.sockets is not None:
                self.sockets.stop(inst.listener)
            inst.listener = None
        self._maybe_remove(inst)

    def _maybe_remove(self, inst) -> None:
        if inst.removed or inst.alive:
            return
        inst.removed = True
        self.instances.pop(inst.path, None)
        if inst.parent is not None:
            inst.parent.children.discard(inst)
        for child in list(inst.children):
            self.stop(child, f"its parent instance {inst.path} stopped")
        self._hidden_machine_ids.pop(inst.path, None)
        self.access.on_instance_removed(inst)
        if inst.learner is not None:
            self.learned_archive[inst.path] = (inst.creator_uid, inst.allow, inst.learner.observations())
            while len(self.learned_archive) > LEARNED_ARCHIVE_SIZE:
                del self.learned_archive[next(iter(self.learned_archive))]
        if inst.announced:
            self.bus.emit_signal("InstanceRemoved", "o", (inst.path,), interface=IFACE_CONTAINERS)

    def stop(self, inst, why: str) -> None:
        """StopInstance: disconnect its connections, stop listening."""
        for p in list(inst.connections):
            self.bus.kick(p, f"container instance {inst.path} stopped ({why})")
        # Accepted but not through SASL yet: closed too, or one could finish
        # afterwards and get a unique name in the stopped instance.
        inst.close_pending(f"container instance {inst.path} stopped ({why})")
        self._stop_listening(inst)

    def listener_failed(self, inst) -> None:
        self._stop_listening(inst)

    def socket_directory_for(self, bus_type: str) -> str:
        return self.socket_directory or self.sockets.default_directory(bus_type)

    def lookup(self, path: str):
        inst = self.instances.get(path)
        if inst is None:
            raise DBusError(errors.NOT_CONTAINER, f"There is no container with path '{path}'")
        return inst

    def require_creator(self, peer, inst, what: str) -> None:
        if peer.creds.uid != inst.creator_uid:
            raise DBusError(errors.ACCESS_DENIED,
                            f"{what}: only the user who created {inst.path} (uid {inst.creator_uid}) may do that")

    def instance_info(self, inst) -> tuple:
        return (inst.creator_creds, inst.type, inst.name, inst.metadata)

    def shutdown(self) -> None:
        for inst in list(self.instances.values()):
            if inst.listener is not None and self.sockets is not None:
                self.sockets.stop(inst.listener)
                inst.listener = None


def _parse_named_arguments(named: dict, msg) -> dict:
    parsed = {}
    for key, value in named.items():
        expected = SUPPORTED_ARGUMENTS.get(key)
        if expected is None:
            raise DBusError(errors.INVALID_ARGS, f"Named argument {key} is not understood")
        if value.signature != expected:
            raise DBusError(errors.INVALID_ARGS,
                            f"Named argument {key} must have type {expected}, not {value.signature}")
        v = value.value
        if expected == "h":
            if v >= len(msg.fds):
                raise DBusError(errors.INVALID_ARGS, f"Named argument {key} refers to a file descriptor "
                                "that was not passed with the message")
            v = msg.fds[v]
        parsed[key] = v
    scoped = parsed.get("ScopedNames")
    if scoped is not None:
        if len(scoped) > MAX_SCOPED_NAMES:
            raise DBusError(errors.INVALID_ARGS, f"ScopedNames: at most {MAX_SCOPED_NAMES} names")
        for n in scoped:
            if not is_valid_bus_name(n) or n.startswith(":") or n == DRIVER_NAME:
                raise DBusError(errors.INVALID_ARGS, f"ScopedNames: {n!r} is not a well-known bus name "
                                "(nor may it be the bus's own)")
    mid = parsed.get("VirtualMachineId")
    if mid is not None and (len(mid) != 32 or any(c not in "0123456789abcdef" for c in mid)):
        raise DBusError(errors.INVALID_ARGS, "VirtualMachineId must be 32 lower-case hex digits")
    return parsed
