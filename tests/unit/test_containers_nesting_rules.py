"""Nested instances only narrow: the coverage of requested Allow rules by a
parent's rules (containers/nesting.py), without sockets."""

import pytest

from sandbus.containers.nesting import first_uncovered, rule_covered
from sandbus.containers.rules import (
    BUS_NAME_IS_SUBTREE as NAME_TREE,
    CALL_METHODS as CALL,
    OBJECT_PATH_IS_SUBTREE as PATH_TREE,
    OWN_BUS_NAME as OWN,
    RECEIVE_BROADCASTS as RECV,
    SEND_UNIX_FDS as FDS,
    EXACT_MEMBER as EXACT,
)

TALK = CALL | RECV
PARENT = [
    (TALK | PATH_TREE, "org.example.Talk", "/", ""),
    (CALL | NAME_TREE | PATH_TREE, "org.example.Tree", "/org/example", ""),
    (CALL, "org.example.Exact", "/one", "org.example.Iface"),
    (OWN | TALK | NAME_TREE | PATH_TREE, "org.example.App", "/", ""),
    (0, "org.example.Seen", "/", ""),
    (RECV | PATH_TREE, "org.example.Split", "/", ""),
    (CALL | PATH_TREE, "org.example.Split", "/", ""),
    (CALL | EXACT, "org.example.Method", "/m", "org.example.I.Do"),
    (NAME_TREE, ":", "/", ""),
]


@pytest.mark.parametrize("rule", [
    (TALK | PATH_TREE, "org.example.Talk", "/", ""),              # the same rule
    (CALL, "org.example.Talk", "/a/b", "org.x.Y"),                # a narrower part of it
    (RECV | PATH_TREE, "org.example.Talk", "/sub", ""),
    (CALL, "org.example.Tree", "/org/example", ""),               # the root of a name subtree
    (CALL | PATH_TREE, "org.example.Tree.Child", "/org/example/x", ""),
    (CALL | NAME_TREE, "org.example.Tree.Child", "/org/example", "org.i.J"),
    (CALL, "org.example.Exact", "/one", "org.example.Iface"),
    (OWN, "org.example.App.Renderer", "/", ""),
    (OWN | NAME_TREE | PATH_TREE, "org.example.App", "/", ""),
    (0, "org.example.Seen", "/", ""),                             # see only
    (0, "org.example.Talk", "/", ""),                             # talking implies seeing
    (TALK | PATH_TREE, "org.example.Split", "/", ""),             # covered by two rules together
    (CALL | EXACT, "org.example.Method", "/m", "org.example.I.Do"),  # the same method
    (CALL | EXACT, "org.example.Exact", "/one", "org.example.Iface.Any"),  # a member of the interface
    (NAME_TREE, ":", "/", ""),                                    # every unique name, to see
])
def test_narrower_rules_are_covered(rule):
    assert rule_covered(rule, PARENT)


@pytest.mark.parametrize("rule", [
    (TALK | PATH_TREE, "org.example.Other", "/", ""),             # another name
    (TALK | PATH_TREE, "", "/", ""),                              # any name
    (CALL | NAME_TREE, "org.example.Talk", "/", ""),              # exact name widened to a subtree
    (CALL | NAME_TREE, "org.example", "/org/example", ""),        # above the parent's subtree
    (CALL, "org.example.TreeX", "/org/example", ""),              # a sibling that shares the prefix
    (CALL, "org.example.Tree", "/org", ""),                       # above the parent's path subtree
    (CALL, "org.example.Tree", "/org/exampleX", ""),
    (CALL | PATH_TREE, "org.example.Exact", "/one", "org.example.Iface"),  # exact path widened
    (CALL, "org.example.Exact", "/one", ""),                      # any interface
    (CALL, "org.example.Exact", "/one", "org.example.Other"),
    (RECV, "org.example.Exact", "/one", "org.example.Iface"),     # a permission the parent lacks
    (FDS | CALL, "org.example.Talk", "/", ""),
    (OWN, "org.example.Talk", "/", ""),
    (CALL, "org.example.Seen", "/", ""),                          # seeing is not calling
    (0, "org.example.Unknown", "/", ""),
    (CALL, "org.example.Method", "/m", "org.example.I"),          # the method's whole interface
    (CALL | EXACT, "org.example.Method", "/m", "org.example.I.Other"),
])
def test_wider_rules_are_not(rule):
    assert not rule_covered(rule, PARENT)


def test_a_parent_with_any_name_covers_names_but_not_more_permissions():
    parent = [(CALL | PATH_TREE, "", "/", "")]
    assert rule_covered((CALL, "org.a.B", "/x", "i.J"), parent)
    assert rule_covered((CALL | NAME_TREE | PATH_TREE, "", "/", ""), parent)
    assert not rule_covered((RECV, "org.a.B", "/x", ""), parent)


def test_first_uncovered_names_the_rule():
    rules = [(CALL, "org.example.Talk", "/", ""), (CALL, "org.example.Nope", "/", "")]
    assert first_uncovered(rules, PARENT) == (1, (CALL, "org.example.Nope", "/", ""))
    assert first_uncovered(rules[:1], PARENT) is None
    assert first_uncovered([], []) is None


# -- through Bus.receive, no sockets ---------------------------------------------

from containerhelpers import CIFACE, make_container_bus  # noqa: E402
from corehelpers import ERR  # noqa: E402

from sandbus.wire.marshal import Variant  # noqa: E402


def _add(cb, client, name, rules=None):
    args = {} if rules is None else {"Allow": Variant("a(usos)", rules)}
    return cb.ccall(client, "AddServer", "ssa{sv}a{sv}", ("com.example.App", name, {}, args))


def test_through_the_bus_nested_add_server_narrows_only():
    cb = make_container_bus()
    outside = cb.client()
    outside.bus_ok("AddMatch", "s", ("type='signal',member='InstanceRemoved'",))
    parent = cb.add_server(outside, [(TALK | PATH_TREE, "org.example.Talk", "/", "")], name="parent")
    inner = cb.join(parent)
    wider = _add(cb, inner, "wide", [(TALK | PATH_TREE, "org.example.Talk2", "/", "")])
    assert wider.error_name == ERR + "AccessDenied" and "Allow rule 0" in wider.body()[0]
    assert _add(cb, inner, "plain").error_name == ERR + "AccessDenied"
    cpath = _add(cb, inner, "narrow", [(CALL, "org.example.Talk", "/x", "")]).body()[0]
    child = cb.manager.instances[cpath]
    assert child.parent is parent and child in parent.children
    assert child.creator_creds["org.freedesktop.DBus.Containers1.Instance"] == Variant("o", parent.path)
    # the parent stops: the nested one goes with it
    outside.bus_ok("StopInstance", "o", (parent.path,), interface=CIFACE)
    assert cpath not in cb.manager.instances and parent.path not in cb.manager.instances
    removed = [s.body()[0] for s in outside.signals("InstanceRemoved")]
    assert set(removed) == {parent.path, cpath}


def test_through_the_bus_an_unmediated_instance_may_not_nest():
    cb = make_container_bus()
    outside = cb.client()
    inner = cb.join(cb.add_server(outside, name="parent"))
    e = _add(cb, inner, "narrow", [(CALL, "org.example.Talk", "/x", "")])
    assert e.error_name == ERR + "AccessDenied" and "may not be called from inside a container" in e.body()[0]


def test_through_the_bus_nested_connections_count_against_the_parent():
    cb = make_container_bus()
    outside = cb.client()
    parent = cb.add_server(outside, [(CALL, "org.example.Talk", "/", "")], MaxConnections=Variant("u", 2))
    inner = cb.join(parent)
    child = cb.manager.instances[_add(cb, inner, "narrow", []).body()[0]]
    assert child.max_connections == 2
    cb.join(child)
    assert not child.admit_connection() and not parent.admit_connection()
