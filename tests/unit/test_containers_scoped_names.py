"""Instance-scoped names (AddServer's ScopedNames, docs/containers.md) and
nesting beside an app (Parent), through Bus.receive without sockets: for
the instance's connections alone a scoped name resolves to the creator's
connection, in routing and in every driver lookup; everybody else keeps
the global owner."""

import pytest

from containerhelpers import CIFACE, make_container_bus
from corehelpers import ERR, METHOD_RETURN
from sandbus.containers.rules import BUS_NAME_IS_SUBTREE, CALL_METHODS, OBJECT_PATH_IS_SUBTREE, RECEIVE_BROADCASTS
from sandbus.core.mediation import Mediation
from sandbus.wire.marshal import Variant

PORTAL = "org.freedesktop.portal.Flatpak"
PORTAL_PATH = "/org/freedesktop/portal/Flatpak"
CALL_PORTALS = (CALL_METHODS | BUS_NAME_IS_SUBTREE | OBJECT_PATH_IS_SUBTREE, "org.freedesktop.portal", "/", "")
TALK_ANY = (CALL_METHODS | RECEIVE_BROADCASTS | OBJECT_PATH_IS_SUBTREE, "", "/", "")


@pytest.fixture
def cb():
    return make_container_bus()


def scoped(names=(PORTAL,)):
    return {"ScopedNames": Variant("as", list(names))}


@pytest.fixture
def world(cb):
    """A real portal owning the name globally, a launcher whose instance
    scopes it, and an app in that instance."""
    portal = cb.client()
    assert portal.bus_ok("RequestName", "su", (PORTAL, 0)) == [1]
    launcher = cb.client()
    inst = cb.add_server(launcher, [CALL_PORTALS], **scoped())
    app = cb.join(inst)
    return portal, launcher, inst, app


def test_calls_from_the_instance_reach_the_creator_and_the_reply_comes_back(cb, world):
    portal, launcher, inst, app = world
    portal.clear()
    serial = app.call(PORTAL, "Spawn", path=PORTAL_PATH, interface=PORTAL)
    (got,) = launcher.received()
    assert (got.member, got.destination, got.sender) == ("Spawn", PORTAL, app.unique_name)
    assert portal.received() == []
    launcher.reply(got, "u", (42,))
    assert app.reply_to(serial).body() == [42]


def test_outside_callers_and_other_instances_keep_the_global_owner(cb, world):
    portal, launcher, inst, app = world
    outsider = cb.client()
    other = cb.join(cb.add_server(cb.client(), [CALL_PORTALS]))
    for caller in (outsider, other):
        portal.clear()
        launcher.clear()
        caller.call(PORTAL, "Spawn", path=PORTAL_PATH, interface=PORTAL)
        assert [m.member for m in portal.received()] == ["Spawn"]
        assert launcher.received() == []
        assert caller.bus_ok("GetNameOwner", "s", (PORTAL,)) == [portal.unique_name]


def test_driver_lookups_answer_the_creator(cb, world, tmp_path):
    portal, launcher, inst, app = world
    # StartServiceByName wants a .service file before it looks for an owner
    # (as dbus-daemon; tests/integration/test_driver.py), as the portal has
    cb.with_activation(tmp_path, PORTAL)
    assert app.bus_ok("GetNameOwner", "s", (PORTAL,)) == [launcher.unique_name]
    assert app.bus_ok("NameHasOwner", "s", (PORTAL,)) == [True]
    assert app.bus_ok("GetConnectionUnixProcessID", "s", (PORTAL,)) == [launcher.peer.creds.pid]
    creds = app.bus_ok("GetConnectionCredentials", "s", (PORTAL,))[0]
    assert creds["ProcessID"].value == launcher.peer.creds.pid
    assert "org.freedesktop.DBus.Containers1.Instance" not in creds  # the launcher is outside
    # already "running": its creator answers it
    assert app.bus_ok("StartServiceByName", "su", (PORTAL, 0)) == [2]


def test_scoped_names_work_in_an_unmediated_instance_too(cb):
    portal = cb.client()
    portal.bus_ok("RequestName", "su", (PORTAL, 0))
    launcher = cb.client()
    inst = cb.add_server(launcher, **scoped())  # no Allow: unfiltered, still scoped
    app = cb.join(inst)
    assert app.bus_ok("GetNameOwner", "s", (PORTAL,)) == [launcher.unique_name]
    app.call(PORTAL, "Ping", path="/", interface="org.freedesktop.DBus.Peer")
    assert [m.member for m in launcher.received()] == ["Ping"]
    # other names are not affected
    assert app.bus_ok("ListNames")[0].count(PORTAL) == 1


def test_the_rules_still_apply_to_a_scoped_name(cb):
    launcher = cb.client()
    inst = cb.add_server(launcher, [], **scoped())  # mediated, no rule for the name
    app = cb.join(inst)
    assert app.bus_error("GetNameOwner", "s", (PORTAL,))[0] == ERR + "NameHasNoOwner"
    serial = app.call(PORTAL, "Spawn", path=PORTAL_PATH, interface=PORTAL)
    assert app.reply_to(serial).error_name == ERR + "ServiceUnknown"
    assert launcher.received() == []


def test_once_the_creator_is_gone_the_name_has_no_owner_for_the_instance(cb, world):
    portal, launcher, inst, app = world
    watcher = cb.join(inst)
    watcher.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    watcher.clear()
    cb.bus.disconnect(launcher.peer)
    # the instance's connections are told the name lost its owner (theirs)
    changes = [m.body() for m in watcher.signals("NameOwnerChanged") if m.body()[0] == PORTAL]
    assert changes == [[PORTAL, launcher.unique_name, ""]]
    assert app.bus_error("GetNameOwner", "s", (PORTAL,))[0] == ERR + "NameHasNoOwner"
    serial = app.call(PORTAL, "Spawn", path=PORTAL_PATH, interface=PORTAL)
    assert app.reply_to(serial).error_name == ERR + "ServiceUnknown"
    # and the global owner is not reached instead
    assert [m for m in portal.received() if m.member == "Spawn"] == []


def test_a_scoped_name_is_never_activated_for_the_instance(cb, tmp_path):
    spawner = cb.with_activation(tmp_path, PORTAL)
    launcher = cb.client()
    inst = cb.add_server(launcher, [CALL_PORTALS], **scoped())
    app = cb.join(inst)
    cb.bus.disconnect(launcher.peer)
    serial = app.call(PORTAL, "Spawn", path=PORTAL_PATH, interface=PORTAL)
    assert app.reply_to(serial).error_name == ERR + "ServiceUnknown"
    assert spawner.children == []
    # the same call from an instance without the scoped name starts it
    other = cb.join(cb.add_server(cb.client(), [CALL_PORTALS]))
    other.call(PORTAL, "Spawn", path=PORTAL_PATH, interface=PORTAL)
    assert len(spawner.children) == 1


def test_the_global_owner_changing_is_not_announced_to_the_instance(cb, world):
    portal, launcher, inst, app = world
    app.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    outsider = cb.client()
    outsider.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    app.clear()
    outsider.clear()
    cb.bus.disconnect(portal.peer)
    assert [m.body()[0] for m in outsider.signals("NameOwnerChanged")].count(PORTAL) == 1
    assert [m.body()[0] for m in app.signals("NameOwnerChanged")].count(PORTAL) == 0


@pytest.mark.parametrize("names, text", [
    ([":1.7"], "not a well-known bus name"),
    (["org.freedesktop.DBus"], "not a well-known bus name"),
    (["no dots"], "not a well-known bus name"),
    ([f"org.example.N{i}" for i in range(17)], "at most 16"),
])
def test_bad_scoped_names_are_invalid_args(cb, names, text):
    creator = cb.client()
    r = creator.bus_call("AddServer", "ssa{sv}a{sv}", ("com.example.App", "", {}, scoped(names)), interface=CIFACE)
    assert r.error_name == ERR + "InvalidArgs" and text in r.body()[0]
    assert cb.manager.instances == {}


def test_supported_arguments_list_scoped_names_and_parent(cb):
    c = cb.client()
    args = c.bus_ok("Get", "ss", (CIFACE, "SupportedArguments"), interface="org.freedesktop.DBus.Properties")[0]
    assert {"ScopedNames", "Parent"} <= set(args.value)


def test_mediation_chain_passes_the_owner_through_every_restricting_mediator(cb):
    class Renamer:
        """A second mediator that maps one name (to check the chaining)."""
        def __init__(self, target):
            self.target = target

        def owner(self, peer, name, owner):
            return self.target.peer if name == "org.example.Renamed" else owner

    launcher = cb.client()
    inst = cb.add_server(launcher, **scoped())
    app = cb.join(inst)
    chain = Mediation([cb.access, cb.policy])
    chain.mediators.append(Renamer(launcher))
    chain._update()
    app.peer.restricted |= 1 << 2
    assert chain.owner(app.peer, PORTAL, None) is launcher.peer
    assert chain.owner(app.peer, "org.example.Renamed", None) is launcher.peer
    assert chain.owner(app.peer, "org.example.Other", "global") == "global"


# -- Parent: a nested instance made by the launcher, beside its app -------------

def add(creator, rules, **named):
    args = dict(named)
    if rules is not None:
        args["Allow"] = Variant("a(usos)", [tuple(r) for r in rules])
    return creator.bus_call("AddServer", "ssa{sv}a{sv}", ("com.example.App", "child", {}, args), interface=CIFACE)


def test_the_creator_nests_an_instance_with_parent(cb):
    launcher = cb.client()
    parent = cb.add_server(launcher, [CALL_PORTALS, TALK_ANY[:1] + ("org.example.X", "/", "")])
    r = add(launcher, [CALL_PORTALS], Parent=Variant("o", parent.path))
    assert r.type == METHOD_RETURN, r.body()
    child = cb.manager.instances[r.body()[0]]
    assert child.parent is parent and child in parent.children
    info = launcher.bus_ok("GetInstanceInfo", "o", (child.path,), interface=CIFACE)
    assert info[0]["org.freedesktop.DBus.Containers1.Instance"].value == parent.path
    # wider than the parent: refused, naming the rule
    r = add(launcher, [(CALL_METHODS, "org.example.Y", "/", "")], Parent=Variant("o", parent.path))
    assert r.error_name == ERR + "AccessDenied" and "rule 0" in r.body()[0]
    # a nested instance is stopped with its parent
    cb.manager.stop(parent, "test")
    assert child.path not in cb.manager.instances


def test_only_the_parents_creator_may_name_it(cb):
    launcher = cb.client()
    parent = cb.add_server(launcher, [CALL_PORTALS])
    stranger = cb.client()
    r = add(stranger, [CALL_PORTALS], Parent=Variant("o", parent.path))
    assert r.error_name == ERR + "AccessDenied" and "not created by this connection" in r.body()[0]
    app = cb.join(parent)
    other = cb.add_server(cb.client(), [CALL_PORTALS])
    r = add(app, [CALL_PORTALS], Parent=Variant("o", other.path))
    assert r.error_name == ERR + "AccessDenied" and "can only be that instance" in r.body()[0]
    r = add(launcher, [CALL_PORTALS], Parent=Variant("o", "/org/freedesktop/DBus/Containers1/c999"))
    assert r.error_name == ERR + "NotContainer"


def test_a_nested_instance_needs_rules_even_under_an_unmediated_parent(cb):
    launcher = cb.client()
    parent = cb.add_server(launcher)  # unmediated: any rules narrow it
    assert add(launcher, None, Parent=Variant("o", parent.path)).error_name == ERR + "AccessDenied"
    r = add(launcher, [TALK_ANY], Parent=Variant("o", parent.path))
    assert r.type == METHOD_RETURN, r.body()
