"""The verdict cache of mediated instances (containers/verdicts.py) through
Bus.receive, without sockets: a remembered allowance must never outlive
what it was read from (the rules, the grants, the name's owner), and
nothing is remembered for a denial, a hidden name or learn mode."""

import pytest

from containerhelpers import make_container_bus
from corehelpers import ERR, ERROR, METHOD_CALL, METHOD_RETURN
from sandbus.containers import verdicts
from sandbus.containers.rules import (
    CALL_METHODS as CALL,
    OBJECT_PATH_IS_SUBTREE as PATH_SUBTREE,
    SEND_UNIX_FDS as FDS,
)

SVC = "com.example.Svc"
PATH = "/Test"
IFACE = "com.example.Test"
ACCESS_DENIED = ERR + "AccessDenied"
SERVICE_UNKNOWN = ERR + "ServiceUnknown"
FD = 55  # a stand-in fd number: the fake sinks only record it


@pytest.fixture
def cb():
    return make_container_bus()


def owner(cb, name=SVC):
    c = cb.client()
    assert c.bus_ok("RequestName", "su", (name, 4)) == [1]
    c.clear()
    return c


def mediated(cb, *rules, **kw):
    inst = cb.add_server(cb.client(), list(rules), **kw)
    return inst, cb.join(inst)


def call(app, callees, member="Echo", dest=SVC, fds=()):
    """The name of the callee that got the call ('ok' answered), or the error."""
    serial = app.call(dest, member, "s", ("x",), path=PATH, interface=IFACE, fds=fds)
    for name, callee in callees.items():
        for m in callee.received():
            if m.type == METHOD_CALL and m.member == member:
                callee.reply(m, "s", ("echo",))
                assert app.reply_to(serial).type == METHOD_RETURN
                return name
    r = app.reply_to(serial)
    assert r.type == ERROR
    return r.error_name


def test_a_repeated_call_is_remembered_and_still_delivered(cb):
    svc = owner(cb)
    inst, app = mediated(cb, (CALL, SVC, PATH, IFACE))
    for _ in range(3):
        assert call(app, {"svc": svc}) == "svc"
    assert SVC in inst.verdicts.entries  # seen
    assert (SVC, PATH, IFACE, "Echo", True) in inst.verdicts.entries  # called, without fds


def test_a_name_that_moves_is_judged_against_its_new_owner(cb):
    """Allowed through a rule for the owner's unique name: once the name
    passes to a peer no rule covers, it is hidden, remembered or not."""
    first = cb.client()
    inst, app = mediated(cb, (CALL, first.unique_name, PATH, IFACE))
    assert first.bus_ok("RequestName", "su", (SVC, 0)) == [1]
    first.clear()
    second = cb.client()
    assert second.bus_ok("RequestName", "su", (SVC, 0)) == [2]  # queued
    second.clear()
    callees = {"first": first, "second": second}
    assert call(app, callees) == "first"
    assert call(app, callees) == "first"
    assert first.bus_ok("ReleaseName", "s", (SVC,)) == [1]  # second owns it now
    first.clear()
    assert call(app, callees) == SERVICE_UNKNOWN


def test_revoked_grant_ends_a_remembered_allowance(cb):
    svc = owner(cb)
    inst, app = mediated(cb)
    grant = [(CALL, PATH, IFACE)]
    assert cb.ccall(svc, "GrantAccess", "oa(uos)", (inst.path, grant)).type == METHOD_RETURN
    svc.clear()
    assert call(app, {"svc": svc}) == "svc"
    assert call(app, {"svc": svc}) == "svc"
    assert cb.ccall(svc, "RevokeAccess", "oa(uos)", (inst.path, grant)).type == METHOD_RETURN
    svc.clear()
    assert call(app, {"svc": svc}) == SERVICE_UNKNOWN


def test_a_grant_to_every_instance_changes_each_ones_verdicts(cb):
    svc = owner(cb)
    inst, app = mediated(cb, (CALL, SVC, PATH, IFACE))
    assert call(app, {"svc": svc}) == "svc"
    assert call(app, {"svc": svc}, member="Other") == "svc"  # IFACE covers every member
    assert call(app, {"svc": svc}, fds=(FD,)) == ACCESS_DENIED  # no SEND_UNIX_FDS
    assert cb.ccall(svc, "GrantAccess", "oa(uos)", ("/", [(FDS, "/", "")])).type == METHOD_RETURN
    svc.clear()
    assert call(app, {"svc": svc}, fds=(FD,)) == "svc"
    cb.bus.disconnect(cb.client().peer)  # an unrelated departure changes nothing
    assert call(app, {"svc": svc}, fds=(FD,)) == "svc"
    assert cb.ccall(svc, "RevokeAccess", "oa(uos)", ("/", [(FDS, "/", "")])).type == METHOD_RETURN
    svc.clear()
    assert call(app, {"svc": svc}, fds=(FD,)) == ACCESS_DENIED
    assert call(app, {"svc": svc}) == "svc"


def test_an_allowance_without_fds_is_not_one_with_fds(cb):
    svc = owner(cb)
    inst, app = mediated(cb, (CALL, SVC, PATH, IFACE))
    assert call(app, {"svc": svc}) == "svc"
    assert call(app, {"svc": svc}) == "svc"
    assert call(app, {"svc": svc}, fds=(FD,)) == ACCESS_DENIED
    assert call(app, {"svc": svc}, fds=(FD,)) == ACCESS_DENIED


def test_denials_and_hidden_names_are_not_remembered(cb):
    svc = owner(cb)
    owner(cb, "com.example.Hidden")
    inst, app = mediated(cb, (CALL, SVC, PATH, IFACE + ".Other"))
    for _ in range(2):
        assert call(app, {"svc": svc}) == ACCESS_DENIED  # seen, but not that interface
        assert call(app, {}, dest="com.example.Hidden") == SERVICE_UNKNOWN
        assert call(app, {}, dest="com.example.Missing") == SERVICE_UNKNOWN
    assert set(inst.verdicts.entries) == {SVC}  # only the sight of SVC


def test_learn_mode_remembers_nothing(cb):
    svc = owner(cb)
    inst, app = mediated(cb, learn=True)
    assert call(app, {"svc": svc}) == "svc"
    assert call(app, {"svc": svc}) == "svc"
    assert inst.verdicts.entries == {}
    # the call was judged, and counted, both times
    assert list(inst.learner.counts.values()) == [2]


def test_the_cache_is_bounded(cb):
    svc = owner(cb)
    inst, app = mediated(cb, (CALL | PATH_SUBTREE, SVC, "/", ""))
    for i in range(verdicts.MAX_ENTRIES + 10):
        assert call(app, {"svc": svc}, member=f"M{i}") == "svc"
        assert len(inst.verdicts.entries) <= verdicts.MAX_ENTRIES
