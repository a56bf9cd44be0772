"""Containers1 access control (docs/containers.md, "Access rules"):
mediated instances are default-deny, hidden names look nonexistent,
Allow rules and GrantAccess/RevokeAccess open things up one by one."""

from __future__ import annotations

import os
import string
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_return, new_signal

from containers_util import (  # noqa: F401  (fixtures)
    ACCESS_DENIED,
    BROADCASTS,
    CALL,
    CIFACE,
    FDS,
    EXACT_MEMBER,
    NAME_SUBTREE,
    OWN,
    PATH_SUBTREE,
    SKIP_REFERENCE,
    TALK,
    ContainerBus,
    add_server,
    allow,
    call_msg,
    cbus,
    cbus_factory,
    ccall,
    raw_reply,
)
from itutil import (
    BUS_IFACE,
    BUS_NAME,
    BUS_PATH,
    DO_NOT_QUEUE,
    PRIMARY_OWNER,
    Background,
    Client,
    DBusErrorReply,
    Service,
    echo_service,
    is_signal,
    run,
)

pytestmark = SKIP_REFERENCE

ANY = "/"
SVC = "com.example.Svc"


def _assert_no(client, pred, what="message"):
    """Like Client.assert_no, synced with Peer.Ping (GetId is denied to
    mediated connections)."""
    client.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Peer", "Ping")
    bad = [m for m in client.inbox if pred(m)]
    assert not bad, f"unexpected {what}: {bad}"


def _mediated(cbus, *rules, creator=None):
    creator = creator or cbus.client()
    path, _, address = add_server(creator, named=allow(*rules))
    return path, address, creator


def _outcome(client, dest, path="/Test", iface="com.example.Test", member="Echo", sig="s", body=("x",),
             flags=0):
    """('ok', body) or (error name, text) of a method call."""
    m = call_msg(dest, path, iface, member, sig, body)
    m.header.flags |= flags
    r = client.call_msg(m)
    if r.header.message_type == MessageType.error:
        return (r.header.fields[HeaderFields.error_name], r.body[0] if r.body else "")
    return ("ok", r.body)


def _driver_answers(client, name):
    """Byte-level answers of the name-related driver calls for name."""
    out = []
    for member in ("GetNameOwner", "NameHasOwner", "GetConnectionUnixProcessID", "GetConnectionUnixUser",
                   "GetConnectionCredentials"):
        out.append(raw_reply(client, call_msg(BUS_NAME, BUS_PATH, BUS_IFACE, member, "s", (name,))))
    out.append(_outcome(client, name))
    out.append(_outcome(client, name, flags=2))  # NO_AUTO_START
    return out


def _subst(answers, old, new):
    def fix(v):
        if isinstance(v, str):
            return v.replace(old, new)
        if isinstance(v, tuple):
            return tuple(fix(x) for x in v)
        return v
    return [fix(a) for a in answers]


# -- hidden names ----------------------------------------------------------------------


def test_hidden_names_look_nonexistent(cbus):
    with echo_service(cbus.address, SVC) as svc:
        _, address, _ = _mediated(cbus)  # Allow present but empty
        inner = cbus.client(address)
        names = inner.bus("ListNames")[0]
        assert SVC not in names and svc.unique_name not in names
        assert inner.unique_name in names and BUS_NAME in names
        for hidden, never in ((SVC, "com.example.Never"), (svc.unique_name, ":1.9999")):
            got = _driver_answers(inner, hidden)
            want = _driver_answers(inner, never)
            assert _subst(got, hidden, never) == want, (got, want)
        assert not svc.calls


# -- a table of rule cases ---------------------------------------------------------------

CASES = [
    # (rules, path, iface, expected) for a call com.example.Test.Echo at path on SVC
    ([], "/Test", "com.example.Test", "hidden"),
    ([(0, SVC, ANY, "")], "/Test", "com.example.Test", ACCESS_DENIED),  # SEE only
    ([(BROADCASTS, SVC, ANY, "")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(CALL, SVC, "/Test", "")], "/Test", "com.example.Test", "ok"),
    ([(CALL, SVC, "/Test", "")], "/Test/sub", "com.example.Test", ACCESS_DENIED),
    ([(CALL | PATH_SUBTREE, SVC, "/Test", "")], "/Test/sub", "com.example.Test", "ok"),
    ([(CALL | PATH_SUBTREE, SVC, "/Test", "")], "/TestX", "com.example.Test", ACCESS_DENIED),
    ([(CALL | PATH_SUBTREE, SVC, ANY, "")], "/any/where", "com.example.Test", "ok"),
    ([(CALL, SVC, "/Test", "com.example.Test")], "/Test", "com.example.Test", "ok"),
    ([(CALL, SVC, "/Test", "com.example.Other")], "/Test", "com.example.Test", ACCESS_DENIED),
    ([(CALL | NAME_SUBTREE | PATH_SUBTREE, "com.example", ANY, "")], "/Test", "com.example.Test", "ok"),
    ([(CALL | NAME_SUBTREE | PATH_SUBTREE, "com.exam", ANY, "")], "/Test", "com.example.Test", "hidden"),
    ([(CALL | PATH_SUBTREE, "", ANY, "")], "/Test", "com.example.Test", "ok"),  # any name
    ([(CALL | PATH_SUBTREE, "com.example.Other", ANY, "")], "/Test", "com.example.Test", "hidden"),
]


@pytest.fixture(scope="module")
def shared_bus():
    b = ContainerBus()
    svc = echo_service(b.address, SVC)
    try:
        yield b
    finally:
        svc.stop()
        b.stop()


@pytest.mark.parametrize("rules,path,iface,expected", CASES)
def test_rule_table(shared_bus, rules, path, iface, expected):
    b = shared_bus
    creator = Client(b.address)
    try:
        _, address, _ = _mediated(b, *rules, creator=creator)
        with Client(address) as inner:
            got = _outcome(inner, SVC, path, iface)
            if expected == "hidden":
                assert got == _subst([_outcome(inner, "com.example.Never", path, iface)],
                                     "com.example.Never", SVC)[0]
                assert inner.bus("NameHasOwner", "s", SVC) == (False,)
            else:
                assert got[0] == expected, got
                assert inner.bus("NameHasOwner", "s", SVC) == (True,)
    finally:
        creator.close()


def test_own_bus_name(cbus):
    _, address, _ = _mediated(cbus, (OWN | NAME_SUBTREE, "org.example.App", ANY, ""),
                              (OWN, "org.example.Exact", ANY, ""))
    inner = cbus.client(address)
    for name in ("org.example.App", "org.example.App.Sub", "org.example.Exact"):
        assert inner.bus("RequestName", "su", name, DO_NOT_QUEUE) == (PRIMARY_OWNER,)
    for name in ("org.example.Exact.Sub", "org.example.Apple", "com.example.Other"):
        e = inner.bus_error("RequestName", "su", name, DO_NOT_QUEUE)
        assert e.name == ACCESS_DENIED
        assert inner.bus_error("ReleaseName", "s", name).name == ACCESS_DENIED
    assert inner.bus("ReleaseName", "s", "org.example.App.Sub") == (1,)
    # unmediated: no restriction; mediated without rule: nothing at all
    _, address2, _ = _mediated(cbus)
    assert cbus.client(address2).bus_error("RequestName", "su", "a.b", 0).name == ACCESS_DENIED


def test_receive_broadcasts(cbus):
    out = cbus.client()
    out.bus("RequestName", "su", SVC, 0)
    _, a_no, _ = _mediated(cbus, (CALL, SVC, ANY, ""))
    _, a_yes, _ = _mediated(cbus, (BROADCASTS, SVC, "/sig", "com.example.Sig"))
    _, a_plain, creator = _mediated(cbus)
    receivers = {}
    for key, addr in (("no", a_no), ("yes", a_yes), ("plain", a_plain)):
        c = cbus.client(addr)
        c.add_match("type='signal',interface='com.example.Sig'")
        receivers[key] = c
    out.send(new_signal(DBusAddress("/sig", interface="com.example.Sig"), "Hello"))
    out.send(new_signal(DBusAddress("/other", interface="com.example.Sig"), "Elsewhere"))
    out.bus("GetId")
    receivers["yes"].wait_signal("Hello")
    _assert_no(receivers["yes"], lambda m: is_signal(m, "Elsewhere"))
    for key in ("no", "plain"):
        _assert_no(receivers[key], lambda m: is_signal(m, interface="com.example.Sig"))
    # a mediated connection may send broadcasts; outside receives them
    out.add_match("type='signal',interface='com.example.Out'")
    receivers["plain"].send(new_signal(DBusAddress("/x", interface="com.example.Out"), "FromInside"))
    out.wait_signal("FromInside", sender=receivers["plain"].unique_name)


def test_send_unix_fds(cbus):
    with echo_service(cbus.address, SVC, enable_fds=True):
        _, a_no, _ = _mediated(cbus, (CALL | PATH_SUBTREE, SVC, ANY, ""))
        _, a_yes, _ = _mediated(cbus, (CALL | FDS | PATH_SUBTREE, SVC, ANY, ""))
        r, w = os.pipe()
        try:
            no = cbus.client(a_no, enable_fds=True)
            yes = cbus.client(a_yes, enable_fds=True)
            m = call_msg(SVC, "/Test", "com.example.Test", "Echo", "sh", ("x", r))
            got = no.call_msg(m)
            assert got.header.fields[HeaderFields.error_name] == ACCESS_DENIED
            m = call_msg(SVC, "/Test", "com.example.Test", "Echo", "sh", ("x", r))
            got = yes.call_msg(m)
            assert got.header.message_type == MessageType.method_return, got.body
        finally:
            os.close(r)
            os.close(w)


def test_unsolicited_replies_into_container_dropped(cbus):
    _, address, _ = _mediated(cbus)
    inner = cbus.client(address)
    out = cbus.client()
    # unsolicited reply and error into a container are dropped
    reply = new_method_return(call_msg(BUS_NAME, BUS_PATH, BUS_IFACE, "GetId"))
    reply.header.fields[HeaderFields.reply_serial] = 4242
    reply.header.fields[HeaderFields.destination] = inner.unique_name
    out.send(reply)
    out.bus("GetId")
    _assert_no(inner, lambda m: m.header.fields.get(HeaderFields.reply_serial) == 4242, what="unsolicited reply")


def test_caller_visible_to_called_connection(cbus):
    _, address, _ = _mediated(cbus)
    seen = {}

    def hi(m):
        return "s", ("hi",)

    contained = Service(address, None, {"Hi": hi})
    try:
        out = cbus.client()
        checker = Client(address)  # same instance, never called
        contained_probe = contained.client
        out.call(contained.unique_name, "/", "com.example.X", "Hi")
        # ask from the called connection itself: the service thread owns its
        # socket, so stop it first and reuse the connection
        contained._stop.set()
        contained._thread.join(timeout=5)
        seen["called"] = contained_probe.bus("NameHasOwner", "s", out.unique_name)
        seen["other"] = checker.bus("NameHasOwner", "s", out.unique_name)
        checker.close()
    finally:
        contained.client.close()
    assert seen == {"called": (True,), "other": (False,)}


def test_two_containers_need_rules_on_both_sides(cbus):
    a_rules = [(OWN, "org.example.A", ANY, ""), (TALK | PATH_SUBTREE, "org.example.B", ANY, "")]
    _, a_addr, _ = _mediated(cbus, *a_rules)
    _, b_one_sided, _ = _mediated(cbus, (OWN, "org.example.B", ANY, ""))
    a = cbus.client(a_addr)
    a.bus("RequestName", "su", "org.example.A", DO_NOT_QUEUE)
    with echo_service(b_one_sided, "org.example.B"):
        got = _outcome(a, "org.example.B")
        assert got[0] == ACCESS_DENIED, got
    _, b_both, _ = _mediated(cbus, (OWN, "org.example.B", ANY, ""), (0, "org.example.A", ANY, ""))
    with echo_service(b_both, "org.example.B"):
        assert _outcome(a, "org.example.B") == ("ok", ("x",))
    # unmediated instances are not confined by each other either way
    creator = cbus.client()
    _, _, u1 = add_server(creator)
    _, _, u2 = add_server(creator)
    with echo_service(u2, "org.example.U"):
        assert _outcome(cbus.client(u1), "org.example.U") == ("ok", ("x",))


def _as(service: Service, member, sig, *body):
    """Call the driver on a Service's own connection: pause its thread so
    the reply is not swallowed by the service loop."""
    import threading
    service._stop.set()
    service._thread.join(timeout=5)
    try:
        return service.client.call(BUS_NAME, BUS_PATH, CIFACE, member, sig, body)
    finally:
        service._stop.clear()
        service._thread = threading.Thread(target=service._loop, daemon=True)
        service._thread.start()


def test_grant_and_revoke_access_dconf(cbus):
    path = "/ca/desrt/dconf/Writer/user"
    handlers = {"Change": lambda m: ("s", ("tag",)), "Other": lambda m: ("s", ("no",))}
    dconf = Service(cbus.address, "ca.desrt.dconf", handlers)
    try:
        ipath, address, _ = _mediated(cbus)
        inner = cbus.client(address)
        assert _outcome(inner, "ca.desrt.dconf", path, "ca.desrt.dconf.Writer", "Change", None, ())[0] == \
            "org.freedesktop.DBus.Error.ServiceUnknown"
        grant = [(CALL, path, "ca.desrt.dconf.Writer")]
        _as(dconf, "GrantAccess", "oa(uos)", "/", grant)
        assert _outcome(inner, "ca.desrt.dconf", path, "ca.desrt.dconf.Writer", "Change", None, ()) == \
            ("ok", ("tag",))
        assert _outcome(inner, "ca.desrt.dconf", "/ca/desrt/dconf/Other", "ca.desrt.dconf.Writer",
                        "Change", None, ())[0] == ACCESS_DENIED
        assert inner.bus("NameHasOwner", "s", "ca.desrt.dconf") == (True,)
        # granted twice, revoked once: still granted
        _as(dconf, "GrantAccess", "oa(uos)", ipath, grant)
        _as(dconf, "RevokeAccess", "oa(uos)", "/", grant)
        assert _outcome(inner, "ca.desrt.dconf", path, "ca.desrt.dconf.Writer", "Change", None, ())[0] == "ok"
        _as(dconf, "RevokeAccess", "oa(uos)", ipath, grant)
        assert inner.bus("NameHasOwner", "s", "ca.desrt.dconf") == (False,)
        # grants end when the granter disconnects
        _as(dconf, "GrantAccess", "oa(uos)", "/", grant)
        assert inner.bus("NameHasOwner", "s", "ca.desrt.dconf") == (True,)
    finally:
        dconf.stop()
    dconf2 = Service(cbus.address, "ca.desrt.dconf", handlers)
    try:
        assert inner.bus("NameHasOwner", "s", "ca.desrt.dconf") == (False,)
        # granting needs an uncontained caller and a known instance
        e = cbus.client().bus_error("GrantAccess", "oa(uos)", "/org/freedesktop/DBus/Containers1/c99", [],
                                    iface=CIFACE)
        assert e.name == "org.freedesktop.DBus.Error.NotContainer"
        assert inner.bus_error("GrantAccess", "oa(uos)", "/", [], iface=CIFACE).name == ACCESS_DENIED
    finally:
        dconf2.stop()


def test_cli_shorthand_confines_gdbus(cbus):
    notif = Service(cbus.address, "org.freedesktop.Notifications",
                    {"Notify": lambda m: ("u", (7,))})
    other = echo_service(cbus.address, "com.example.Other")
    argv = [sys.executable, "-m", "sandbus.cli", "container", "add", "--type", "org.flatpak",
            "--name", "org.example.App", "--talk", "org.freedesktop.Notifications",
            "--own", "org.example.App.*"]
    try:
        with Background(argv, cbus.daemon, env=cbus.env()) as bg:
            address = bg.wait_for(lambda t: "guid=" in t, what="address").splitlines()[1]

            def gdbus(*args):
                return run(["gdbus", "call", "--address", address, *args], check=False)

            cp = gdbus("--dest", "org.freedesktop.Notifications", "--object-path",
                       "/org/freedesktop/Notifications", "--method", "org.freedesktop.Notifications.Notify",
                       "app", "0", "", "summary", "body", "[]", "{}", "5000")
            assert cp.returncode == 0 and "(uint32 7,)" in cp.stdout, cp
            cp = gdbus("--dest", "com.example.Other", "--object-path", "/Test",
                       "--method", "com.example.Test.Echo", "x")
            assert cp.returncode != 0 and "ServiceUnknown" in cp.stderr, cp
            cp = gdbus("--dest", BUS_NAME, "--object-path", BUS_PATH, "--method",
                       "org.freedesktop.DBus.RequestName", "org.example.App.Sub", "4")
            assert "(uint32 1,)" in cp.stdout, cp
            cp = gdbus("--dest", BUS_NAME, "--object-path", BUS_PATH, "--method",
                       "org.freedesktop.DBus.RequestName", "org.example.Other", "4")
            assert "AccessDenied" in cp.stderr, cp
            cp = gdbus("--dest", BUS_NAME, "--object-path", BUS_PATH, "--method",
                       "org.freedesktop.DBus.ListNames")
            assert "org.freedesktop.Notifications" in cp.stdout and "com.example.Other" not in cp.stdout
    finally:
        notif.stop()
        other.stop()


def test_cli_shorthand_compiles_rules():
    from sandbus.containers.cli import _parser, compile_shorthand
    args = _parser().parse_args([
        "add", "--type", "t.t", "--name", "n", "--see", "a.b", "--talk", "c.d.*", "--own", "e.f",
        "--call", "g.h=org.g.H.Method@/obj", "--call", "g.h=org.g.*@/tree/*", "--broadcast", "i.j=@/sig",
        "--allow", "0x14:k.l:/p:"])
    assert compile_shorthand(args) == [
        (0x14, "k.l", "/p", ""),
        (PATH_SUBTREE, "a.b", "/", ""),
        (TALK | NAME_SUBTREE | PATH_SUBTREE, "c.d", "/", ""),
        (TALK | OWN | PATH_SUBTREE, "e.f", "/", ""),
        (CALL | EXACT_MEMBER, "g.h", "/obj", "org.g.H.Method"),
        (CALL | PATH_SUBTREE, "g.h", "/tree", "org.g"),
        (BROADCASTS, "i.j", "/sig", ""),
    ]


# -- property: hidden names are indistinguishable from missing ones ------------------------------

_label = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=4)
_wk_name = st.lists(_label, min_size=2, max_size=3).map(lambda parts: "org." + ".".join(parts))
_rule = st.tuples(st.sampled_from([0, CALL, BROADCASTS, CALL | NAME_SUBTREE, NAME_SUBTREE, OWN]),
                  _wk_name, st.sampled_from(["/", "/a"]), st.sampled_from(["", "org.x.Y"]))


@pytest.fixture(scope="module")
def prop_bus():
    b = ContainerBus()
    try:
        yield b
    finally:
        b.stop()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(owned=st.lists(_wk_name, min_size=1, max_size=4, unique=True), rules=st.lists(_rule, max_size=4),
       data=st.data())
def test_hidden_equals_missing_property(prop_bus, owned, rules, data):
    b = prop_bus
    # subtree rules need a name; OWN rules need one too (all names here are real)
    owners = []
    creator = Client(b.address)
    try:
        per_owner = data.draw(st.lists(st.integers(0, len(owned)), min_size=len(owned), max_size=len(owned)))
        for i, name in enumerate(owned):
            # several names per connection, chosen at random
            if owners and per_owner[i] < len(owners):
                owner = owners[per_owner[i]]
            else:
                owner = Client(b.address)
                owners.append(owner)
            owner.bus("RequestName", "su", name, DO_NOT_QUEUE)
        try:
            path, _, address = add_server(creator, named=allow(*rules))
        except DBusErrorReply as e:  # e.g. OWN without CALL is fine, but bad combos are refused
            assert e.name == "org.freedesktop.DBus.Error.InvalidArgs"
            return
        with Client(address) as inner:
            candidates = list(owned) + [o.unique_name for o in owners]
            never_wk, never_unique = "org.never.existed", ":1.999999"
            for name in candidates:
                if inner.bus("NameHasOwner", "s", name) == (True,):
                    continue
                never = never_unique if name.startswith(":") else never_wk
                got = _driver_answers(inner, name)
                want = _driver_answers(inner, never)
                assert _subst(got, name, never) == want, (name, rules, got, want)
        ccall(creator, "StopInstance", "o", path)
    finally:
        for o in owners:
            o.close()
        creator.close()


def _no_interface(client, member, signature=None, body=()):
    """A Containers1 call with no INTERFACE header field (the driver finds
    the method by its member, as dbus-daemon does for its own methods)."""
    msg = call_msg(BUS_NAME, BUS_PATH, None, member, signature, body)
    assert HeaderFields.interface not in msg.header.fields
    reply = client.call_msg(msg)
    assert reply.header.message_type == MessageType.method_return, \
        (member, reply.header.fields.get(HeaderFields.error_name), reply.body)
    return reply.body


def test_containers_methods_without_interface_field(cbus):
    """Regression: GrantAccess without an interface field was answered
    UnknownMethod while AddServer worked."""
    granter = cbus.client()
    granter.bus("RequestName", "su", "com.example.Granter", DO_NOT_QUEUE)
    creator = cbus.client()
    path, _, address = _no_interface(creator, "AddServer", "ssa{sv}a{sv}",
                                     ("com.example.App", "app", {}, allow()))
    inner = cbus.client(address)
    assert inner.bus("NameHasOwner", "s", "com.example.Granter") == (False,)
    grant = [(CALL, "/", "")]
    assert _no_interface(granter, "GrantAccess", "oa(uos)", (path, grant)) == ()
    assert inner.bus("NameHasOwner", "s", "com.example.Granter") == (True,)
    assert _no_interface(granter, "RevokeAccess", "oa(uos)", (path, grant)) == ()
    assert inner.bus("NameHasOwner", "s", "com.example.Granter") == (False,)
    assert _no_interface(granter, "GetConnectionInstance", "s", (inner.unique_name,))[0] == path
    assert _no_interface(granter, "GetInstanceInfo", "o", (path,))[1] == "com.example.App"
    assert [i[0] for i in _no_interface(creator, "ListInstances")[0]] == [path]
    assert _no_interface(creator, "StopListening", "o", (path,)) == ()
