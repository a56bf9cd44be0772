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

from corehelpers import ERR, Client, make_bus  # noqa: E402

from sandbus.containers.manager import ContainerManager  # noqa: E402
from sandbus.core.mediation import Mediation  # noqa: E402
from sandbus.wire.marshal import Variant  # noqa: E402

CIFACE = "org.freedesktop.DBus.Containers1"


class FakeListener:
    def __init__(self, n):
        self.container = None
        self.allowed_uid = None
        self.path = f"/fake/socket{n}"

    def address(self, guid):
        return f"unix:path={self.path},guid={guid}"


class FakeSockets:
    """What io/container_sockets.py gives the manager, without sockets."""

    def __init__(self):
        self.made = []
        self.stopped = []

    def default_directory(self, bus_type):
        return "/fake"

    def create(self, directory):
        self.made.append(FakeListener(len(self.made)))
        return self.made[-1]

    def adopt(self, fd):
        return self.create("/fake")

    def start(self, listener):
        pass

    def stop(self, listener):
        self.stopped.append(listener)

    def watch(self, fd, callback, once=True):
        return lambda: None


def _bus():
    bus = make_bus()
    mgr = ContainerManager(bus, FakeSockets())
    bus.set_mediation(Mediation([mgr.access]))
    return bus, mgr


def _add(client, name, rules=None, **named):
    args = {k: v for k, v in named.items()}
    if rules is not None:
        args["Allow"] = Variant("a(usos)", rules)
    return client.bus_call("AddServer", "ssa{sv}a{sv}", ("com.example.App", name, {}, args), interface=CIFACE)


def _inside(bus, mgr, path):
    inst = mgr.instances[path]
    assert inst.admit_connection()  # as the io layer does when it accepts
    c = Client(bus, listener=inst.listener)
    c.hello()
    return c


def test_through_the_bus_nested_add_server_narrows_only():
    bus, mgr = _bus()
    outside = Client(bus)
    outside.hello()
    outside.bus_ok("AddMatch", "s", ("type='signal',member='InstanceRemoved'",))
    reply = _add(outside, "parent", [(TALK | PATH_TREE, "org.example.Talk", "/", "")])
    ppath = reply.body()[0]
    inner = _inside(bus, mgr, ppath)
    wider = _add(inner, "wide", [(TALK | PATH_TREE, "org.example.Talk2", "/", "")])
    assert wider.error_name == ERR + "AccessDenied" and "Allow rule 0" in wider.body()[0]
    assert _add(inner, "plain").error_name == ERR + "AccessDenied"
    ok = _add(inner, "narrow", [(CALL, "org.example.Talk", "/x", "")])
    cpath = ok.body()[0]
    child = mgr.instances[cpath]
    assert child.parent is mgr.instances[ppath] and child in mgr.instances[ppath].children
    assert child.creator_creds["org.freedesktop.DBus.Containers1.Instance"] == Variant("o", ppath)
    # the parent stops: the nested one goes with it
    outside.bus_ok("StopInstance", "o", (ppath,), interface=CIFACE)
    assert cpath not in mgr.instances and ppath not in mgr.instances
    removed = [s.body()[0] for s in outside.signals("InstanceRemoved")]
    assert set(removed) == {ppath, cpath}


def test_through_the_bus_an_unmediated_instance_may_not_nest():
    bus, mgr = _bus()
    outside = Client(bus)
    outside.hello()
    ppath = _add(outside, "parent").body()[0]
    inner = _inside(bus, mgr, ppath)
    e = _add(inner, "narrow", [(CALL, "org.example.Talk", "/x", "")])
    assert e.error_name == ERR + "AccessDenied" and "may not be called from inside a container" in e.body()[0]
