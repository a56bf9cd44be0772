"""Containers1: container instances on the bus driver, their lifetime and
limits, and the hooks the bus core calls when either end of a message is
contained.  Sockets are made by the io layer through `sockets` (an object
with create/adopt/start/stop/watch), so this module stays free of I/O."""

import logging
import os
import secrets

from ..core import errors
from ..core.driver import IFACE_CONTAINERS, Reply, credentials_dict, method
from ..core.errors import DBusError
from ..wire.marshal import Variant, marshal
from ..wire.message import FIELD_CONTAINER_INSTANCE, FIELD_SENDER, string_field
from ..wire.names import is_valid_interface
from .instance import ContainerInstance
from .learn import Learner, flatpak_args, learned_rules

log = logging.getLogger("sandbus.containers")

DRIVER_NAME = "org.freedesktop.DBus"
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
}

# Learned rules of removed learn-mode instances, kept for GetLearnedRules.
LEARNED_ARCHIVE_SIZE = 32

# Driver methods a contained connection may never call.
PRIVILEGED_METHODS = {
    (IFACE_CONTAINERS, "AddServer"), (IFACE_CONTAINERS, "StopListening"),
    (IFACE_CONTAINERS, "StopInstance"), (IFACE_CONTAINERS, "GrantAccess"),
    (IFACE_CONTAINERS, "RevokeAccess"), (IFACE_CONTAINERS, "ListInstances"),
    (IFACE_CONTAINERS, "GetLearnedRules"),
    ("org.freedesktop.DBus.Monitoring", "BecomeMonitor"),
    ("org.freedesktop.DBus", "UpdateActivationEnvironment"),
    ("org.freedesktop.DBus", "ReloadConfig"),
    ("org.freedesktop.DBus.Debug.Stats", "GetStats"),
    ("org.freedesktop.DBus.Debug.Stats", "GetConnectionStats"),
    ("org.freedesktop.DBus.Debug.Stats", "GetAllMatchRules"),
}


def default_socket_directory(bus_type: str) -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and bus_type != "system":
        return os.path.join(runtime, "dbus-1", "containers")
    return "/run/dbus/containers"


class ContainerManager:
    def __init__(self, bus):
        self.bus = bus
        self.instances = {}  # path -> ContainerInstance
        self._next_number = 1
        self.sockets = None  # set by the io layer
        self.socket_directory = None  # None: default_socket_directory()
        self._uncontained_fields = {e: string_field(FIELD_CONTAINER_INSTANCE, "/", e, "o") for e in "lB"}
        self._driver_sender = {e: string_field(FIELD_SENDER, DRIVER_NAME, e) for e in "lB"}
        self._hidden_machine_ids = {}
        self.learned_archive = {}  # path -> (creator uid, allow rules, observations) of removed instances
        from . import access  # noqa: F401  (registers GrantAccess/RevokeAccess)
        self.access = access.AccessControl(self)

    # -- hooks from the bus core ------------------------------------------------

    def on_connect(self, peer, instance) -> None:
        instance.authenticating -= 1
        peer.container = instance
        instance.connections.add(peer)

    def on_disconnect(self, peer) -> None:
        instance = peer.container
        if instance is not None:
            instance.connections.discard(peer)
            self._maybe_remove(instance)
        self.access.on_disconnect(peer)
        for inst in list(self.instances.values()):
            if inst.creator is peer:
                inst.creator = None
                if inst.stop_on_disconnect:
                    self._stop_listening(inst)

    def instance_field(self, sender, endian: str) -> bytes:
        instance = getattr(sender, "container", None)
        if instance is None:
            return self._uncontained_fields[endian]
        return instance.fields[endian]

    def stamp_bus_message(self, msg) -> bytes:
        """A driver message for a peer that asked for CONTAINER_INSTANCE."""
        return msg.forwarded(self._driver_sender[msg.endian], self._uncontained_fields[msg.endian])

    def check_driver_call(self, peer, iface, member, args) -> None:
        if (iface, member) in PRIVILEGED_METHODS:
            inst = peer.container
            log.warning("denied %s.%s to %s in container %s (type %s, name %r)",
                        iface, member, peer.unique_name, inst.path, inst.type, inst.name)
            raise DBusError(errors.ACCESS_DENIED,
                            f"{iface}.{member} may not be called from inside a container "
                            f"({inst.path}, {inst.type} {inst.name!r})")
        self.access.check_driver_call(peer, iface, member, args)

    def check_add_match(self, peer, rule) -> None:
        inst = peer.container
        if inst is not None and rule.eavesdrop:
            log.warning("denied eavesdropping match rule to %s in container %s (type %s, name %r)",
                        peer.unique_name, inst.path, inst.type, inst.name)
            raise DBusError(errors.ACCESS_DENIED, "Connections inside a container may not eavesdrop")

    def machine_id_for(self, peer):
        inst = peer.container
        if inst is None:
            return None
        if inst.virtual_machine_id is not None:
            return inst.virtual_machine_id
        if inst.hide_machine_id:
            # A stable, meaningless id per instance: nothing that identifies the host.
            return self._hidden_machine_ids.setdefault(inst.path, secrets.token_hex(16))
        return None

    def add_credentials(self, target, result: dict) -> None:
        if target.container is not None:
            result[CREDENTIALS_KEY] = Variant("o", target.container.path)

    # mediation: delegated to the access-control layer
    def check_unicast(self, sender, target, msg):
        return self.access.check_unicast(sender, target, msg)

    def unrequested_reply(self, sender, target, msg):
        return self.access.unrequested_reply(sender, target, msg)

    def allow_broadcast(self, sender, target, msg) -> bool:
        return self.access.allow_broadcast(sender, target, msg)

    def can_see(self, peer, name) -> bool:
        return peer.container is None or self.access.can_see(peer, name)

    def filter_names(self, peer, names):
        if peer.container is None:
            return names
        return self.access.filter_names(peer, names)

    def check_own(self, peer, name) -> None:
        if peer.container is not None:
            self.access.check_own(peer, name)

    def check_start_service(self, peer, name) -> None:
        if peer.container is not None:
            self.access.check_start_service(peer, name)

    def check_list_queued(self, peer, name) -> None:
        if peer.container is not None:
            self.access.check_list_queued(peer, name)

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
        self._hidden_machine_ids.pop(inst.path, None)
        self.access.on_instance_removed(inst)
        if inst.learner is not None:
            self.learned_archive[inst.path] = (inst.creator_uid, inst.allow, inst.learner.observations())
            while len(self.learned_archive) > LEARNED_ARCHIVE_SIZE:
                del self.learned_archive[next(iter(self.learned_archive))]
        if inst.announced:
            self.bus.emit_signal("InstanceRemoved", "o", (inst.path,), interface=IFACE_CONTAINERS)

    def listener_failed(self, inst) -> None:
        self._stop_listening(inst)

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
    mid = parsed.get("VirtualMachineId")
    if mid is not None and (len(mid) != 32 or any(c not in "0123456789abcdef" for c in mid)):
        raise DBusError(errors.INVALID_ARGS, "VirtualMachineId must be 32 lower-case hex digits")
    return parsed


# -- driver methods -----------------------------------------------------------

@method(IFACE_CONTAINERS, "AddServer", "ssa{sv}a{sv}", "oays")
def _add_server(driver, peer, msg, ctype, name, metadata, named):
    bus = driver.bus
    mgr = bus.containers
    limits = bus.limits
    if not is_valid_interface(ctype):
        raise DBusError(errors.INVALID_ARGS,
                        f"The container type identifier must have the syntax of an interface name, not {ctype!r}")
    args = _parse_named_arguments(named, msg)
    rules = None
    learn = args.get("Learn", False)
    if "Allow" in args or learn:
        rules = mgr.access.compile_rules(args.get("Allow", []))
    size = len(marshal("a{sv}", (metadata,))) + len(ctype.encode()) + len(name.encode())
    if size > limits.max_container_metadata_bytes:
        raise DBusError(errors.LIMITS_EXCEEDED, f"Connection \"{peer.unique_name}\" is not allowed to set "
                        f"{size} bytes of container metadata (max_container_metadata_bytes="
                        f"{limits.max_container_metadata_bytes})")
    if len(mgr.instances) >= limits.max_containers:
        raise DBusError(errors.LIMITS_EXCEEDED, f"Too many containers on this bus (max_containers="
                        f"{limits.max_containers})")
    uid = peer.creds.uid
    if sum(1 for i in mgr.instances.values() if i.creator_uid == uid) >= limits.max_containers_per_user:
        raise DBusError(errors.LIMITS_EXCEEDED, f"Too many containers for uid {uid} "
                        f"(max_containers_per_user={limits.max_containers_per_user})")
    if mgr.sockets is None:
        raise DBusError(errors.NOT_SUPPORTED, "This bus cannot create container sockets")
    max_conn = limits.max_connections_per_container
    if "MaxConnections" in args:
        max_conn = min(max_conn, args["MaxConnections"])
    inst = ContainerInstance(mgr._next_number, ctype, name, metadata, peer,
                             credentials_dict(peer.creds), max_conn)
    inst.stop_on_disconnect = args.get("StopOnDisconnect", True)
    inst.virtual_machine_id = args.get("VirtualMachineId")
    inst.hide_machine_id = args.get("HideMachineId", False)
    inst.access = rules
    if rules is not None:
        inst.allow = tuple(tuple(r) for r in args.get("Allow", ()))
    if learn:
        inst.learner = Learner()
    inst.on_change = lambda: mgr._maybe_remove(inst)
    try:
        if "Socket" in args:
            listener = mgr.sockets.adopt(args["Socket"])
            socket_path = b""
        else:
            directory = mgr.socket_directory or default_socket_directory(bus.settings.bus_type)
            listener = mgr.sockets.create(directory)
            socket_path = listener.path.encode() + b"\0"
    except ValueError as e:
        raise DBusError(errors.INVALID_ARGS, str(e))
    except OSError as e:
        raise DBusError(errors.FAILED, f"Could not create the container socket: {e}")
    mgr._next_number += 1
    listener.container = inst
    listener.allowed_uid = uid
    inst.listener = listener
    inst.listening = True
    mgr.instances[inst.path] = inst
    address = listener.address(bus.settings.guid)

    def start():
        inst.announced = True
        if not inst.listening:
            return
        if "StopOnNotify" in args:
            inst.watches.append(mgr.sockets.watch(args["StopOnNotify"], lambda: mgr._stop_listening(inst)))
        if "ReadyNotification" in args:
            def ready():
                if inst.listening:
                    mgr.sockets.start(inst.listener)
            inst.watches.append(mgr.sockets.watch(args["ReadyNotification"], ready, once=True))
        else:
            mgr.sockets.start(listener)

    log.info("container %s created by %s: type %s, name %r%s", inst.path, peer.unique_name, ctype, name,
             " (learning)" if learn else " (mediated)" if rules is not None else "")
    return Reply((inst.path, socket_path, address), after=start)


@method(IFACE_CONTAINERS, "StopListening", "o", "")
def _stop_listening(driver, peer, msg, path):
    mgr = driver.bus.containers
    inst = mgr.lookup(path)
    mgr.require_creator(peer, inst, "StopListening")
    mgr._stop_listening(inst)
    return ()


@method(IFACE_CONTAINERS, "StopInstance", "o", "")
def _stop_instance(driver, peer, msg, path):
    mgr = driver.bus.containers
    inst = mgr.lookup(path)
    mgr.require_creator(peer, inst, "StopInstance")

    def stop():
        for p in list(inst.connections):
            driver.bus.kick(p, f"container instance {inst.path} stopped")
        mgr._stop_listening(inst)

    return Reply((), after=stop)


@method(IFACE_CONTAINERS, "GetConnectionInstance", "s", "oa{sv}ssa{sv}")
def _get_connection_instance(driver, peer, msg, name):
    bus = driver.bus
    if name == DRIVER_NAME:
        raise DBusError(errors.NOT_CONTAINER, f"Connection '{name}' is not in a container")
    target = driver.lookup(name)
    if target is None or not bus.containers.can_see(peer, name):
        raise DBusError(errors.NAME_HAS_NO_OWNER, f"Could not get container of name '{name}': no such name")
    if target.container is None:
        raise DBusError(errors.NOT_CONTAINER, f"Connection '{name}' is not in a container")
    return (target.container.path,) + bus.containers.instance_info(target.container)


@method(IFACE_CONTAINERS, "GetInstanceInfo", "o", "a{sv}ssa{sv}")
def _get_instance_info(driver, peer, msg, path):
    mgr = driver.bus.containers
    inst = mgr.lookup(path)
    if peer.container is not None and peer.container.access is not None and inst is not peer.container:
        # a mediated app learns about its own instance only, and other
        # instances look like no instance at all
        raise DBusError(errors.NOT_CONTAINER, f"There is no container with path '{path}'")
    return mgr.instance_info(inst)


@method(IFACE_CONTAINERS, "RequestHeader", "", "")
def _request_header(driver, peer, msg):
    peer.wants_instance_header = True
    return ()


@method(IFACE_CONTAINERS, "ListInstances", "", "a(osssub)")
def _list_instances(driver, peer, msg):
    """(path, type, name, creator unique name, connections, listening) for
    every instance; uncontained callers only (see PRIVILEGED_METHODS)."""
    mgr = driver.bus.containers
    return ([(i.path, i.type, i.name, i.creator_name, len(i.connections), i.listening)
             for i in sorted(mgr.instances.values(), key=lambda i: i.number)],)


@method(IFACE_CONTAINERS, "GetLearnedRules", "o", "a(usos)as")
def _get_learned_rules(driver, peer, msg, path):
    """The minimal Allow rules (the instance's own first) that would have
    allowed what a learn-mode instance did, and the same as xdg-dbus-proxy
    arguments.  Creator's uid only; uncontained callers only.  Answers for
    an instance removed recently too (the app has exited by then)."""
    mgr = driver.bus.containers
    inst = mgr.instances.get(path)
    if inst is not None:
        mgr.require_creator(peer, inst, "GetLearnedRules")
        if inst.learner is None:
            raise DBusError(errors.INVALID_ARGS, f"Container {path} was not created with Learn=true")
        uid, allow, observations = inst.creator_uid, inst.allow, inst.learner.observations()
    else:
        archived = mgr.learned_archive.get(path)
        if archived is None:
            mgr.lookup(path)  # NotContainer
        uid, allow, observations = archived
        if peer.creds.uid != uid:
            raise DBusError(errors.ACCESS_DENIED, f"GetLearnedRules: only the user who created {path} "
                            f"(uid {uid}) may do that")
    rules, unexpressed = learned_rules(observations, allow)
    if unexpressed:
        log.info("container %s: %d learned observations no rule can express (e.g. %s)", path,
                 len(unexpressed), unexpressed[0])
    return ([tuple(r) for r in rules], flatpak_args(observations, allow))
