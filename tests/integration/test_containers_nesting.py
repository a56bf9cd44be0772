"""Nested instances that only narrow: a connection in a mediated instance
creates an instance of its own with AddServer, within its own rules."""

from __future__ import annotations

import pytest

from containers_util import (  # noqa: F401  (fixtures)
    ACCESS_DENIED,
    CALL,
    CIFACE,
    NAME_SUBTREE,
    NOT_CONTAINER,
    OWN,
    PATH_SUBTREE,
    SKIP_REFERENCE,
    TALK,
    add_server,
    allow,
    cbus,
    cbus_factory,
    ccall,
    cerror,
)
from itutil import TIMEOUT, Client, DBusErrorReply, echo_service, wait_until

pytestmark = SKIP_REFERENCE

SVC = "com.example.Svc"
OTHER = "com.example.Other"
PARENT_RULES = [(TALK | PATH_SUBTREE, SVC, "/", ""), (OWN | NAME_SUBTREE | PATH_SUBTREE, "com.example.App", "/", "")]


def _parent(cbus, **named):
    c = cbus.client()
    path, _, address = add_server(c, name="parent", named={**allow(*PARENT_RULES), **named})
    return c, path, cbus.client(address)


def _fails(address) -> bool:
    try:
        Client(address).close()
    except (OSError, ValueError, DBusErrorReply, TimeoutError, EOFError):
        return True
    return False


def test_a_narrower_nested_instance_works_and_knows_its_parent(cbus):
    outside, ppath, inner = _parent(cbus)
    with echo_service(cbus.address, SVC), echo_service(cbus.address, OTHER):
        cpath, _, caddress = add_server(inner, name="renderer",
                                        named=allow((CALL | PATH_SUBTREE, SVC, "/", "")))
        creds, ctype, name, _ = ccall(outside, "GetInstanceInfo", "o", cpath)
        assert creds["org.freedesktop.DBus.Containers1.Instance"] == ("o", ppath)
        assert name == "renderer"
        assert ccall(inner, "GetInstanceInfo", "o", cpath)[2] == "renderer"  # its own child
        child = cbus.client(caddress)
        assert child.bus("NameHasOwner", "s", SVC) == (True,)
        assert child.bus("NameHasOwner", "s", OTHER) == (False,)
        # owning was the parent's right, not the child's
        assert child.bus_error("RequestName", "su", "com.example.App.X", 0).name == ACCESS_DENIED
        p, *_ = ccall(outside, "GetConnectionInstance", "s", child.unique_name)
        assert p == cpath


@pytest.mark.parametrize("rules,which", [
    ([(TALK | PATH_SUBTREE, OTHER, "/", "")], 0),
    ([(CALL | PATH_SUBTREE, SVC, "/", ""), (CALL | NAME_SUBTREE | PATH_SUBTREE, "com.example", "/", "")], 1),
    ([(TALK | PATH_SUBTREE, "", "/", "")], 0),
    ([(OWN | PATH_SUBTREE, SVC, "/", "")], 0),
])
def test_a_wider_one_is_refused_naming_the_rule(cbus, rules, which):
    _, _, inner = _parent(cbus)
    e = cerror(inner, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, allow(*rules))
    assert e.name == ACCESS_DENIED
    assert f"Allow rule {which} " in e.text and "is wider than" in e.text


def test_unmediated_or_learning_nested_instances_are_refused(cbus):
    _, _, inner = _parent(cbus)
    e = cerror(inner, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, {})
    assert e.name == ACCESS_DENIED and "need Allow rules" in e.text
    e = cerror(inner, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {},
               {**allow(), "Learn": ("b", True)})
    assert e.name == ACCESS_DENIED and "may not learn" in e.text
    # and nothing from inside a learning instance
    outside = cbus.client()
    _, _, laddress = add_server(outside, named={"Learn": ("b", True)})
    learner = cbus.client(laddress)
    assert cerror(learner, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, allow()).name \
        == ACCESS_DENIED


def test_nested_instance_stops_with_its_parent(cbus):
    outside, ppath, inner = _parent(cbus)
    cpath, _, caddress = add_server(inner, named=allow())
    child = cbus.client(caddress)
    watcher = cbus.client()
    watcher.add_match(f"type='signal',interface='{CIFACE}',member='InstanceRemoved'")
    ccall(outside, "StopInstance", "o", ppath)
    removed = {watcher.wait_signal("InstanceRemoved", interface=CIFACE).body[0] for _ in range(2)}
    assert removed == {ppath, cpath}
    wait_until(lambda: _closed(child), TIMEOUT, what="the nested instance's connection closed")
    assert cerror(outside, "GetInstanceInfo", "o", cpath).name == NOT_CONTAINER


def _closed(client) -> bool:
    try:
        client.bus("GetId")
        return False
    except (OSError, EOFError, ConnectionError, TimeoutError, DBusErrorReply):
        return True


def test_nested_connections_count_against_the_parent(cbus):
    outside, _, inner = _parent(cbus, MaxConnections=("u", 2))
    _, _, caddress = add_server(inner, named=allow())
    cbus.client(caddress)  # the parent's second connection, counted through its child
    assert _fails(caddress)


def test_only_the_parent_may_stop_its_nested_instances(cbus):
    outside, ppath, inner = _parent(cbus)
    cpath, _, _ = add_server(inner, named=allow())
    other_path, _, _ = add_server(outside)
    assert cerror(inner, "StopInstance", "o", ppath).name == ACCESS_DENIED
    assert cerror(inner, "StopInstance", "o", other_path).name == ACCESS_DENIED
    assert cerror(inner, "StopListening", "o", other_path).name == ACCESS_DENIED
    ccall(inner, "StopInstance", "o", cpath)
    wait_until(lambda: cpath not in [i[0] for i in ccall(outside, "ListInstances")[0]], TIMEOUT)
    assert ppath in [i[0] for i in ccall(outside, "ListInstances")[0]]
