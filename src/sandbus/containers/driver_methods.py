"""The driver methods of org.freedesktop.DBus.Containers1, one table row
each (core/driver.py DriverMethod); docs/containers.md describes them."""

import logging
from functools import partial

from ..core import errors
from ..core.driver import DRIVER_NAME, DriverMethod, Reply, credentials_dict
from ..core.errors import DBusError
from ..wire.marshal import Variant, marshal
from ..wire.names import is_valid_interface
from .instance import ContainerInstance
from .learn import Learner, flatpak_args, learned_rules
from .nesting import first_uncovered
from .manager import CREDENTIALS_KEY, IFACE_CONTAINERS, _parse_named_arguments
from .rules import BUS_NAME_IS_SUBTREE, OWN_BUS_NAME, Rule, RuleSet, validate_rule
from .access import ALL_INSTANCES

log = logging.getLogger("sandbus.containers")


def _add_server(mgr, driver, call, ctype, name, metadata, named):
    bus = driver.bus
    peer, msg = call.peer, call.msg
    limits = bus.limits
    if not is_valid_interface(ctype):
        raise DBusError(errors.INVALID_ARGS,
                        f"The container type identifier must have the syntax of an interface name, not {ctype!r}")
    args = _parse_named_arguments(named, msg)
    parent = _parent_of(mgr, peer, args)  # set: a nested instance, which may only narrow
    if parent is not None:
        _check_nested(mgr, parent, args)
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
    # Every fd argument is checked before anything is created or answered.
    for key in ("ReadyNotification", "StopOnNotify"):
        if key in args:
            try:
                mgr.sockets.check_notification_fd(args[key], key)
            except ValueError as e:
                raise DBusError(errors.INVALID_ARGS, str(e))
    max_conn = limits.max_connections_per_container
    if "MaxConnections" in args:
        max_conn = min(max_conn, args["MaxConnections"])
    creds = credentials_dict(peer.creds)
    if parent is not None:
        max_conn = min(max_conn, parent.max_connections)
        creds[CREDENTIALS_KEY] = Variant("o", parent.path)
    inst = ContainerInstance(mgr._next_number, ctype, name, metadata, peer, creds, max_conn)
    inst.scoped = frozenset(args.get("ScopedNames", ()))
    inst.stop_on_disconnect = args.get("StopOnDisconnect", True)
    inst.virtual_machine_id = args.get("VirtualMachineId")
    inst.hide_machine_id = args.get("HideMachineId", False)
    inst.log_denials = args.get("LogDenials", True)
    if parent is not None:
        # what the parent's apps are told about the machine holds inside too
        if inst.virtual_machine_id is None:
            inst.virtual_machine_id = mgr._machine_id_for(parent)
        inst.hide_machine_id = inst.hide_machine_id or parent.hide_machine_id
        inst.parent = parent
    inst.access = rules
    if rules is not None:
        inst.allow = tuple(tuple(r) for r in args.get("Allow", ()))
    if learn:
        inst.learner = Learner()
    inst.on_change = lambda: mgr._maybe_remove(inst)
    inst.on_listener_failed = lambda: mgr.listener_failed(inst)
    try:
        if "Socket" in args:
            listener = mgr.sockets.adopt(args["Socket"])
            socket_path = b""
        else:
            directory = mgr.socket_directory_for(bus.settings.bus_type)
            listener = mgr.sockets.create(directory)
            socket_path = listener.path.encode() + b"\0"
    except ValueError as e:
        raise DBusError(errors.INVALID_ARGS, str(e))
    except OSError as e:
        raise DBusError(errors.FAILED, f"Could not create the container socket: {e}")
    mgr._next_number += 1
    if parent is not None:
        parent.children.add(inst)
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
        try:
            if "StopOnNotify" in args:
                inst.watches.append(mgr.sockets.watch(args["StopOnNotify"], lambda: mgr._stop_listening(inst)))
            if "ReadyNotification" in args:
                def ready():
                    if inst.listening:
                        mgr.sockets.start(inst.listener)
                inst.watches.append(mgr.sockets.watch(args["ReadyNotification"], ready, once=True))
            else:
                mgr.sockets.start(listener)
        except (OSError, ValueError) as e:
            # checked before the reply, so only a race (the fd changed) gets
            # here: the instance stops rather than listening without accepting
            log.warning("container %s: cannot watch its notification fds (%s); stopping it", inst.path, e)
            mgr._stop_listening(inst)

    log.info("container %s created by %s: type %s, name %r%s", inst.path, peer.unique_name, ctype, name,
             " (learning)" if learn else " (mediated)" if rules is not None else "")
    return Reply((inst.path, socket_path, address), after=start)


def _parent_of(mgr, peer, args):
    """The instance a new one nests in: the caller's own, or the Parent
    named argument, which only the connection that created that instance
    may give (a launcher nesting a sandbox beside its app: sandbus run's
    Spawn portal)."""
    own = peer.container
    path = args.get("Parent")
    if path is None:
        return own
    if own is not None:
        if path != own.path:
            raise DBusError(errors.ACCESS_DENIED, f"AddServer: from inside {own.path}, Parent can only be "
                            "that instance")
        return own
    parent = mgr.lookup(path)
    if parent.creator is not peer:
        raise DBusError(errors.ACCESS_DENIED, f"AddServer: Parent {path} was not created by this connection")
    return parent


def _check_nested(mgr, parent, args) -> None:
    """AddServer from inside parent: only a mediated instance whose every
    rule parent's rules cover (containers/nesting.py)."""
    if parent.learner is not None:
        raise DBusError(errors.ACCESS_DENIED, f"AddServer: {parent.path} is learning its rules, so it "
                        "has none a nested instance could be narrowed to")
    if args.get("Learn", False):
        raise DBusError(errors.ACCESS_DENIED, f"AddServer: a nested instance may not learn: it would "
                        f"allow what {parent.path} may not do")
    if "Allow" not in args:
        raise DBusError(errors.ACCESS_DENIED, f"AddServer from inside a container ({parent.path}) makes only "
                        "nested instances, which need Allow rules: without them one would be wider than "
                        "its parent")
    # an unmediated parent may do anything on the bus, so any rules narrow it
    wider = first_uncovered(args["Allow"], mgr.access.effective_rules(parent)) \
        if parent.access is not None else None
    if wider is not None:
        i, (flags, name, path, interface) = wider
        raise DBusError(errors.ACCESS_DENIED, f"AddServer: Allow rule {i} ({flags}, {name!r}, {path!r}, "
                        f"{interface!r}) is wider than what {parent.path} may do")


def _require_nested_creator(peer, inst, what: str) -> None:
    """From inside an instance, only the instances nested in it."""
    if peer.container is not None and inst.parent is not peer.container:
        raise DBusError(errors.ACCESS_DENIED, f"{what} from inside a container ({peer.container.path}) "
                        f"is only for the instances nested in it, and {inst.path} is not")


def _stop_listening(mgr, driver, call, path):
    peer = call.peer
    inst = mgr.lookup(path)
    _require_nested_creator(peer, inst, "StopListening")
    mgr.require_creator(peer, inst, "StopListening")
    mgr._stop_listening(inst)
    return ()


def _stop_instance(mgr, driver, call, path):
    peer = call.peer
    inst = mgr.lookup(path)
    _require_nested_creator(peer, inst, "StopInstance")
    mgr.require_creator(peer, inst, "StopInstance")
    return Reply((), after=lambda: mgr.stop(inst, f"StopInstance from {peer.unique_name}"))


def _get_connection_instance(mgr, driver, call, name):
    if name == DRIVER_NAME:
        raise DBusError(errors.NOT_CONTAINER, f"Connection '{name}' is not in a container")
    target = driver.lookup(name, call.view)
    if target is None:
        raise DBusError(errors.NAME_HAS_NO_OWNER, f"Could not get container of name '{name}': no such name")
    own = call.peer.container
    # a mediated caller learns about its own instance (and those nested in
    # it) only: a connection in another one looks like a connection in none
    # (as in _get_instance_info)
    if target.container is None or (own is not None and own.access is not None and target.container is not own
                                     and target.container.parent is not own):
        raise DBusError(errors.NOT_CONTAINER, f"Connection '{name}' is not in a container")
    return (target.container.path,) + mgr.instance_info(target.container)


def _get_instance_info(mgr, driver, call, path):
    peer = call.peer
    inst = mgr.lookup(path)
    if peer.container is not None and peer.container.access is not None and inst is not peer.container \
            and inst.parent is not peer.container:
        # a mediated app learns about its own instance only, and other
        # instances look like no instance at all
        raise DBusError(errors.NOT_CONTAINER, f"There is no container with path '{path}'")
    return mgr.instance_info(inst)


def _request_header(mgr, driver, call):
    call.peer.wants_instance_header = True
    return ()


def _list_instances(mgr, driver, call):
    """(path, type, name, creator unique name, connections, listening) for
    every instance; uncontained callers only (a privileged row)."""
    return ([(i.path, i.type, i.name, i.creator_name, len(i.connections), i.listening)
             for i in sorted(mgr.instances.values(), key=lambda i: i.number)],)


def _get_learned_rules(mgr, driver, call, path):
    """The minimal Allow rules (the instance's own first) that would have
    allowed what a learn-mode instance did, and the same as xdg-dbus-proxy
    arguments.  Creator's uid only; uncontained callers only.  Answers for
    an instance removed recently too (the app has exited by then)."""
    peer = call.peer
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


def _parse_grant_rules(rules, granter):
    parsed = []
    for i, (flags, path, interface) in enumerate(rules):
        if flags & (BUS_NAME_IS_SUBTREE | OWN_BUS_NAME):
            raise DBusError(errors.INVALID_ARGS, f"Access rule {i}: granted rules name the caller itself, "
                            "so BUS_NAME_IS_SUBTREE and OWN_BUS_NAME make no sense")
        validate_rule(i, flags, granter.unique_name, path, interface)
        parsed.append(Rule(flags, granter.unique_name, path, interface, granter=granter))
    return parsed


def _grant_target(mgr, path: str) -> str:
    if path != ALL_INSTANCES:
        mgr.lookup(path)  # NotContainer if unknown
    return path


def _grant_access(mgr, driver, call, path, rules):
    access = mgr.access
    peer = call.peer
    key = _grant_target(mgr, path)
    ruleset = access.grants.setdefault(key, RuleSet())
    for rule in _parse_grant_rules(rules, peer):
        ruleset.add(rule)
    return ()


def _revoke_access(mgr, driver, call, path, rules):
    access = mgr.access
    peer = call.peer
    key = _grant_target(mgr, path)
    ruleset = access.grants.get(key)
    for rule in _parse_grant_rules(rules, peer):
        if ruleset is not None:
            ruleset.remove_one(*rule.as_tuple(), granter=peer)
    return ()


def _rows():
    def row(member, in_sig, out_sig, fn, **kw):
        return (member, in_sig, out_sig, fn, kw)
    return (
        # creating and stopping instances, grants: never from inside one,
        # but for the nested instances of a mediated one (access.NESTABLE)
        row("AddServer", "ssa{sv}a{sv}", "oays", _add_server, privileged=True),
        row("StopListening", "o", "", _stop_listening, privileged=True),
        row("StopInstance", "o", "", _stop_instance, privileged=True),
        row("GetConnectionInstance", "s", "oa{sv}ssa{sv}", _get_connection_instance, filtered=True),
        row("GetInstanceInfo", "o", "a{sv}ssa{sv}", _get_instance_info),
        row("RequestHeader", "", "", _request_header),
        row("ListInstances", "", "a(osssub)", _list_instances, privileged=True),
        row("GetLearnedRules", "o", "a(usos)as", _get_learned_rules, privileged=True),
        row("GrantAccess", "oa(uos)", "", _grant_access, privileged=True),
        row("RevokeAccess", "oa(uos)", "", _revoke_access, privileged=True),
    )


def methods(mgr) -> list:
    """The table rows, their handlers bound to one bus's manager."""
    return [DriverMethod(IFACE_CONTAINERS, member, in_sig, out_sig, partial(fn, mgr), **kw)
            for member, in_sig, out_sig, fn, kw in _rows()]
