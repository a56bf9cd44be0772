"""The containers' access rules (docs/containers.md) through Bus.receive,
without sockets: the bus is put together as daemon.py does it
(containerhelpers.py), contained clients connect through their instance's
listener.  The same table as tests/integration/test_containers_access.py
and test_containers.py, at unit speed, and more of it."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from containerhelpers import CIFACE, PidfdSink, header_fields, make_container_bus
from corehelpers import (
    BUS_IFACE,
    BUS_NAME,
    BUS_PATH,
    ERR,
    ERROR,
    METHOD_CALL,
    METHOD_RETURN,
    NO_REPLY_EXPECTED,
    SIGNAL,
    build_message,
)
from sandbus.containers.rules import (
    BUS_NAME_IS_SUBTREE as NAME_SUBTREE,
    CALL_METHODS as CALL,
    OBJECT_PATH_IS_SUBTREE as PATH_SUBTREE,
    OWN_BUS_NAME as OWN,
    RECEIVE_BROADCASTS as BROADCASTS,
    SEND_UNIX_FDS as FDS,
)
from sandbus.wire.marshal import Variant
from sandbus.wire.message import NO_AUTO_START

ANY = "/"
SEE = 0
TALK = CALL | BROADCASTS
SVC = "com.example.Svc"
PATH = "/Test"
IFACE = "com.example.Test"
ACCESS_DENIED = ERR + "AccessDenied"
SERVICE_UNKNOWN = ERR + "ServiceUnknown"
NAME_HAS_NO_OWNER = ERR + "NameHasNoOwner"
NOT_CONTAINER = ERR + "NotContainer"
INVALID_ARGS = ERR + "InvalidArgs"
DO_NOT_QUEUE = 4
FD = 55  # a stand-in fd number: the fake sinks only record it


@pytest.fixture
def cb():
    return make_container_bus()


def owner_of(cb, *names, **kw):
    """An outside connection owning names."""
    c = cb.client(**kw)
    for name in names:
        assert c.bus_ok("RequestName", "su", (name, DO_NOT_QUEUE)) == [1]
    c.clear()
    return c


def mediated(cb, *rules, creator=None, **kw):
    """A mediated instance with rules, and one connection through it."""
    creator = creator or cb.client()
    inst = cb.add_server(creator, list(rules), **kw)
    return inst, cb.join(inst)


def outcome(client, dest, callee=None, *, path=PATH, iface=IFACE, member="Echo", flags=0, fds=()):
    """('ok', body) if the call reached callee (which answers it), else the
    (error name, text) the caller got; ('none',) if nothing came back."""
    serial = client.call(dest, member, "s", ("x",), path=path, interface=iface, flags=flags, fds=fds)
    if callee is not None:
        for m in callee.received():
            if m.type == METHOD_CALL and m.member == member and m.sender == client.unique_name:
                assert m.fds == tuple(fds)
                callee.reply(m, "s", ("echo",))
    replies = [m for m in client.peek() if m.type in (METHOD_RETURN, ERROR) and m.reply_serial == serial]
    if not replies:
        return ("none",)
    assert len(replies) == 1, replies
    r = client.reply_to(serial)
    if r.type == ERROR:
        return (r.error_name, r.body()[0])
    return ("ok", tuple(r.body()))


def calls_to(client):
    return [m for m in client.received() if m.type == METHOD_CALL]


def sees(client, name) -> bool:
    return client.bus_ok("NameHasOwner", "s", (name,)) == [True]


def subst(value, old, new):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, (tuple, list)):
        return tuple(subst(v, old, new) for v in value)
    return value


def assert_hidden(client, name, never="com.example.Never", **kw):
    """A call to name is answered exactly as one to a name nobody owns."""
    got = outcome(client, name, **kw)
    want = outcome(client, never, **kw)
    assert got[0] in (SERVICE_UNKNOWN, NAME_HAS_NO_OWNER), got
    assert subst(got, name, never) == want, (got, want)


# -- the baseline of a mediated connection ---------------------------------------------------------


def test_baseline_driver_is_filtered(cb):
    svc = owner_of(cb, SVC)
    inst, inner = mediated(cb)
    sibling = cb.join(inst)
    names = inner.bus_ok("ListNames")[0]
    assert sorted(names) == sorted([BUS_NAME, inner.unique_name, sibling.unique_name])
    assert not sees(inner, SVC) and not sees(inner, svc.unique_name)
    assert sees(inner, sibling.unique_name) and sees(inner, BUS_NAME)
    assert inner.bus_ok("GetNameOwner", "s", (BUS_NAME,)) == [BUS_NAME]
    assert inner.bus_ok("AddMatch", "s", ("type='signal'",)) == []
    assert inner.bus_call("Ping", interface="org.freedesktop.DBus.Peer").type == METHOD_RETURN


def test_baseline_talks_within_its_instance(cb):
    inst, a = mediated(cb)
    b = cb.join(inst)
    assert outcome(a, b.unique_name, b) == ("ok", ("echo",))
    assert outcome(a, b.unique_name, b, fds=(FD,)) == ("ok", ("echo",))  # fds stay inside
    a.signal("Inside", destination=b.unique_name)
    assert [m.member for m in b.signals()] == ["Inside"]


def test_baseline_receives_calls_from_outside_and_answers_once(cb):
    out = cb.client()
    _, inner = mediated(cb)
    for answer in ("reply", "error"):
        serial = out.call(inner.unique_name, "Echo", "s", ("x",), path=PATH, interface=IFACE)
        [call] = calls_to(inner)
        assert call.sender == out.unique_name
        for _ in range(2):
            if answer == "reply":
                inner.reply(call, "s", ("y",))
            else:
                inner.error(call)
        assert [m.reply_serial for m in out.received()] == [serial]  # once
    out.signal("Hi", destination=inner.unique_name)
    assert [m.member for m in inner.signals()] == ["Hi"]
    # a caller becomes visible to the connection it called, and to it alone
    sibling = cb.join(inner.peer.container)
    assert sees(inner, out.unique_name) and not sees(sibling, out.unique_name)


def test_baseline_sends_broadcasts(cb):
    out = cb.client()
    inst, inner = mediated(cb)
    sibling = cb.join(inst)
    for c in (out, sibling):
        c.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Out'",))
    inner.signal("FromInside", interface="com.example.Out")
    for c in (out, sibling):
        assert [(m.member, m.sender) for m in c.signals()] == [("FromInside", inner.unique_name)]


def test_baseline_may_not_own_names(cb):
    _, inner = mediated(cb)
    for member, sig, body in (("RequestName", "su", ("org.example.App", 0)), ("ReleaseName", "s", ("a.b",)),
                              ("ListQueuedOwners", "s", ("a.b",))):
        name, text = inner.bus_error(member, sig, body)
        assert name == ACCESS_DENIED and "own the name" in text, (member, text)
    assert inner.peer.names == set()


def test_baseline_may_not_talk_to_other_instances(cb):
    creator = cb.client()
    other_mediated = cb.join(cb.add_server(creator, []))
    unmediated = cb.join(cb.add_server(creator))
    _, inner = mediated(cb, creator=creator)
    for target in (other_mediated, unmediated):
        assert_hidden(inner, target.unique_name, never=":1.99")
        assert not sees(inner, target.unique_name)
        inner.signal("Sneak", destination=target.unique_name)
        assert target.received() == []


def test_baseline_receives_no_broadcasts_from_outside(cb):
    out = cb.client()
    inst, inner = mediated(cb)
    sibling = cb.join(inst)
    inner.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Sig'",))
    out.signal("Outside", interface="com.example.Sig")
    sibling.signal("Sibling", interface="com.example.Sig")
    assert [m.member for m in inner.signals()] == ["Sibling"]


def test_baseline_passes_no_fds_in_unicasts(cb):
    svc = owner_of(cb, SVC)
    _, inner = mediated(cb, (CALL | PATH_SUBTREE, SVC, ANY, ""))
    got = outcome(inner, SVC, svc, fds=(FD,))
    assert got[0] == ACCESS_DENIED and "file descriptors" in got[1], got
    inner.signal("WithFd", destination=SVC, fds=(FD,))
    assert svc.received() == []
    assert outcome(inner, SVC, svc) == ("ok", ("echo",))  # without fds it may


def test_baseline_passes_no_fds_in_broadcasts(cb):
    out = owner_of(cb, SVC)
    inst, inner = mediated(cb)
    sibling = cb.join(inst)
    for c in (out, sibling):
        c.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Fd'",))
    inner.signal("WithFd", interface="com.example.Fd", fds=(FD,))
    inner.signal("NoFd", interface="com.example.Fd")
    assert [m.member for m in out.signals()] == ["NoFd"]
    assert [(m.member, m.fds) for m in sibling.signals()] == [("WithFd", (FD,)), ("NoFd", ())]
    # SEND_UNIX_FDS towards the receiver's name lets them out
    _, allowed = mediated(cb, (FDS, SVC, ANY, ""))
    allowed.signal("WithFd", interface="com.example.Fd", fds=(FD,))
    assert [(m.member, m.fds) for m in out.signals()] == [("WithFd", (FD,))]


def test_baseline_may_not_activate(cb, tmp_path):
    spawner = cb.with_activation(tmp_path, "com.example.Activatable")
    _, inner = mediated(cb)
    for flags in (0, NO_REPLY_EXPECTED):
        assert_hidden(inner, "com.example.Activatable", flags=flags)
    assert spawner.children == []
    name, _ = inner.bus_error("StartServiceByName", "su", ("com.example.Activatable", 0))
    assert name == SERVICE_UNKNOWN and spawner.children == []
    assert inner.bus_ok("ListActivatableNames") == [[BUS_NAME]]
    # TALK on it allows both
    _, talker = mediated(cb, (TALK, "com.example.Activatable", ANY, ""))
    assert "com.example.Activatable" in talker.bus_ok("ListActivatableNames")[0]
    talker.call("com.example.Activatable", "Echo", path=PATH, interface=IFACE)
    assert len(spawner.children) == 1


@pytest.mark.parametrize("rules", [None, []], ids=["unmediated", "mediated"])
def test_no_eavesdropping_from_inside(cb, rules):
    inst = cb.add_server(cb.client(), rules)
    inner = cb.join(inst)
    for rule in ("eavesdrop='true'", "type='method_call',eavesdrop=true"):
        name, text = inner.bus_error("AddMatch", "s", (rule,))
        assert name == ACCESS_DENIED and "eavesdrop" in text
    assert inner.peer.rules == []
    assert inner.bus_ok("AddMatch", "s", ("eavesdrop='false'",)) == []


# -- every flag ---------------------------------------------------------------------------------------

RULE_TABLE = [
    # (rules, path, interface, expected) for com.example.Test.Echo at path on SVC
    ([], "/Test", "com.example.Test", "hidden"),
    ([(SEE, SVC, ANY, "")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(BROADCASTS, SVC, ANY, "")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(FDS | OWN, SVC, ANY, "")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(CALL, SVC, "/Test", "")], "/Test", "com.example.Test", "ok"),
    ([(CALL, SVC, "/Test", "")], "/Test/sub", "com.example.Test", ACCESS_DENIED),
    ([(CALL, SVC, "/", "")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(CALL | PATH_SUBTREE, SVC, "/Test", "")], "/Test/sub", "com.example.Test", "ok"),
    ([(CALL | PATH_SUBTREE, SVC, "/Test", "")], "/Test", "com.example.Test", "ok"),
    ([(CALL | PATH_SUBTREE, SVC, "/Test", "")], "/TestX", "com.example.Test", ACCESS_DENIED),
    ([(CALL | PATH_SUBTREE, SVC, ANY, "")], "/any/where", "com.example.Test", "ok"),
    ([(CALL, SVC, "/Test", "com.example.Test")], "/Test", "com.example.Test", "ok"),
    ([(CALL, SVC, "/Test", "com.example.Other")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(CALL, SVC, "/Test", "com.example.Other"), (CALL, SVC, "/Test", "com.example.Test")], "/Test",
     "com.example.Test", "ok"),
    ([(CALL | NAME_SUBTREE | PATH_SUBTREE, "com.example", ANY, "")], "/Test", "com.example.Test", "ok"),
    ([(CALL | NAME_SUBTREE | PATH_SUBTREE, "com.example.Svc", ANY, "")], "/Test", "com.example.Test", "ok"),
    ([(CALL | NAME_SUBTREE | PATH_SUBTREE, "com.exam", ANY, "")], "/Test", "com.example.Test", "hidden"),
    ([(CALL | PATH_SUBTREE, "com.example", ANY, "")], "/Test", "com.example.Test", "hidden"),
    ([(CALL | PATH_SUBTREE, "", ANY, "")], "/Test", "com.example.Test", "ok"),  # any name
    ([(CALL | PATH_SUBTREE, "com.example.Other", ANY, "")], "/Test", "com.example.Test", "hidden"),
]


@pytest.mark.parametrize("rules,path,iface,expected", RULE_TABLE)
def test_rule_table(cb, rules, path, iface, expected):
    svc = owner_of(cb, SVC)
    _, inner = mediated(cb, *rules)
    if expected == "hidden":
        assert_hidden(inner, SVC, path=path, iface=iface)
        assert not sees(inner, SVC)
    else:
        got = outcome(inner, SVC, svc, path=path, iface=iface)
        assert got[0] == expected, got
        assert sees(inner, SVC)
    if expected != "ok":
        assert svc.received() == []


def test_rules_for_a_unique_name(cb):
    svc = owner_of(cb, SVC)
    _, inner = mediated(cb, (CALL | PATH_SUBTREE, svc.unique_name, ANY, ""))
    assert outcome(inner, svc.unique_name, svc) == ("ok", ("echo",))
    # the well-known names of that connection are reached through it too
    assert outcome(inner, SVC, svc) == ("ok", ("echo",))
    assert sees(inner, SVC)


def test_a_well_known_name_is_judged_by_its_own_rules(cb):
    """As learn mode's minimiser assumes (containers/learn.py _allowed): a
    destination addressed by a well-known name by the rules for that name,
    addressed by its unique name by the rules for any of its names."""
    svc = owner_of(cb, SVC, "com.example.Alias")
    _, inner = mediated(cb, (CALL | FDS | PATH_SUBTREE, "com.example.Alias", ANY, ""))
    for dest in (svc.unique_name, "com.example.Alias"):
        assert outcome(inner, dest, svc) == ("ok", ("echo",)), dest
        assert outcome(inner, dest, svc, fds=(FD,)) == ("ok", ("echo",)), dest
        assert sees(inner, dest), dest
    assert not sees(inner, SVC)
    assert_hidden(inner, SVC)
    assert_hidden(inner, SVC, fds=(FD,))
    inner.signal("Sneak", destination=SVC)
    assert svc.received() == []


def test_flag_see(cb):
    svc = owner_of(cb, SVC)
    _, inner = mediated(cb, (SEE, SVC, ANY, ""))
    assert sees(inner, SVC) and sees(inner, svc.unique_name)
    assert inner.bus_ok("GetNameOwner", "s", (SVC,)) == [svc.unique_name]
    assert {SVC, svc.unique_name} <= set(inner.bus_ok("ListNames")[0])
    got = outcome(inner, SVC, svc)
    assert got[0] == ACCESS_DENIED and SVC in got[1]
    inner.bus_ok("AddMatch", "s", ("type='signal'",))
    svc.signal("Seen")
    assert inner.signals("Seen") == []


def test_flag_receive_broadcasts(cb):
    out = owner_of(cb, SVC)
    other = cb.client()
    creator = cb.client()
    receivers = {}
    for key, rules in (("call-only", [(CALL, SVC, ANY, "")]),
                       ("exact", [(BROADCASTS, SVC, "/sig", "com.example.Sig")]),
                       ("subtree", [(BROADCASTS | PATH_SUBTREE, SVC, "/sig", "")]),
                       ("any-name", [(BROADCASTS | PATH_SUBTREE, "", ANY, "")]),
                       ("plain", [])):
        _, c = mediated(cb, *rules, creator=creator)
        c.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Sig'",))
        receivers[key] = c
    out.signal("AtSig", path="/sig", interface="com.example.Sig")
    out.signal("Below", path="/sig/below", interface="com.example.Sig")
    out.signal("Elsewhere", path="/other", interface="com.example.Sig")
    other.signal("FromOther", path="/sig", interface="com.example.Sig")
    got = {key: [m.member for m in c.signals()] for key, c in receivers.items()}
    assert got == {"call-only": [], "exact": ["AtSig"], "subtree": ["AtSig", "Below"],
                   "any-name": ["AtSig", "Below", "Elsewhere", "FromOther"], "plain": []}


def test_flag_send_unix_fds(cb):
    svc = owner_of(cb, SVC)
    _, no = mediated(cb, (CALL | PATH_SUBTREE, SVC, ANY, ""))
    _, yes = mediated(cb, (CALL | FDS | PATH_SUBTREE, SVC, ANY, ""))
    _, split = mediated(cb, (CALL | PATH_SUBTREE, SVC, ANY, ""), (FDS, SVC, ANY, ""))
    _, fds_only = mediated(cb, (FDS, SVC, ANY, ""))
    assert outcome(no, SVC, svc, fds=(FD,))[0] == ACCESS_DENIED
    assert outcome(yes, SVC, svc, fds=(FD,)) == ("ok", ("echo",))
    assert outcome(split, SVC, svc, fds=(FD,)) == ("ok", ("echo",))
    assert outcome(fds_only, SVC, svc, fds=(FD,))[0] == ACCESS_DENIED  # fds, but no call


def test_flag_own_bus_name(cb):
    _, inner = mediated(cb, (OWN | NAME_SUBTREE, "org.example.App", ANY, ""), (OWN, "org.example.Exact", ANY, ""))
    for name in ("org.example.App", "org.example.App.Sub", "org.example.Exact"):
        assert inner.bus_ok("RequestName", "su", (name, DO_NOT_QUEUE)) == [1], name
    for name in ("org.example.Exact.Sub", "org.example.Apple", "com.example.Other"):
        assert inner.bus_error("RequestName", "su", (name, DO_NOT_QUEUE))[0] == ACCESS_DENIED, name
        assert inner.bus_error("ReleaseName", "s", (name,))[0] == ACCESS_DENIED, name
    assert inner.bus_ok("ReleaseName", "s", ("org.example.App.Sub",)) == [1]
    assert inner.bus_ok("ListQueuedOwners", "s", ("org.example.App",)) == [[inner.unique_name]]
    # what it owns is its own to talk to from inside its instance, and
    # outside callers reach it by that name
    out = cb.client()
    assert outcome(out, "org.example.App", inner) == ("ok", ("echo",))


def test_an_own_rule_shows_who_owns_and_queues_for_the_name(cb):
    other = owner_of(cb, "org.example.App")
    _, inner = mediated(cb, (OWN, "org.example.App", ANY, ""))
    # it may queue for the name and see that it is owned ...
    assert inner.bus_ok("RequestName", "su", ("org.example.App", 0)) == [2]  # IN_QUEUE
    assert sees(inner, "org.example.App")
    # ... and so it sees the owner, through the name's rule
    assert inner.bus_ok("ListQueuedOwners", "s", ("org.example.App",)) == [[other.unique_name,
                                                                            inner.unique_name]]


# -- the driver for a mediated caller -----------------------------------------------------------------


def test_list_names_and_activatable_names_filtered(cb, tmp_path):
    cb.with_activation(tmp_path, "com.example.Act", "com.example.Hidden")
    svc = owner_of(cb, SVC)
    hidden = owner_of(cb, "com.example.Secret")
    _, inner = mediated(cb, (SEE, SVC, ANY, ""), (TALK, "com.example.Act", ANY, ""))
    names = inner.bus_ok("ListNames")[0]
    assert set(names) == {BUS_NAME, inner.unique_name, SVC, svc.unique_name}
    assert hidden.unique_name not in names
    assert set(inner.bus_ok("ListActivatableNames")[0]) == {BUS_NAME, "com.example.Act"}
    # outside, everything
    assert {"com.example.Secret", SVC} <= set(svc.bus_ok("ListNames")[0])


LOOKUPS = [
    ("GetNameOwner", BUS_IFACE), ("NameHasOwner", BUS_IFACE), ("GetConnectionUnixUser", BUS_IFACE),
    ("GetConnectionUnixProcessID", BUS_IFACE), ("GetConnectionCredentials", BUS_IFACE),
    ("GetAdtAuditSessionData", BUS_IFACE), ("GetConnectionSELinuxSecurityContext", BUS_IFACE),
    ("GetConnectionInstance", CIFACE),
]


def normalised(data: bytes, reply_serial: int) -> bytes:
    """A message from the bus with its serial and its REPLY_SERIAL zeroed."""
    assert data[0:1] == b"l"
    field = b"\x05\x01u\x00" + reply_serial.to_bytes(4, "little")
    assert data.count(field) == 1
    return data[:8] + bytes(4) + data[12:].replace(field, b"\x05\x01u\x00" + bytes(4))


def raw_answer(client, member, iface, name):
    """The bus's reply to a lookup, as bytes with the bus's serial and the
    caller's serial zeroed (they differ from call to call)."""
    serial = client.call(BUS_NAME, member, "s", (name,), path=BUS_PATH, interface=iface)
    r = client.reply_to(serial)
    return r.type, normalised(r.data, serial)


@pytest.mark.parametrize("member,iface", LOOKUPS)
def test_lookups_need_see(cb, member, iface):
    creator = cb.client()
    svc = owner_of(cb, "com.example.Abc")  # as long as "com.example.Xyz"
    contained = cb.join(cb.add_server(creator))  # an unmediated instance, so GetConnectionInstance answers
    contained.bus_ok("RequestName", "su", ("com.example.Kid", 0))
    _, blind = mediated(cb, creator=creator)
    _, seeing = mediated(cb, (SEE, "com.example.Abc", ANY, ""), (SEE, "com.example.Kid", ANY, ""),
                         creator=creator)
    pairs = [("com.example.Abc", "com.example.Xyz"), (svc.unique_name, ":1." + "9" * (len(svc.unique_name) - 3)),
             ("com.example.Kid", "com.example.Kim"),
             (contained.unique_name, ":1." + "8" * (len(contained.unique_name) - 3))]
    for name, never in pairs:
        assert len(name) == len(never) and never not in cb.bus.peers
        got = raw_answer(blind, member, iface, name)
        want = raw_answer(blind, member, iface, never)
        assert got == (want[0], want[1].replace(never.encode(), name.encode())), (member, name)
        visible = raw_answer(seeing, member, iface, name)
        missing = raw_answer(seeing, member, iface, never)
        assert visible[1].replace(name.encode(), never.encode()) != missing[1], (member, name)


def test_get_connection_instance_of_visible_names(cb):
    creator = cb.client()
    out = owner_of(cb, SVC)
    inst, inner = mediated(cb, (SEE, SVC, ANY, ""), creator=creator)
    r = cb.ccall(inner, "GetConnectionInstance", "s", (inner.unique_name,))
    assert r.body()[0] == inst.path and r.body()[2:4] == ["com.example.App", "app"]
    assert cb.ccall(inner, "GetConnectionInstance", "s", (SVC,)).error_name == NOT_CONTAINER
    assert cb.ccall(inner, "GetInstanceInfo", "o", (inst.path,)).type == METHOD_RETURN
    # another instance looks like no instance at all to a mediated caller
    other = cb.add_server(creator)
    r = cb.ccall(inner, "GetInstanceInfo", "o", (other.path,))
    want = cb.ccall(inner, "GetInstanceInfo", "o", (other.path[:-1] + "9",))
    assert (r.error_name, r.body()[0]) == (want.error_name, want.body()[0].replace("c9", f"c{other.number}"))
    assert cb.ccall(out, "GetInstanceInfo", "o", (other.path,)).type == METHOD_RETURN


@pytest.mark.parametrize("other_rules", [None, []], ids=["unmediated", "mediated"])
def test_get_connection_instance_of_a_peer_in_another_instance(cb, other_rules):
    """Regression: a mediated caller that may see a connection in another
    instance was told that instance's path, creator, type, name and
    metadata, which GetInstanceInfo refuses it."""
    creator = cb.client()
    other = cb.join(cb.add_server(creator, other_rules, ctype="org.example.Secret", name="secret",
                                  metadata={"k": Variant("s", "v")}))
    outside = cb.client()
    _, inner = mediated(cb, (SEE, other.unique_name, ANY, ""), (SEE, outside.unique_name, ANY, ""),
                        creator=creator)
    assert sees(inner, other.unique_name)
    r = cb.ccall(inner, "GetConnectionInstance", "s", (other.unique_name,))
    want = cb.ccall(inner, "GetConnectionInstance", "s", (outside.unique_name,))
    assert len(other.unique_name) == len(outside.unique_name)
    assert (r.error_name, r.body()[0]) == (NOT_CONTAINER,
                                           want.body()[0].replace(outside.unique_name, other.unique_name))
    # unmediated callers, inside or out, are told
    free = cb.join(cb.add_server(creator))
    for asker in (outside, free):
        assert cb.ccall(asker, "GetConnectionInstance", "s", (other.unique_name,)).body()[2] == "org.example.Secret"


def test_list_queued_owners_needs_own_and_lists_only_visible_owners(cb):
    primary = owner_of(cb, "org.example.Q")
    queued = cb.client()
    assert queued.bus_ok("RequestName", "su", ("org.example.Q", 0)) == [2]
    creator = cb.client()
    _, inner = mediated(cb, (OWN, "org.example.Q", ANY, ""), creator=creator)
    _, no_own = mediated(cb, (SEE, "org.example.Q", ANY, ""), creator=creator)
    assert inner.bus_ok("RequestName", "su", ("org.example.Q", 0)) == [2]
    outside_view = queued.bus_ok("ListQueuedOwners", "s", ("org.example.Q",))[0]
    assert outside_view == [primary.unique_name, queued.unique_name, inner.unique_name]
    # the primary owner is seen through the name's rule, the other queued
    # connection owns nothing the rules name
    assert inner.bus_ok("ListQueuedOwners", "s", ("org.example.Q",)) == [[primary.unique_name,
                                                                          inner.unique_name]]
    # without OWN on the name: AccessDenied whatever the name
    for name in ("org.example.Q", BUS_NAME, primary.unique_name, "org.example.Nobody"):
        assert no_own.bus_error("ListQueuedOwners", "s", (name,))[0] == ACCESS_DENIED, name


def test_start_service_by_name_needs_talk(cb, tmp_path):
    spawner = cb.with_activation(tmp_path, "com.example.Act", SVC)
    running = owner_of(cb, SVC)
    creator = cb.client()
    _, blind = mediated(cb, creator=creator)
    _, seeing = mediated(cb, (SEE, "com.example.Act", ANY, ""), (SEE, SVC, ANY, ""), creator=creator)
    _, talking = mediated(cb, (CALL, "com.example.Act", "/x", ""), (CALL, SVC, "/x", ""), creator=creator)
    for name in ("com.example.Act", SVC):
        got = blind.bus_error("StartServiceByName", "su", (name, 0))
        want = blind.bus_error("StartServiceByName", "su", ("com.example.Nev", 0))
        assert got == (want[0], want[1].replace("com.example.Nev", name)), name
        got = seeing.bus_error("StartServiceByName", "su", (name, 0))
        assert got[0] == ACCESS_DENIED and f"start {name}" in got[1]
    assert spawner.children == []
    assert talking.bus_ok("StartServiceByName", "su", (SVC, 0)) == [2]  # already running
    talking.driver("StartServiceByName", "su", ("com.example.Act", 0))
    assert len(spawner.children) == 1
    assert running.received() == []


@pytest.mark.parametrize("member,sig,body,unmediated_error", [
    ("RequestName", "su", (":1.5", 0), INVALID_ARGS),
    ("RequestName", "su", (BUS_NAME, 0), INVALID_ARGS),
    ("RequestName", "su", ("not..valid", 0), INVALID_ARGS),
    ("ReleaseName", "s", (BUS_NAME,), INVALID_ARGS),
    ("ReleaseName", "s", ("org.example.NotMine",), None),  # answers NOT_OWNER (3)
    ("ListQueuedOwners", "s", (BUS_NAME,), None),
    ("ListQueuedOwners", "s", ("org.example.Nobody",), NAME_HAS_NO_OWNER),
])
def test_own_is_checked_before_anything_else(cb, member, sig, body, unmediated_error):
    creator = cb.client()
    _, inner = mediated(cb, creator=creator)
    name, text = inner.bus_error(member, sig, body)
    assert name == ACCESS_DENIED and "own the name" in text, text
    # for comparison: what a contained connection without rules is told
    free = cb.join(cb.add_server(creator))
    r = free.bus_call(member, sig, body)
    assert (r.error_name if r.type == ERROR else None) == unmediated_error


def test_get_id_denied_to_mediated_only(cb):
    creator = cb.client()
    _, inner = mediated(cb, creator=creator)
    name, text = inner.bus_error("GetId")
    assert name == ACCESS_DENIED and "bus id" in text
    assert inner.bus_error("GetId", interface=None)[0] == ACCESS_DENIED
    free = cb.join(cb.add_server(creator))
    assert free.bus_ok("GetId") == [cb.bus.settings.guid]
    # the machine id is not the bus id
    assert inner.bus_call("GetMachineId", interface="org.freedesktop.DBus.Peer").type == METHOD_RETURN


PRIVILEGED = [
    (CIFACE, "AddServer", "ssa{sv}a{sv}", ("com.example.App", "", {}, {})),
    (CIFACE, "StopListening", "o", ("/org/freedesktop/DBus/Containers1/c1",)),
    (CIFACE, "StopInstance", "o", ("/org/freedesktop/DBus/Containers1/c1",)),
    (CIFACE, "GrantAccess", "oa(uos)", ("/", [])),
    (CIFACE, "RevokeAccess", "oa(uos)", ("/", [])),
    (CIFACE, "ListInstances", "", ()),
    (CIFACE, "GetLearnedRules", "o", ("/org/freedesktop/DBus/Containers1/c1",)),
    (BUS_IFACE, "UpdateActivationEnvironment", "a{ss}", ({"A": "b"},)),
    (BUS_IFACE, "ReloadConfig", "", ()),
    ("org.freedesktop.DBus.Monitoring", "BecomeMonitor", "asu", ([], 0)),
    ("org.freedesktop.DBus.Debug.Stats", "GetStats", "", ()),
    ("org.freedesktop.DBus.Debug.Stats", "GetConnectionStats", "s", (BUS_NAME,)),
    ("org.freedesktop.DBus.Debug.Stats", "GetAllMatchRules", "", ()),
]


NESTING_METHODS = ("AddServer", "StopListening", "StopInstance")


def test_privileged_rows_of_the_table(cb):
    """The table flags every method that must never be called from inside."""
    rows = {(r.interface, r.member) for r in cb.bus.driver.methods.values() if r.privileged}
    assert rows == {(iface, member) for iface, member, _, _ in PRIVILEGED}


@pytest.mark.parametrize("rules", [None, [], [(TALK | OWN | NAME_SUBTREE | PATH_SUBTREE, "org.freedesktop", ANY, "")]],
                         ids=["unmediated", "mediated", "mediated-with-rules"])
@pytest.mark.parametrize("iface,member,sig,body", PRIVILEGED, ids=[p[1] for p in PRIVILEGED])
def test_privileged_methods_denied_inside(cb, rules, iface, member, sig, body):
    creator = cb.client()
    inst = cb.add_server(creator, rules)
    inner = cb.join(inst)
    before = dict(cb.manager.instances)
    # A mediated instance may nest narrower instances (docs/containers.md):
    # these three are refused there for what the request would widen or
    # reach, and the text says so; everything else is never callable inside.
    nesting = rules is not None and member in NESTING_METHODS
    for interface in (iface, None):
        name, text = inner.bus_error(member, sig, body, interface=interface)
        assert name == ACCESS_DENIED, text
        assert ("nested" if nesting else "inside a container") in text, text
    assert cb.manager.instances == before and inst.listener.accepting
    assert not inner.peer.is_monitor and inner.closed is None


def test_name_owner_changed_is_filtered(cb):
    inst, inner = mediated(cb, (SEE, "com.example.Seen", ANY, ""))
    inner.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    inner.clear()
    out = cb.client()  # its arrival is hidden from inner too
    seen = owner_of(cb, "com.example.Seen")
    hidden = owner_of(cb, "com.example.Hidden")
    sibling = cb.join(inst)
    hidden.bus_ok("ReleaseName", "s", ("com.example.Hidden",))
    seen.bus_ok("ReleaseName", "s", ("com.example.Seen",))
    got = [tuple(m.body()) for m in inner.signals("NameOwnerChanged")]
    assert got == [("com.example.Seen", "", seen.unique_name), (sibling.unique_name, "", sibling.unique_name),
                   ("com.example.Seen", seen.unique_name, "")]
    # an outside watcher gets all of them
    out.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    owner_of(cb, "com.example.Hidden")
    assert len(out.signals("NameOwnerChanged")) == 2  # its unique name, then the name


def test_instance_removed_is_not_broadcast_into_mediated_instances(cb):
    creator = cb.client()
    _, inner = mediated(cb, creator=creator)
    watcher = cb.client()
    match = f"type='signal',interface='{CIFACE}'"
    for c in (inner, watcher):
        c.bus_ok("AddMatch", "s", (match,))
    other = cb.add_server(creator)
    assert cb.ccall(creator, "StopListening", "o", (other.path,)).type == METHOD_RETURN
    assert [m.body() for m in watcher.signals("InstanceRemoved")] == [[other.path]]
    assert inner.signals() == []


# -- grants -------------------------------------------------------------------------------------------

DCONF = "ca.desrt.dconf"
DCONF_PATH = "/ca/desrt/dconf/Writer/user"
WRITER = "ca.desrt.dconf.Writer"


def dconf_outcome(inner, dconf, path=DCONF_PATH):
    return outcome(inner, DCONF, dconf, path=path, iface=WRITER, member="Change")


def test_grant_and_revoke_access(cb):
    dconf = owner_of(cb, DCONF)
    inst, inner = mediated(cb)
    _, elsewhere = mediated(cb)
    grant = [(CALL, DCONF_PATH, WRITER)]
    assert dconf_outcome(inner, dconf)[0] == SERVICE_UNKNOWN
    assert cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, grant)).type == METHOD_RETURN
    assert dconf_outcome(inner, dconf) == ("ok", ("echo",))
    assert dconf_outcome(inner, dconf, "/ca/desrt/dconf/Other")[0] == ACCESS_DENIED
    assert sees(inner, DCONF) and sees(inner, dconf.unique_name)
    assert dconf_outcome(elsewhere, dconf)[0] == SERVICE_UNKNOWN  # granted to one instance only
    # "/" grants to every instance; granted twice, revoked once: still granted
    cb.ccall(dconf, "GrantAccess", "oa(uos)", ("/", grant))
    assert dconf_outcome(elsewhere, dconf) == ("ok", ("echo",))
    cb.ccall(dconf, "GrantAccess", "oa(uos)", ("/", grant))
    cb.ccall(dconf, "RevokeAccess", "oa(uos)", ("/", grant))
    assert dconf_outcome(elsewhere, dconf) == ("ok", ("echo",))
    cb.ccall(dconf, "RevokeAccess", "oa(uos)", ("/", grant))
    assert dconf_outcome(elsewhere, dconf)[0] == SERVICE_UNKNOWN
    assert dconf_outcome(inner, dconf) == ("ok", ("echo",))
    cb.ccall(dconf, "RevokeAccess", "oa(uos)", (inst.path, grant))
    assert dconf_outcome(inner, dconf)[0] == SERVICE_UNKNOWN and not sees(inner, DCONF)
    # revoking what was never granted is harmless
    assert cb.ccall(dconf, "RevokeAccess", "oa(uos)", (inst.path, grant)).type == METHOD_RETURN


def test_a_grant_names_its_granter_only(cb):
    dconf = owner_of(cb, DCONF)
    thief = cb.client()
    inst, inner = mediated(cb)
    # another connection cannot grant access to dconf, nor revoke dconf's grant
    cb.ccall(thief, "GrantAccess", "oa(uos)", (inst.path, [(CALL | PATH_SUBTREE, ANY, "")]))
    assert dconf_outcome(inner, dconf)[0] == SERVICE_UNKNOWN
    assert sees(inner, thief.unique_name)
    cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, [(CALL, DCONF_PATH, WRITER)]))
    cb.ccall(thief, "RevokeAccess", "oa(uos)", (inst.path, [(CALL, DCONF_PATH, WRITER)]))
    assert dconf_outcome(inner, dconf) == ("ok", ("echo",))


def test_name_owner_changed_of_a_name_seen_through_a_grant(cb):
    """Regression: a name seen only through its owner's grant was seen to
    come but never to go (at NameOwnerChanged time the registry no longer
    knows the old owner), so a GDBus name watcher inside kept believing
    dconf was there."""
    dconf = owner_of(cb, DCONF)
    inst, inner = mediated(cb)
    cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, [(CALL, DCONF_PATH, WRITER)]))
    inner.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    dconf.bus_ok("ReleaseName", "s", (DCONF,))
    dconf.bus_ok("RequestName", "su", (DCONF, 0))
    other = owner_of(cb, "com.example.Other")  # nothing granted: unseen
    other.bus_ok("RequestName", "su", (DCONF, 0))  # queued behind dconf
    cb.bus.disconnect(dconf.peer)  # the name passes to other
    got = [tuple(m.body()) for m in inner.signals("NameOwnerChanged")]
    u = dconf.unique_name
    assert got == [(DCONF, u, ""), (DCONF, "", u), (DCONF, u, other.unique_name), (u, u, "")]
    assert not sees(inner, DCONF)  # the grant went with dconf, and other granted nothing


def test_grants_end_when_the_granter_disconnects(cb):
    dconf = owner_of(cb, DCONF)
    inst, inner = mediated(cb)
    cb.ccall(dconf, "GrantAccess", "oa(uos)", ("/", [(CALL, DCONF_PATH, WRITER)]))
    cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, [(CALL, DCONF_PATH, WRITER)]))
    assert sees(inner, DCONF)
    cb.bus.disconnect(dconf.peer)
    successor = owner_of(cb, DCONF)
    assert not sees(inner, DCONF)
    assert dconf_outcome(inner, successor)[0] == SERVICE_UNKNOWN
    assert all(not rs.rules for rs in cb.access.grants.values())


def test_grant_access_arguments(cb):
    dconf = owner_of(cb, DCONF)
    inst, inner = mediated(cb)
    for flags in (NAME_SUBTREE | CALL, OWN, OWN | CALL):
        r = cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, [(flags, ANY, "")]))
        assert r.error_name == INVALID_ARGS, flags
    for rule in ((64, ANY, ""), (CALL, ANY, "not an interface"), (CALL, ANY, "noDots")):
        assert cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, [rule])).error_name == INVALID_ARGS, rule
    for member in ("GrantAccess", "RevokeAccess"):
        r = cb.ccall(dconf, member, "oa(uos)", ("/org/freedesktop/DBus/Containers1/c99", []))
        assert r.error_name == NOT_CONTAINER
    assert not sees(inner, DCONF)


def test_grants_to_a_removed_instance_go_with_it(cb):
    dconf = owner_of(cb, DCONF)
    creator = cb.client()
    inst = cb.add_server(creator, [])
    cb.ccall(dconf, "GrantAccess", "oa(uos)", (inst.path, [(CALL, DCONF_PATH, WRITER)]))
    assert inst.path in cb.access.grants
    assert cb.ccall(creator, "StopListening", "o", (inst.path,)).type == METHOD_RETURN
    assert inst.path not in cb.access.grants and inst.path not in cb.manager.instances


# -- container to container ---------------------------------------------------------------------------


def test_two_mediated_instances_need_rules_on_both_sides(cb):
    creator = cb.client()
    _, a = mediated(cb, (OWN, "org.example.A", ANY, ""), (TALK | PATH_SUBTREE, "org.example.B", ANY, ""),
                    creator=creator)
    assert a.bus_ok("RequestName", "su", ("org.example.A", DO_NOT_QUEUE)) == [1]
    _, b1 = mediated(cb, (OWN, "org.example.B", ANY, ""), creator=creator)
    assert b1.bus_ok("RequestName", "su", ("org.example.B", DO_NOT_QUEUE)) == [1]
    got = outcome(a, "org.example.B", b1)
    assert got[0] == ACCESS_DENIED and "whose container has no rule for it" in got[1], got
    a.signal("Sig", destination="org.example.B")
    assert b1.received() == []
    # b1 cannot call a either: a's name is hidden from it
    assert_hidden(b1, "org.example.A")
    b1.bus_ok("ReleaseName", "s", ("org.example.B",))
    _, b2 = mediated(cb, (OWN, "org.example.B", ANY, ""), (SEE, "org.example.A", ANY, ""), creator=creator)
    b2.bus_ok("RequestName", "su", ("org.example.B", DO_NOT_QUEUE))
    assert outcome(a, "org.example.B", b2) == ("ok", ("echo",))
    # b2 sees a but may not call it; a's rules would let a be called by b2
    assert outcome(b2, "org.example.A", a)[0] == ACCESS_DENIED


def test_broadcasts_between_mediated_instances_need_both_sides(cb):
    creator = cb.client()
    _, sender = mediated(cb, (OWN, "org.example.S", ANY, ""), creator=creator)
    sender.bus_ok("RequestName", "su", ("org.example.S", 0))
    _, one_sided = mediated(cb, (BROADCASTS | PATH_SUBTREE, "org.example.S", ANY, ""), creator=creator)
    one_sided.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Sig'",))
    sender.signal("Hi", interface="com.example.Sig")
    assert one_sided.signals() == []
    _, s2 = mediated(cb, (OWN, "org.example.S2", ANY, ""), (SEE, "", ANY, ""), creator=creator)
    s2.bus_ok("RequestName", "su", ("org.example.S2", 0))
    _, r2 = mediated(cb, (BROADCASTS | PATH_SUBTREE, "org.example.S2", ANY, ""), creator=creator)
    r2.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Sig'",))
    s2.signal("Hi2", interface="com.example.Sig")
    assert [m.member for m in r2.signals()] == ["Hi2"]


def test_unmediated_instances_are_not_confined(cb):
    creator = cb.client()
    u1 = cb.join(cb.add_server(creator))
    u2 = cb.join(cb.add_server(creator))
    u2.bus_ok("RequestName", "su", ("org.example.U", 0))
    assert outcome(u1, "org.example.U", u2) == ("ok", ("echo",))
    assert outcome(u1, "org.example.U", u2, fds=(FD,)) == ("ok", ("echo",))
    # a mediated instance may call into an unmediated one with its own rules
    _, m = mediated(cb, (CALL | PATH_SUBTREE, "org.example.U", ANY, ""), creator=creator)
    assert outcome(m, "org.example.U", u2) == ("ok", ("echo",))
    # and an unmediated contained connection calls into a mediated one as
    # an outside connection would
    assert outcome(u1, m.unique_name, m) == ("ok", ("echo",))


# -- replies ------------------------------------------------------------------------------------------


def test_calls_out_get_one_reply(cb):
    svc = owner_of(cb, SVC)
    _, inner = mediated(cb, (CALL | PATH_SUBTREE, SVC, ANY, ""))
    serial = inner.call(SVC, "Echo", path=PATH, interface=IFACE)
    [call] = calls_to(svc)
    svc.reply(call, "s", ("one",))
    svc.reply(call, "s", ("two",))
    svc.error(call)
    got = [m for m in inner.received() if m.type in (METHOD_RETURN, ERROR)]
    assert [(m.reply_serial, m.body()) for m in got] == [(serial, ["one"])]


def test_unrequested_replies_across_the_boundary_are_dropped(cb):
    out = owner_of(cb, SVC)
    _, inner = mediated(cb, (SEE, SVC, ANY, ""))
    serial = inner.call(SVC, "Echo", path=PATH, interface=IFACE)  # denied: nothing owed
    assert inner.reply_to(serial).error_name == ACCESS_DENIED
    for mtype, extra in ((METHOD_RETURN, {}), (ERROR, {"error_name": "com.example.Err"})):
        out.send(mtype, reply_serial=serial, destination=inner.unique_name, **extra)
        assert inner.received() == []
        inner.send(mtype, reply_serial=4242, destination=SVC, **extra)
        inner.send(mtype, reply_serial=4242, destination=out.unique_name, **extra)
        assert out.received() == [] and inner.received() == []  # dropped silently: the name is visible


def test_unrequested_reply_to_a_hidden_name_is_answered_as_missing(cb):
    owner_of(cb, "com.example.Abc")
    _, inner = mediated(cb)
    for mtype, extra in ((METHOD_RETURN, {}), (ERROR, {"error_name": "com.example.Err"})):
        answers = []
        for dest in ("com.example.Abc", "com.example.Xyz"):
            inner.send(mtype, serial=77, reply_serial=4242, destination=dest, **extra)
            [r] = inner.received()
            answers.append((r.error_name, r.reply_serial, r.body()[0].replace(dest, "NAME")))
        assert answers[0] == answers[1] and answers[0][0] == SERVICE_UNKNOWN


def test_replies_within_and_from_outside_callers(cb):
    """Requested replies pass whatever the rules; a reply owed to a caller
    goes to that caller only."""
    out = cb.client()
    inst, inner = mediated(cb)
    sibling = cb.join(inst)
    serial = out.call(inner.unique_name, "Echo", path=PATH, interface=IFACE)
    [call] = calls_to(inner)
    # someone else answering inner's call for it is dropped
    sibling.send(METHOD_RETURN, reply_serial=serial, destination=out.unique_name)
    assert out.received() == []
    inner.reply(call)
    assert [m.reply_serial for m in out.received()] == [serial]


# -- process handles, the CONTAINER_INSTANCE header ------------------------------------------------------


@pytest.mark.parametrize("rules", [None, [(SEE, SVC, ANY, "")]], ids=["unmediated", "mediated"])
def test_no_process_fd_of_an_outside_process_to_a_contained_caller(cb, rules):
    svc = owner_of(cb, SVC, sink=PidfdSink(71))
    inst = cb.add_server(cb.client(), rules)
    inner = cb.join(inst, sink=PidfdSink(72))
    sibling = cb.join(inst, sink=PidfdSink(73))
    for name in (SVC, svc.unique_name):
        r = inner.bus_call("GetConnectionCredentials", "s", (name,))
        creds = r.body()[0]
        assert "ProcessFD" not in creds and r.fds == () and creds["ProcessID"].value == 4321, name
    r = inner.bus_call("GetConnectionCredentials", "s", (sibling.unique_name,))
    assert r.body()[0]["ProcessFD"].value == 0 and r.fds == (73,)
    assert r.body()[0]["org.freedesktop.DBus.Containers1.Instance"].value == inst.path
    # outside, a caller gets the handle of anyone
    r = svc.bus_call("GetConnectionCredentials", "s", (inner.unique_name,))
    assert r.fds == (72,) and r.body()[0]["ProcessFD"].value == 0


def test_container_instance_header(cb):
    inst, inner = mediated(cb, (CALL | PATH_SUBTREE, "", ANY, ""))
    free_inst = cb.add_server(cb.client())
    free = cb.join(free_inst)
    rc = cb.client()
    out = cb.client()

    def field10(sender, member):
        sender.signal(member, destination=rc.unique_name)
        [m] = rc.received()
        assert m.member == member
        return header_fields(m.data).get(10)

    assert field10(inner, "Before") is None
    assert cb.ccall(rc, "RequestHeader").type == METHOD_RETURN
    assert field10(inner, "Inside") == inst.path
    assert field10(free, "Free") == free_inst.path
    assert field10(out, "Outside") == "/"
    # the driver's messages carry "/"
    serial = rc.driver("GetNameOwner", "s", (BUS_NAME,))
    assert header_fields(rc.reply_to(serial).data)[10] == "/"
    # a forged field 10 is stripped and replaced, in calls, replies and broadcasts
    out.send_raw(build_message(SIGNAL, 99, path="/x", interface="com.example.Sig", member="Forged",
                               destination=rc.unique_name, container_instance=inst.path))
    [m] = rc.received()
    assert header_fields(m.data)[10] == "/"
    rc.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.B'",))
    inner.signal("Broadcast", interface="com.example.B")
    [m] = rc.received()
    assert header_fields(m.data)[10] == inst.path
    # replies to calls into the instance too, and inner never gets field 10
    serial = rc.call(inner.unique_name, "Echo", path=PATH, interface=IFACE)
    [call] = calls_to(inner)
    assert 10 not in header_fields(call.data)
    inner.reply(call)
    assert header_fields(rc.reply_to(serial).data)[10] == inst.path


# -- learn mode ---------------------------------------------------------------------------------------


def test_learn_mode_allows_and_records(cb):
    svc = owner_of(cb, SVC)
    other = owner_of(cb, "com.example.Other")
    creator = cb.client()
    inst, inner = mediated(cb, (SEE, "com.example.Other", ANY, ""), creator=creator, learn=True)
    assert outcome(inner, SVC, svc) == ("ok", ("echo",))
    assert inner.bus_ok("RequestName", "su", ("org.example.Mine", 0)) == [1]
    inner.bus_ok("AddMatch", "s", ("type='signal',interface='com.example.Sig'",))
    svc.signal("Tick", path="/tick", interface="com.example.Sig")
    assert [m.member for m in inner.signals() if m.interface == "com.example.Sig"] == ["Tick"]
    assert outcome(inner, "com.example.Other", other)[0] == "ok"
    r = cb.ccall(creator, "GetLearnedRules", "o", (inst.path,))
    rules, proxy_args = r.body()
    rules = [tuple(x) for x in rules]
    assert (SEE, "com.example.Other", ANY, "") == rules[0]  # its own rules first
    assert any(f & CALL and n == SVC for f, n, _, _ in rules), rules
    assert any(f & OWN and n == "org.example.Mine" for f, n, _, _ in rules), rules
    assert any(f & BROADCASTS and n == SVC for f, n, _, _ in rules), rules
    assert any(f & CALL and n == "com.example.Other" for f, n, _, _ in rules), rules
    assert proxy_args

def test_learn_mode_listing_names_records_nothing(cb, tmp_path):
    """Regression: a listing asked the view's lookup (sees), so one
    ListNames in learn mode learned SEE of every name on the bus."""
    cb.with_activation(tmp_path, "com.example.Act")
    svc = owner_of(cb, SVC)
    queued = cb.client()
    queued.bus_ok("RequestName", "su", ("org.example.Mine", 0))
    creator = cb.client()
    inst, inner = mediated(cb, (OWN, "org.example.Mine", ANY, ""), creator=creator, learn=True)
    # learn mode lists everything ...
    assert {SVC, svc.unique_name, queued.unique_name} <= set(inner.bus_ok("ListNames")[0])
    assert "com.example.Act" in inner.bus_ok("ListActivatableNames")[0]
    assert inner.bus_ok("ListQueuedOwners", "s", ("org.example.Mine",)) == [[queued.unique_name]]
    r = cb.ccall(creator, "GetLearnedRules", "o", (inst.path,))
    # ... without learning that it may see all of it
    assert r.body() == [[(OWN, "org.example.Mine", ANY, "")], ["--own=org.example.Mine"]]
    # a lookup is learned
    assert sees(inner, SVC)
    r = cb.ccall(creator, "GetLearnedRules", "o", (inst.path,))
    assert (SEE, SVC, ANY, "") in r.body()[0]


def test_listing_names_logs_no_denials(cb, caplog, tmp_path):
    """A listing leaves hidden names out; that is no denial to log (the
    log is for what the app tried and was refused)."""
    cb.with_activation(tmp_path, "com.example.Act")
    owner_of(cb, SVC, "org.example.Q")
    queued = cb.client()
    queued.bus_ok("RequestName", "su", ("org.example.Q", 0))
    _, inner = mediated(cb, (OWN, "org.example.Q", ANY, ""))
    with caplog.at_level("INFO", logger="sandbus.containers.access"):
        names = inner.bus_ok("ListNames")[0]
        activatable = inner.bus_ok("ListActivatableNames")[0]
        owners = inner.bus_ok("ListQueuedOwners", "s", ("org.example.Q",))[0]
    assert SVC not in names and "com.example.Act" not in activatable and queued.unique_name not in owners
    assert caplog.records == [], [r.getMessage() for r in caplog.records]
    with caplog.at_level("INFO", logger="sandbus.containers.access"):
        assert not sees(inner, queued.unique_name)
    assert [r.getMessage() for r in caplog.records] != []  # a lookup is

# -- property: a hidden name is answered exactly like a name nobody owns --------------------------------

_label = st.sampled_from(["a", "b", "ab"])
_wk_name = st.lists(_label, min_size=1, max_size=2).map(lambda parts: "org.x." + ".".join(parts))
KINDS = [("call", 0), ("call", NO_REPLY_EXPECTED), ("call", NO_AUTO_START), ("call", NO_AUTO_START | 1),
         ("call-fd", 0), ("signal", 0), ("signal-fd", 0), ("return", 0), ("error", 0)] + \
        [("driver", (member, iface)) for member, iface in LOOKUPS] + \
        [("driver", ("StartServiceByName", BUS_IFACE)), ("driver", ("ListQueuedOwners", BUS_IFACE))]


def _send_kind(client, kind, arg, name, serial):
    if kind == "driver":
        member, iface = arg
        sig, body = ("su", (name, 0)) if member == "StartServiceByName" else ("s", (name,))
        client.send(METHOD_CALL, serial=serial, destination=BUS_NAME, path=BUS_PATH, interface=iface,
                    member=member, signature=sig, body=body)
    elif kind.startswith("call"):
        client.send(METHOD_CALL, serial=serial, destination=name, path="/a", interface="org.x.Y", member="M",
                    flags=arg, fds=(FD,) if kind.endswith("fd") else ())
    elif kind.startswith("signal"):
        client.send(SIGNAL, serial=serial, destination=name, path="/a", interface="org.x.Y", member="S",
                    fds=(FD,) if kind.endswith("fd") else ())
    else:
        extra = {"error_name": "org.x.Error"} if kind == "error" else {}
        client.send(METHOD_RETURN if kind == "return" else ERROR, serial=serial, reply_serial=1000 + serial,
                    destination=name, **extra)


def _answers(client, kind, arg, name, serial):
    _send_kind(client, kind, arg, name, serial)
    out = []
    for m in client.received():
        data = m.data
        if m.reply_serial is not None:
            data = normalised(data, m.reply_serial)
        out.append(data[:8] + bytes(4) + data[12:])
    return out


def _never(name: str) -> str:
    """A name nobody owns, as long as name, that no rule below names."""
    return ":1." + "9" * (len(name) - 3) if name.startswith(":") else "com.y" + name[5:]


@settings(max_examples=150, deadline=None)
@given(owned=st.lists(_wk_name, min_size=1, max_size=4, unique=True), data=st.data())
def test_hidden_is_answered_like_missing(owned, data):
    cb = make_container_bus()
    creator = cb.client()
    owners = []
    for i, name in enumerate(owned):
        k = data.draw(st.integers(0, len(owners)), label=f"owner of {name}")
        if k == len(owners):
            # outside, in an instance without rules, or in one whose rules let it own the names
            where = data.draw(st.sampled_from(["outside", "unmediated", "mediated"]), label="where")
            if where == "outside":
                owners.append(cb.client())
            else:
                rules = None if where == "unmediated" else [(OWN | NAME_SUBTREE, "org.x", ANY, "")]
                owners.append(cb.join(cb.add_server(creator, rules)))
        assert owners[k].bus_ok("RequestName", "su", (name, 0))[0] in (1, 2)
    uniques = [o.unique_name for o in owners]
    flags = st.one_of(st.sampled_from([SEE, CALL, CALL | PATH_SUBTREE, TALK | PATH_SUBTREE, BROADCASTS, OWN,
                                       CALL | FDS | PATH_SUBTREE, CALL | NAME_SUBTREE | PATH_SUBTREE]),
                      st.integers(0, 63))
    rule = st.tuples(flags, st.sampled_from(owned + uniques + ["org.x", "org"]),
                     st.sampled_from(["/", "/a", "/b"]), st.sampled_from(["", "org.x.Y", "org.x.Z"]))
    rules = []
    for flags, name, path, iface in data.draw(st.lists(rule, max_size=4), label="rules"):
        if name.startswith(":") or name == "org":
            flags &= ~(NAME_SUBTREE | OWN)
            name = "" if name == "org" else name  # "" is any name
        rules.append((flags, name, path, iface))
    _, inner = mediated(cb, *rules, creator=creator)
    for o in owners:
        o.clear()
    kinds = data.draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6, unique=True), label="kinds")
    for name in owned + uniques:
        if sees(inner, name):
            continue
        never = _never(name)
        for kind, arg in kinds:
            got = _answers(inner, kind, arg, name, 7)
            want = _answers(inner, kind, arg, never, 7)
            got = [m.replace(name.encode(), never.encode()) for m in got]
            assert got == want and len(got) == 1, (name, kind, arg, rules)
        for o in owners:
            assert o.received() == [], (name, rules)


# -- calls without an INTERFACE field ---------------------------------------------------------------------


def test_containers_methods_without_interface_field(cb):
    """Regression: GrantAccess without an interface field was answered
    UnknownMethod while AddServer worked (the driver finds every row of
    its table by member, the containers' rows too)."""
    granter = owner_of(cb, "com.example.Granter")
    creator = cb.client()
    data = build_message(METHOD_CALL, 1, path=BUS_PATH, member="GrantAccess", destination=BUS_NAME,
                         signature="oa(uos)", body=("/", []))
    assert 2 not in header_fields(data)  # what interface=None sends

    def ok(client, member, sig="", body=()):
        r = client.bus_call(member, sig, body, interface=None)
        assert r.type == METHOD_RETURN, (member, r.error_name, r.body())
        return r.body()

    path, _, _ = ok(creator, "AddServer", "ssa{sv}a{sv}",
                    ("com.example.App", "app", {}, {"Allow": Variant("a(usos)", [])}))
    inst = cb.manager.instances[path]
    inner = cb.join(inst)
    assert not sees(inner, "com.example.Granter")
    assert ok(granter, "GrantAccess", "oa(uos)", (path, [(CALL, ANY, "")])) == []
    assert sees(inner, "com.example.Granter")
    assert ok(granter, "RevokeAccess", "oa(uos)", (path, [(CALL, ANY, "")])) == []
    assert not sees(inner, "com.example.Granter")
    assert ok(granter, "GetConnectionInstance", "s", (inner.unique_name,))[0] == path
    assert ok(granter, "GetInstanceInfo", "o", (path,))[1] == "com.example.App"
    assert [i[0] for i in ok(creator, "ListInstances")[0]] == [path]
    assert ok(granter, "RequestHeader") == [] and granter.peer.wants_instance_header
    assert ok(creator, "StopListening", "o", (path,)) == [] and not inst.listening
    # the core's rows too, and from inside the instance
    assert ok(inner, "GetNameOwner", "s", (BUS_NAME,)) == [BUS_NAME]
    assert ok(inner, "ListNames")[0] == [BUS_NAME, inner.unique_name]
    # still refused from inside when privileged, and only on the driver's path
    assert inner.bus_error("GrantAccess", "oa(uos)", ("/", []), interface=None)[0] == ACCESS_DENIED
    # without an interface, the member is looked for only among the
    # interfaces on that path (bus/driver.c), so it is an unknown method there
    assert granter.bus_error("ListInstances", interface=None, path="/")[0] == ERR + "UnknownMethod"
    assert granter.bus_error("ListInstances", interface=CIFACE, path="/")[0] == ERR + "UnknownInterface"


# -- property: the rules decide as docs/containers.md says -------------------------------------------------


def _covers(rule, name, path=None, iface=None) -> bool:
    """docs/containers.md's reading of one rule (flags, name, path, interface),
    written out independently of containers/rules.py."""
    flags, rname, rpath, riface = rule
    if rname and name != rname and not (flags & NAME_SUBTREE and name.startswith(rname + ".")):
        return False
    if path is not None and path != rpath and not (
            flags & PATH_SUBTREE and (rpath == "/" or path.startswith(rpath + "/"))):
        return False
    return iface is None or riface in ("", iface)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_rules_decide_as_documented(data):
    cb = make_container_bus()
    names = ["org.x.a", "org.x.a.b", "org.x.c", "org.y"]
    owners = [cb.client() for _ in range(data.draw(st.integers(1, 3), label="owners"))]
    for name in data.draw(st.lists(st.sampled_from(names), unique=True), label="owned"):
        owner = data.draw(st.sampled_from(owners), label=f"owner of {name}")
        assert owner.bus_ok("RequestName", "su", (name, DO_NOT_QUEUE)) == [1]
    uniques = [o.unique_name for o in owners]
    rule = st.tuples(st.integers(0, 63), st.sampled_from(names + ["org.x", ""] + uniques),
                     st.sampled_from(["/", "/p", "/p/q"]), st.sampled_from(["", "org.x.I", "org.x.J"]))
    rules = []
    for flags, name, path, iface in data.draw(st.lists(rule, max_size=5), label="rules"):
        if not name or name.startswith(":"):
            flags &= ~(NAME_SUBTREE | OWN)
        rules.append((flags, name, path, iface))
    inst, inner = mediated(cb, *rules)
    # grants: a rule naming the granter's unique name, to this instance or to all
    grant = st.tuples(st.sampled_from(owners), st.sampled_from([inst.path, "/"]),
                      st.sampled_from([0, CALL, CALL | PATH_SUBTREE, BROADCASTS | PATH_SUBTREE, CALL | FDS]),
                      st.sampled_from(["/", "/p"]), st.sampled_from(["", "org.x.I"]))
    for granter, where, flags, path, iface in data.draw(st.lists(grant, max_size=2), label="grants"):
        assert cb.ccall(granter, "GrantAccess", "oa(uos)", (where, [(flags, path, iface)])).type == METHOD_RETURN
        rules.append((flags, granter.unique_name, path, iface))
    by_unique = {o.unique_name: o for o in owners}

    def any_rule(flag, names_, path=None, iface=None):
        return any(r[0] & flag and _covers(r, n, path, iface) for r in rules for n in names_)

    def all_names(o):
        return [o.unique_name, *sorted(o.peer.names)]

    def visible(dest):
        if dest.startswith(":"):
            return any(_covers(r, n) for r in rules for n in all_names(by_unique[dest]))
        owner = next(o for o in owners if dest in o.peer.names)
        return any(_covers(r, n) for r in rules for n in (dest, owner.unique_name))

    owned = [n for o in owners for n in sorted(o.peer.names)]
    for dest in data.draw(st.lists(st.sampled_from(owned + uniques), min_size=1, max_size=4), label="dests"):
        owner = by_unique[dest] if dest.startswith(":") else next(o for o in owners if dest in o.peer.names)
        considered = all_names(owner) if dest.startswith(":") else [dest, owner.unique_name]
        path = data.draw(st.sampled_from(["/", "/p", "/p/q", "/p/qr", "/z"]), label="path")
        iface = data.draw(st.sampled_from(["org.x.I", "org.x.J"]), label="interface")
        fds = data.draw(st.sampled_from([(), (FD,)]), label="fds")
        assert sees(inner, dest) == visible(dest), (dest, rules)
        got = outcome(inner, dest, owner, path=path, iface=iface, fds=fds)
        if any_rule(CALL, considered, path, iface) and (not fds or any_rule(FDS, considered)):
            assert got == ("ok", ("echo",)), (dest, path, iface, fds, rules, got)
        elif visible(dest):
            assert got[0] == ACCESS_DENIED, (dest, path, iface, fds, rules, got)
        else:
            assert got[0] == SERVICE_UNKNOWN, (dest, path, iface, fds, rules, got)
    # broadcasts are judged by all the sender's names
    inner.bus_ok("AddMatch", "s", ("type='signal',interface='org.x.I'",))
    for o in owners:
        path = data.draw(st.sampled_from(["/", "/p", "/p/q", "/z"]), label="signal path")
        o.signal("Tick", path=path, interface="org.x.I")
        got = [m.sender for m in inner.signals("Tick")]
        assert got == ([o.unique_name] if any_rule(BROADCASTS, all_names(o), path, "org.x.I") else []), \
            (all_names(o), path, rules)


def test_monitor_that_asked_gets_the_instance_in_each_copy(cb):
    """RequestHeader then BecomeMonitor: the copies carry CONTAINER_INSTANCE
    (the sender's instance, "/" outside any and for the bus), so a monitor
    needs no GetConnectionInstance race with senders that leave at once."""
    inst = cb.add_server(cb.client())
    inner = cb.join(inst)
    out = cb.client()
    plain, stamped = cb.client(), cb.client()
    assert cb.ccall(stamped, "RequestHeader").type == METHOD_RETURN
    for m in (plain, stamped):
        m.bus_ok("BecomeMonitor", "asu", ([], 0), interface="org.freedesktop.DBus.Monitoring")
    plain.clear()
    stamped.clear()
    inner.signal("FromInside")
    out.signal("FromOutside")
    inner.driver("GetId")

    def copies(mon):
        return [(m.member or m.type, header_fields(m.data).get(10)) for m in mon.received()]
    assert copies(stamped) == [("FromInside", inst.path), ("FromOutside", "/"), ("GetId", inst.path),
                               (METHOD_RETURN, "/")]
    assert copies(plain) == [("FromInside", None), ("FromOutside", None), ("GetId", None), (METHOD_RETURN, None)]
