"""The proxy back end's decisions (proxy/filter.py), without sockets: a
ClientFilter fed the client's messages and the bus's, with the bus played
here (Hello, then the proxy's own AddMatch, ListNames and GetNameOwner)."""

import os

import pytest

from sandbus.containers.rules import compile_allow
from sandbus.proxy import cmdline
from sandbus.proxy.filter import NAME_OWNER_CHANGED_RULE, READY, ClientFilter
from sandbus.proxy.native import allow_rules
from sandbus.proxy.view import ProxyInstance
from sandbus.wire.message import (
    ERROR,
    METHOD_CALL,
    METHOD_RETURN,
    NO_REPLY_EXPECTED,
    SIGNAL,
    Message,
    build_message,
)

BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
NOTIF = "org.freedesktop.Notifications"
OTHER = "org.example.Other"
HIDDEN = "org.example.Hidden"
ME = ":1.9"
OWNERS = {NOTIF: ":1.1", OTHER: ":1.2", HIDDEN: ":1.3", "org.freedesktop.portal.Desktop": ":1.4"}
ARGS = ["--filter", "--own=org.example.App.*", f"--talk={NOTIF}",
        f"--call={OTHER}=com.example.Test.Echo@/Test", f"--broadcast={OTHER}=com.example.Test.Broadcast@/Test",
        "--call=org.freedesktop.portal.*=*"]


def instance(args=ARGS):
    group = cmdline.parse(["unix:path=/bus", "/sock", *args]).groups[0]
    rules = compile_allow(allow_rules(group)) if group.filter else None
    return ProxyInstance("org.example.App", rules)


def msg(data, fds=()):
    return Message(data, list(fds))


def call(serial, dest, path, iface, member, sig="", body=(), flags=0, fds=(), sender=None):
    return msg(build_message(METHOD_CALL, serial, path=path, interface=iface, member=member, destination=dest,
                             signature=sig, body=body, flags=flags, unix_fds=len(fds), sender=sender), fds)


def bus_call(serial, member, sig="", body=()):
    return call(serial, BUS, BUS_PATH, BUS, member, sig, body)


def reply_to(m, sender, sig="", body=(), serial=100):
    return msg(build_message(METHOD_RETURN, serial, reply_serial=m.serial, sender=sender, destination=ME,
                             signature=sig, body=body))


def error_to(m, sender, name, text, serial=100):
    return msg(build_message(ERROR, serial, reply_serial=m.serial, sender=sender, destination=ME,
                             error_name=name, signature="s", body=(text,)))


def signal(sender, path, iface, member, sig="", body=(), dest=None):
    return msg(build_message(SIGNAL, 200, path=path, interface=iface, member=member, sender=sender,
                             destination=dest, signature=sig, body=body))


def take(out):
    got = [msg(d, f) for d, f in out]
    out.clear()
    return got


class FakeBus:
    """Answers the proxy's own calls as a bus with OWNERS would."""

    def __init__(self, f, owners=OWNERS):
        self.f = f
        self.owners = dict(owners)

    def answer(self):
        """Answer every driver call the proxy made on its own; the rest."""
        rest = []
        for m in take(self.f.to_bus):
            if m.destination == BUS and m.member in ("AddMatch", "ListNames", "GetNameOwner"):
                if m.member == "AddMatch":
                    assert m.body() == [NAME_OWNER_CHANGED_RULE]
                    self.f.from_bus(reply_to(m, BUS))
                elif m.member == "ListNames":
                    names = [BUS, *self.owners, *self.owners.values(), ME]
                    self.f.from_bus(reply_to(m, BUS, "as", (names,)))
                else:
                    (name,) = m.body()
                    self.f.from_bus(reply_to(m, BUS, "s", (self.owners[name],)))
            else:
                rest.append(m)
        return rest


def _hello_sent(f):
    """The Hello the filter forwarded; its own calls, right behind it, stay
    queued for FakeBus (the bus answers them after the Hello)."""
    hello = Message(f.to_bus[0][0], [])
    assert hello.member == "Hello"
    own = [Message(d, []) for d, _ in f.to_bus[1:]]
    assert [m.member for m in own][:1] == ["AddMatch"]
    assert all(m.destination == BUS for m in own)
    del f.to_bus[0]
    return hello


def ready_filter(args=ARGS, unix_fds=True):
    f = ClientFilter(instance(args), unix_fds=unix_fds)
    bus = FakeBus(f)
    f.from_client(bus_call(1, "Hello"))
    hello = _hello_sent(f)
    f.from_bus(reply_to(hello, BUS, "s", (ME,)))
    (r,) = take(f.to_client)
    assert r.reply_serial == 1 and r.body() == [ME]
    while f.state != READY:
        assert bus.answer() == []
    return f, bus


def only(out):
    got = take(out)
    assert len(got) == 1, got
    return got[0]


def test_followed_names_are_only_those_with_rules():
    f, _ = ready_filter()
    assert set(f.view.owners) == {NOTIF, OTHER, "org.freedesktop.portal.Desktop"}
    assert f.view.owner(HIDDEN) is None and ":1.3" in f.view.peers


def test_serials_are_the_proxys_own_and_replies_go_back_to_the_clients():
    """Clients reusing or lowering serials (nested proxies) still get each
    reply to the right call: upstream sees serials of ours, never repeated."""
    f, _ = ready_filter()
    sent = []
    for serial in (7, 3, 7, 2):
        f.from_client(call(serial, NOTIF, "/", NOTIF, "Notify"))
        sent.append((serial, only(f.to_bus)))
    upstream = [m.serial for _, m in sent]
    assert len(set(upstream)) == 4 and upstream == sorted(upstream)
    for serial, m in reversed(sent):
        f.from_bus(reply_to(m, ":1.1", "u", (serial,)))
        r = only(f.to_client)
        assert (r.reply_serial, r.body()) == (serial, [serial])


def test_a_hidden_name_is_answered_as_the_bus_answers_a_missing_one():
    f, _ = ready_filter()
    f.from_client(call(5, HIDDEN, "/", HIDDEN, "Do"))
    assert take(f.to_bus) == []
    e = only(f.to_client)
    assert (e.type, e.error_name, e.reply_serial, e.sender) == (ERROR, "org.freedesktop.DBus.Error.ServiceUnknown",
                                                                5, BUS)
    assert e.body() == [f"The name {HIDDEN} was not provided by any .service files"]
    # and exactly so for a name nobody owns at all
    f.from_client(call(6, "org.example.Missing", "/", "a.b", "C"))
    assert only(f.to_client).body() == ["The name org.example.Missing was not provided by any .service files"]
    # even for a call that wants no reply (as the bus answers it)
    f.from_client(call(8, HIDDEN, "/", HIDDEN, "Do", flags=NO_REPLY_EXPECTED))
    assert only(f.to_client).error_name == "org.freedesktop.DBus.Error.ServiceUnknown"


def test_method_rules_are_exact():
    f, _ = ready_filter()
    f.from_client(call(5, OTHER, "/Test", "com.example.Test", "Echo", "s", ("x",)))
    assert only(f.to_bus).member == "Echo"
    f.from_client(call(6, OTHER, "/Test", "com.example.Test", "Add", "ii", (1, 2)))
    assert take(f.to_bus) == []
    assert only(f.to_client).error_name == "org.freedesktop.DBus.Error.AccessDenied"
    f.from_client(call(7, OTHER, "/Else", "com.example.Test", "Echo", "s", ("x",)))
    assert take(f.to_bus) == [] and only(f.to_client).error_name == "org.freedesktop.DBus.Error.AccessDenied"


def test_lookups_of_hidden_names_say_no_such_name():
    f, _ = ready_filter()
    f.from_client(bus_call(5, "NameHasOwner", "s", (HIDDEN,)))
    r = only(f.to_client)
    assert (r.type, r.body()) == (METHOD_RETURN, [False]) and take(f.to_bus) == []
    f.from_client(bus_call(6, "GetNameOwner", "s", (HIDDEN,)))
    e = only(f.to_client)
    assert (e.error_name, e.body()) == ("org.freedesktop.DBus.Error.NameHasNoOwner",
                                        [f"Could not get owner of name '{HIDDEN}': no such name"])
    f.from_client(bus_call(7, "GetConnectionUnixProcessID", "s", (":1.3",)))
    assert only(f.to_client).body() == ["Could not get PID of name ':1.3': no such name"]
    f.from_client(bus_call(8, "NameHasOwner", "s", (NOTIF,)))
    assert only(f.to_bus).body() == [NOTIF]  # visible: the bus answers


def test_list_names_is_filtered():
    f, _ = ready_filter()
    f.from_client(bus_call(5, "ListNames"))
    m = only(f.to_bus)
    f.from_bus(reply_to(m, BUS, "as", ([BUS, *OWNERS, *OWNERS.values(), ME],)))
    r = only(f.to_client)
    assert r.reply_serial == 5
    assert sorted(r.body()[0]) == sorted([BUS, NOTIF, OTHER, "org.freedesktop.portal.Desktop", ":1.1", ":1.2",
                                          ":1.4", ME])


@pytest.mark.parametrize("rule", [
    "eavesdrop=true", "eavesdrop='true'", "type='signal', eavesdrop='true'", " eavesdrop ='true'",
    "eavesdrop='true',type='method_call'", "type='signal',\teavesdrop=true",
])
def test_eavesdropping_is_refused_however_it_is_spelt(rule):
    f, _ = ready_filter()
    f.from_client(bus_call(5, "AddMatch", "s", (rule,)))
    assert take(f.to_bus) == []
    assert only(f.to_client).error_name == "org.freedesktop.DBus.Error.AccessDenied"


def test_an_invalid_match_rule_is_the_bus_s_error():
    f, _ = ready_filter()
    f.from_client(bus_call(5, "AddMatch", "s", ("eavesdrop=maybe",)))
    assert take(f.to_bus) == []
    assert only(f.to_client).error_name == "org.freedesktop.DBus.Error.MatchRuleInvalid"


def test_only_replies_to_calls_that_went_through_come_back():
    f, _ = ready_filter()
    # a reply the bus sends for nothing we asked is dropped
    f.from_bus(msg(build_message(METHOD_RETURN, 50, reply_serial=999, sender=":1.1", destination=ME)))
    assert take(f.to_client) == []
    # the client may answer only calls it received, once
    f.from_client(msg(build_message(METHOD_RETURN, 9, reply_serial=77, destination=":1.1")))
    assert take(f.to_bus) == []
    f.from_bus(call(77, ME, "/app", "org.example.App", "Ping", sender=":1.1"))
    assert only(f.to_client).member == "Ping"
    f.from_client(msg(build_message(METHOD_RETURN, 10, reply_serial=77, destination=":1.1")))
    assert only(f.to_bus).reply_serial == 77
    f.from_client(msg(build_message(METHOD_RETURN, 11, reply_serial=77, destination=":1.1")))
    assert take(f.to_bus) == []


def test_calls_from_outside_reach_the_app_and_its_callers_become_visible():
    f, _ = ready_filter()
    f.from_bus(msg(build_message(METHOD_CALL, 12, path="/app", interface="org.example.App", member="Ping",
                                 destination=ME, sender=":1.3")))
    assert only(f.to_client).member == "Ping"
    f.from_client(bus_call(5, "NameHasOwner", "s", (":1.3",)))
    assert only(f.to_bus).member == "NameHasOwner"


def test_name_owner_changed_only_for_visible_names_and_only_when_asked_for():
    f, _ = ready_filter()
    noc = lambda name, old, new: signal(BUS, BUS_PATH, BUS, "NameOwnerChanged", "sss", (name, old, new))
    f.from_bus(noc(NOTIF, ":1.1", ""))
    assert take(f.to_client) == []  # the client has no match rule for it
    assert f.view.owner(NOTIF) is None  # but the proxy follows it
    f.from_client(bus_call(5, "AddMatch", "s", ("type='signal',member='NameOwnerChanged'",)))
    f.from_bus(reply_to(only(f.to_bus), BUS))
    take(f.to_client)
    f.from_bus(noc(NOTIF, "", ":1.5"))
    assert only(f.to_client).body() == [NOTIF, "", ":1.5"]
    assert f.view.owner(NOTIF).unique_name == ":1.5"
    f.from_bus(noc(HIDDEN, ":1.3", ""))
    assert take(f.to_client) == []
    f.from_bus(noc("org.freedesktop.portal.Extra", "", ":1.6"))
    assert only(f.to_client).body()[0] == "org.freedesktop.portal.Extra"
    # a unique name the app has no rule for comes and goes unseen
    f.from_bus(noc(":1.7", "", ":1.7"))
    assert take(f.to_client) == []


def test_broadcasts_by_broadcast_rules():
    f, _ = ready_filter()
    f.from_bus(signal(":1.2", "/Test", "com.example.Test", "Broadcast", "s", ("x",)))
    assert only(f.to_client).member == "Broadcast"
    f.from_bus(signal(":1.2", "/Test", "com.example.Test", "Changed", "s", ("x",)))
    assert take(f.to_client) == []
    f.from_bus(signal(":1.3", "/Test", "com.example.Test", "Broadcast", "s", ("x",)))
    assert take(f.to_client) == []


def test_fds_go_where_calls_may_go():
    f, _ = ready_filter()
    r, w = os.pipe()
    try:
        f.from_client(call(5, NOTIF, "/", NOTIF, "Take", "h", (0,), fds=[r]))
        m = only(f.to_bus)
        assert m.fds == [r]
        # a broadcast's receivers are not ours to judge: no fds in it
        f.from_client(msg(build_message(SIGNAL, 6, path="/a", interface="a.b", member="C", signature="h",
                                        body=(0,), unix_fds=1), [os.dup(r)]))
        assert take(f.to_bus) == []
    finally:
        os.close(r)
        os.close(w)


def test_own_names_only():
    f, _ = ready_filter()
    f.from_client(bus_call(5, "RequestName", "su", ("org.example.App.Tool", 4)))
    assert only(f.to_bus).member == "RequestName"
    f.from_client(bus_call(6, "RequestName", "su", ("org.example.Nope", 4)))
    assert take(f.to_bus) == []
    assert only(f.to_client).error_name == "org.freedesktop.DBus.Error.AccessDenied"


def test_messages_wait_for_the_picture_of_the_bus():
    """sd-bus pipelines Hello and its first calls: they are judged once the
    proxy knows the bus's names, not before."""
    f = ClientFilter(instance())
    bus = FakeBus(f)
    f.from_client(bus_call(1, "Hello"))
    f.from_client(call(2, NOTIF, "/", NOTIF, "Notify"))
    hello = _hello_sent(f)
    f.from_bus(reply_to(hello, BUS, "s", (ME,)))
    take(f.to_client)
    assert take(f.to_client) == [] and f.held
    while f.state != READY:
        assert bus.answer() == []
    assert [m.destination for m in take(f.to_bus)] == [NOTIF]


def test_without_filter_everything_passes():
    f = ClientFilter(instance(["--own=org.x"]))
    f.from_client(bus_call(1, "Hello"))
    f.from_client(call(5, HIDDEN, "/", HIDDEN, "Do"))
    f.from_client(bus_call(5, "AddMatch", "s", ("eavesdrop=true",)))
    got = take(f.to_bus)
    assert [m.member for m in got] == ["Hello", "Do", "AddMatch"]
    assert len({m.serial for m in got}) == 3


def test_a_client_cannot_make_the_proxy_hold_without_end():
    from sandbus.proxy.filter import MAX_HELD
    f = ClientFilter(instance())
    f.from_client(bus_call(1, "Hello"))
    for i in range(MAX_HELD):
        f.from_client(call(2 + i, NOTIF, "/", NOTIF, "Notify"))
    assert f.closed_reason is None
    f.from_client(call(9999, NOTIF, "/", NOTIF, "Notify"))
    assert f.closed_reason and "before the proxy knew the bus" in f.closed_reason


def test_no_pidfd_of_a_connection_outside_the_app():
    """As the bus gives a contained caller (core/driver.py): the pid, not a
    handle on the process."""
    from sandbus.wire.marshal import Variant
    f, _ = ready_filter()
    f.from_client(bus_call(5, "GetConnectionCredentials", "s", (NOTIF,)))
    m = only(f.to_bus)
    r, w = os.pipe()
    os.close(w)
    creds = {"ProcessID": Variant("u", 42), "ProcessFD": Variant("h", 0)}
    f.from_bus(msg(build_message(METHOD_RETURN, 100, reply_serial=m.serial, sender=BUS, destination=ME,
                                 signature="a{sv}", body=(creds,), unix_fds=1), [r]))
    got = only(f.to_client)
    assert got.reply_serial == 5 and got.fds == [] and got.unix_fds == 0
    assert set(got.body()[0]) == {"ProcessID"}
    with pytest.raises(OSError):
        os.fstat(r)  # ours to close, and closed


def test_a_see_only_name_with_no_owner_yet_is_not_callable():
    """--see=N lets the app see N, never call it: with no owner in the
    proxy's picture the call is refused as for a missing name, not forwarded
    (the bus would activate or route it)."""
    seen = "org.example.Seen"
    f, _ = ready_filter([*ARGS, f"--see={seen}", "--talk=org.example.Talked"])
    assert f.view.lookup(seen) is None
    for serial, flags in ((5, 0), (6, 0x2)):  # 0x2: NO_AUTO_START
        f.from_client(call(serial, seen, "/", seen, "Do", flags=flags))
        assert take(f.to_bus) == []
        assert only(f.to_client).type == ERROR
    # while a --talk name nobody owns yet still goes to the bus (activation)
    f.from_client(call(7, "org.example.Talked", "/", "a.b", "C"))
    assert only(f.to_bus).destination == "org.example.Talked"
    assert take(f.to_client) == []


def test_match_rules_sent_with_no_reply_expected_are_kept_and_forgotten():
    """AddMatch/RemoveMatch with NO_REPLY_EXPECTED get no reply to do the
    bookkeeping on; the proxy must follow them anyway, or NameOwnerChanged
    it owes the client goes missing (and one it no longer wants arrives)."""
    f, _ = ready_filter()
    noc = lambda name, old, new: signal(BUS, BUS_PATH, BUS, "NameOwnerChanged", "sss", (name, old, new))
    rule = "type='signal',member='NameOwnerChanged'"
    f.from_client(call(5, BUS, BUS_PATH, BUS, "AddMatch", "s", (rule,), flags=NO_REPLY_EXPECTED))
    assert only(f.to_bus).member == "AddMatch"
    f.from_bus(noc(NOTIF, ":1.1", ""))
    assert only(f.to_client).body() == [NOTIF, ":1.1", ""]
    f.from_client(call(6, BUS, BUS_PATH, BUS, "RemoveMatch", "s", (rule,), flags=NO_REPLY_EXPECTED))
    assert only(f.to_bus).member == "RemoveMatch"
    f.from_bus(noc(NOTIF, "", ":1.5"))
    assert take(f.to_client) == []


def test_calls_the_bus_refuses_are_refused_with_the_bus_s_errors():
    """The proxy resolves a call to the bus as core/driver.py does
    (Driver.resolve_call), so a client behind it gets the bus's own
    errors for an unknown method or interface or wrong args, none of which
    reaches the bus."""
    f, _ = ready_filter()
    cases = [
        (bus_call(5, "NoSuchMethod"), "org.freedesktop.DBus.Error.UnknownMethod",
         "org.freedesktop.DBus does not understand message NoSuchMethod"),
        (call(6, BUS, "/elsewhere", "org.freedesktop.DBus.Properties", "GetAll", "s", (BUS,)),
         "org.freedesktop.DBus.Error.UnknownInterface", "org.freedesktop.DBus does not understand message GetAll"),
        (call(7, BUS, "/elsewhere", None, "GetAll", "s", (BUS,)), "org.freedesktop.DBus.Error.UnknownMethod",
         "org.freedesktop.DBus does not understand message GetAll"),
        (bus_call(8, "NameHasOwner", "u", (1,)), "org.freedesktop.DBus.Error.InvalidArgs",
         "Call to NameHasOwner has wrong args (u, expected s)"),
    ]
    for m, name, text in cases:
        f.from_client(m)
        assert take(f.to_bus) == []
        e = only(f.to_client)
        assert (e.type, e.reply_serial, e.sender, e.error_name, e.body()) == (ERROR, m.serial, BUS, name, [text])
    assert f.closed_reason is None
