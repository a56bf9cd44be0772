"""Match rules: parsing (the specification's quoting), every key's matching,
AddMatch / RemoveMatch, broadcast delivery, eavesdropping and the index.
Error texts were checked against dbus-daemon 1.14."""

import pytest

from corehelpers import BUS_NAME, ERR, METHOD_CALL, SIGNAL, connect, make_bus
from sandbus.core.errors import DBusError
from sandbus.core.match import MatchRule
from sandbus.wire.message import Message, ProtocolError, build_message


@pytest.fixture
def bus():
    return make_bus()


class FakeSender:
    def __init__(self, unique_name=":1.5", names=()):
        self.unique_name = unique_name
        self.names = set(names)


def sig(member="Changed", *, interface="com.example.Iface", path="/com/example/obj", signature="",
        body=(), destination=None, mtype=SIGNAL):
    kw = dict(path=path, interface=interface, member=member, signature=signature, body=body,
              destination=destination)
    if mtype != SIGNAL:
        kw = dict(path=path, interface=interface, member=member, signature=signature, body=body,
                  destination=destination)
    return Message(build_message(mtype, 1, **kw))


def matches(rule_text, msg, sender=None, recipient=None) -> bool:
    return MatchRule(rule_text).matches(msg, sender or FakeSender(), recipient)


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("text,value", [
    ("arg0='plain'", "plain"),
    ("arg0=plain", "plain"),                      # unquoted
    ("arg0=''", ""),                              # empty
    ("arg0='don'\\''t'", "don't"),                # close quote, \', reopen
    ("arg0=don\\'t", "don't"),                    # \' outside quotes is an apostrophe
    ("arg0='a\\b'", "a\\b"),                      # backslash inside quotes is literal
    ("arg0='\\'", "\\"),
    ("arg0=a\\b", "a\\b"),                        # backslash not before ' is literal outside too
    ("arg0='a,b'", "a,b"),                        # comma inside quotes
    ("arg0='a=b'", "a=b"),
    ("arg0=\\'\\'", "''"),
    ("arg0='x'\\'", "x'"),
    ("arg0=a'b'c", "abc"),                        # quotes may cover part of a value
])
def test_quoting(text, value):
    assert MatchRule(text).args == {0: value}


def test_all_keys_parse():
    r = MatchRule("type='signal',sender='org.example.S',interface='org.example.I',member='M',"
                  "path='/a/b',destination=':1.7',arg0='x',arg1path='/p/',arg2='y',eavesdrop='true'")
    assert r.type == SIGNAL
    assert (r.sender, r.interface, r.member, r.path, r.destination) == (
        "org.example.S", "org.example.I", "M", "/a/b", ":1.7")
    assert r.args == {0: "x", 2: "y"} and r.arg_paths == {1: "/p/"} and r.eavesdrop
    r = MatchRule("path_namespace='/a',arg0namespace='com.example'")
    assert r.path_namespace == "/a" and r.arg0namespace == "com.example"


@pytest.mark.parametrize("text", [
    "", "type='signal',", "sender=':1.5'", "type=signal", "arg0namespace='com'",
    "arg63='x'", "arg63path='/'", "eavesdrop='false'", "type='method_call'", "type='method_return'",
    "type='error'", "path_namespace='/'", "arg0namespace='a-b_c'",
])
def test_valid_rules(bus, text):
    c = connect(bus)
    assert c.bus_ok("AddMatch", "s", (text,)) == []




@pytest.mark.parametrize("text,message", [
    ("sender='!!'", "Sender name '!!' is invalid"),
    ("bogus='x'", 'Unknown key "bogus" in match rule'),
    ("type='signal", "Unbalanced quotation marks in match rule"),
    ("eavesdrop='maybe'", "eavesdrop='maybe' is invalid, it should be 'true' or 'false'"),
    ("type='signal',type='signal'", "Key type specified twice in match rule"),
    ("arg0namespace='a..b'", "arg0namespace='a..b' is not a valid prefix of a bus name"),
    ("arg0namespace='com.'", "arg0namespace='com.' is not a valid prefix of a bus name"),
    ("path='a'", "Path 'a' is invalid"),
    ("path_namespace='/a/'", "Path '/a/' is invalid"),
    ("path='/a/'", "Path '/a/' is invalid"),
    ("interface='a'", "Interface name 'a' is invalid"),
    ("member='a.b'", "Member name 'a.b' is invalid"),
    ("destination='!'", "Destination name '!' is invalid"),
    pytest.param("type='foo'", "Invalid message type (foo) in match rule"),
    pytest.param("path='/a',path_namespace='/b'", "path or path_namespace specified twice in match rule"),
    pytest.param("arg64='x'", "Key 'arg64' in match rule has arg number 64 but the maximum is 63."),
    pytest.param("arg0='a',arg0='b'", "Argument arg0 matched more than once in match rule"),
    pytest.param("argx='a'", "Key 'argx' in match rule starts with 'arg' but could not parse arg number. "
                 "Should be 'arg0' or 'arg7' for example."),
    pytest.param("arg1namespace='a'", "Key 'arg1namespace' in match rule contains junk after argument "
                 "number (1). Only 'arg1path' (for example) or 'arg0namespace' are valid"),
    pytest.param("type", "Match rule has a key with no subsequent '=' character"),
])
def test_invalid_rule_texts(bus, text, message):
    c = connect(bus)
    assert c.bus_error("AddMatch", "s", (text,)) == (ERR + "MatchRuleInvalid", message)


@pytest.mark.parametrize("text", [
    "type='foo'", "path='/a',path_namespace='/b'", "arg64='x'", "arg0='a',arg0='b'", "argx='a'",
    "arg1namespace='a'", "type", "arg0path='a',arg0path='b'", "=x", "sender=''", "interface=''",
    "member=''", "path=''", "arg100='x'", "arg='x'", "arg0pathx='/'", "eavesdrop=''", "type=''",
    "type='SIGNAL'", "destination='a'", "sender='a..b'", "arg0namespace=''",
])
def test_invalid_rules(bus, text):
    c = connect(bus)
    assert c.bus_error("AddMatch", "s", (text,))[0] == ERR + "MatchRuleInvalid"
    with pytest.raises(DBusError) as e:
        MatchRule(text)
    assert e.value.name == ERR + "MatchRuleInvalid"
    assert c.peer.rules == []


def test_arg_and_argpath_on_the_same_argument_rejected(bus):
    c = connect(bus)
    assert c.bus_error("AddMatch", "s", ("arg0='a',arg0path='/b'",)) == (
        ERR + "MatchRuleInvalid", "Argument arg0path matched more than once in match rule")


def test_arg_number_with_leading_zero_accepted(bus):
    c = connect(bus)
    assert c.bus_ok("AddMatch", "s", ("arg01='a'",)) == []


# -- matching, key by key --------------------------------------------------------------------


def test_empty_rule_matches_everything():
    assert matches("", sig())
    assert matches("", sig(mtype=METHOD_CALL, destination=":1.2"))


@pytest.mark.parametrize("rule,mtype,expected", [
    ("type='signal'", SIGNAL, True),
    ("type='signal'", METHOD_CALL, False),
    ("type='method_call'", METHOD_CALL, True),
    ("type='method_call'", SIGNAL, False),
])
def test_type(rule, mtype, expected):
    assert matches(rule, sig(mtype=mtype)) is expected


def test_type_reply_and_error():
    ret = Message(build_message(2, 1, reply_serial=3))
    err = Message(build_message(3, 1, reply_serial=3, error_name="a.b.C"))
    assert matches("type='method_return'", ret) and not matches("type='method_return'", err)
    assert matches("type='error'", err) and not matches("type='error'", ret)


def test_sender_unique_and_well_known():
    s = FakeSender(":1.5", {"com.example.Owned"})
    assert matches("sender=':1.5'", sig(), s)
    assert not matches("sender=':1.6'", sig(), s)
    assert matches("sender='com.example.Owned'", sig(), s)
    assert not matches("sender='com.example.Other'", sig(), s)


def test_interface_member_path():
    m = sig("Changed", interface="com.example.I", path="/a/b")
    assert matches("interface='com.example.I'", m)
    assert not matches("interface='com.example.J'", m)
    assert matches("member='Changed'", m)
    assert not matches("member='Other'", m)
    assert matches("path='/a/b'", m)
    assert not matches("path='/a'", m)
    assert not matches("path='/a/b/c'", m)
    call = Message(build_message(METHOD_CALL, 1, path="/a", member="M"))
    assert not matches("interface='com.example.I'", call)  # no interface in the message


@pytest.mark.parametrize("ns,path,expected", [
    ("/a", "/a", True),
    ("/a", "/a/b", True),
    ("/a", "/a/b/c", True),
    ("/a", "/ab", False),
    ("/a", "/", False),
    ("/a/b", "/a", False),
    ("/", "/", True),
    ("/", "/anything/at/all", True),
])
def test_path_namespace(ns, path, expected):
    assert matches(f"path_namespace='{ns}'", sig(path=path)) is expected


def test_destination():
    assert matches("destination=':1.7'", sig(destination=":1.7"))
    assert not matches("destination=':1.7'", sig(destination=":1.8"))
    assert not matches("destination=':1.7'", sig())
    # the actual recipient (a unique name) counts, not what the sender wrote
    assert matches("destination=':1.7'", sig(destination="com.example.Svc"), recipient=":1.7")


def test_well_known_destination_matches_the_recipient_owning_it():
    """destination='com.example.Svc' matches a message to the connection that
    owns that name, whether addressed by that name or by its unique name
    (bus/signals.c; dbus's /monitor/well-known-destination)."""
    owner = FakeSender(":1.7", names=("com.example.Svc",))
    rule = MatchRule("destination='com.example.Svc'")
    assert rule.matches(sig(destination=":1.7"), FakeSender(), ":1.7", owner)
    assert rule.matches(sig(destination="com.example.Svc"), FakeSender(), ":1.7", owner)
    assert not rule.matches(sig(destination=":1.8"), FakeSender(), ":1.8", FakeSender(":1.8"))


def test_arg_n():
    m = sig(signature="ssus", body=("zero", "one", 2, "three"))
    assert matches("arg0='zero'", m)
    assert matches("arg1='one',arg3='three'", m)
    assert not matches("arg0='one'", m)
    assert not matches("arg2='2'", m)   # not a string
    assert not matches("arg4='x'", m)   # no such argument
    assert not matches("arg0='zer'", m)


def test_arg_n_matches_strings_only():
    m = sig(signature="o", body=("/a",))
    assert not matches("arg0='/a'", m)
    g = sig(signature="g", body=("s",))
    assert not matches("arg0='s'", g)


def test_arg_n_empty_string():
    assert matches("arg0=''", sig(signature="s", body=("",)))
    assert not matches("arg0=''", sig(signature="s", body=("x",)))
    assert not matches("arg0=''", sig())


def test_arg_n_high_index():
    body = tuple(str(i) for i in range(64))
    m = sig(signature="s" * 64, body=body)
    assert matches("arg63='63'", m)
    assert not matches("arg63='62'", m)


@pytest.mark.parametrize("arg,expected", [
    # the specification's own examples for arg0path='/aa/bb/'
    ("/", True), ("/aa/", True), ("/aa/bb/", True), ("/aa/bb/cc/", True), ("/aa/bb/cc", True),
    ("/aa/b", False), ("/aa", False), ("/aa/bb", False),
])
def test_arg_path_spec_examples(arg, expected):
    assert matches("arg0path='/aa/bb/'", sig(signature="s", body=(arg,))) is expected


@pytest.mark.parametrize("code", ["s", "o"])
def test_arg_path_on_strings_and_object_paths(code):
    m = sig(signature=code, body=("/aa/bb",))
    assert matches("arg0path='/aa/bb'", m)
    assert matches("arg0path='/aa/'", m)
    assert not matches("arg0path='/aa'", m)


def test_arg_path_not_on_other_types():
    assert not matches("arg0path='/'", sig(signature="u", body=(1,)))
    assert not matches("arg0path='/'", sig(signature="as", body=(["/"],)))


@pytest.mark.parametrize("arg,expected", [
    ("com.example.backend1", True),
    ("com.example.backend1.foo", True),
    ("com.example.backend1.foo.bar", True),
    ("com.example.backend2", False),
    ("com.example.backend1foo", False),
    ("com.example", False),
])
def test_arg0namespace_spec_examples(arg, expected):
    assert matches("arg0namespace='com.example.backend1'", sig(signature="s", body=(arg,))) is expected


def test_arg0namespace_needs_a_string_first_argument():
    assert not matches("arg0namespace='com'", sig(signature="o", body=("/com",)))
    assert not matches("arg0namespace='com'", sig())


def test_an_unparsable_body_never_reaches_arg_matching():
    # A body that does not match its signature is refused when the message
    # is parsed (wire/validate.py), so no rule ever sees it.
    good = build_message(SIGNAL, 1, path="/a", interface="a.b", member="M", signature="s", body=("x",))
    assert matches("arg0='x'", Message(good))
    bad = bytearray(good)
    bad[-2] = 0xFF  # invalid UTF-8 in the string
    with pytest.raises(ProtocolError, match="UTF-8"):
        Message(bytes(bad))


def test_all_keys_together():
    s = FakeSender(":1.5", {"com.example.S"})
    m = sig("M", interface="com.example.I", path="/p/q", signature="ss", body=("com.x.y", "/p/"))
    rule = ("type='signal',sender='com.example.S',interface='com.example.I',member='M',"
            "path_namespace='/p',arg0namespace='com.x',arg1path='/p/q'")
    assert matches(rule, m, s)
    assert not matches(rule.replace("member='M'", "member='N'"), m, s)


# -- AddMatch / RemoveMatch on a bus ----------------------------------------------------------


def test_broadcast_delivered_once_per_peer(bus):
    a, b = connect(bus), connect(bus)
    for rule in ("type='signal'", "member='Changed'", "interface='com.example.Iface'", "",
                 f"sender='{a.unique_name}'", "path='/a/b'", "arg0='x'"):
        b.bus_ok("AddMatch", "s", (rule,))
    b.clear()
    a.signal("Changed", "s", ("x",), path="/a/b")
    assert [m.member for m in b.received()] == ["Changed"]


def test_broadcast_reaches_every_matching_peer_and_no_other(bus):
    a = connect(bus)
    peers = [connect(bus) for _ in range(4)]
    peers[0].bus_ok("AddMatch", "s", ("member='Changed'",))
    peers[1].bus_ok("AddMatch", "s", ("member='Other'",))
    peers[2].bus_ok("AddMatch", "s", ("interface='com.example.Iface'",))
    for p in peers:
        p.clear()
    a.signal("Changed")
    assert [len(p.received()) for p in peers] == [1, 0, 1, 0]


def test_sender_does_not_get_its_own_broadcast_without_a_rule(bus):
    a = connect(bus)
    a.signal("Changed")
    assert a.received() == []
    a.bus_ok("AddMatch", "s", ("member='Changed'",))
    a.clear()
    a.signal("Changed")
    assert [m.sender for m in a.received()] == [a.unique_name]


def test_well_known_sender_rule(bus):
    a, b = connect(bus), connect(bus)
    b.bus_ok("AddMatch", "s", ("sender='com.example.Src'",))
    b.clear()
    a.signal("Before")
    a.bus_ok("RequestName", "su", ("com.example.Src", 0))
    a.signal("During")
    a.bus_ok("ReleaseName", "s", ("com.example.Src",))
    a.signal("After")
    assert [m.member for m in b.received()] == ["During"]


def test_sender_rule_for_the_bus_driver(bus):
    b = connect(bus)
    b.bus_ok("AddMatch", "s", ("sender='org.freedesktop.DBus',member='NameOwnerChanged'",))
    b.clear()
    c = connect(bus)
    (m,) = b.received()
    assert m.sender == BUS_NAME and m.body() == [c.unique_name, "", c.unique_name]


def test_name_owner_changed_arg0(bus):
    b = connect(bus)
    b.bus_ok("AddMatch", "s", ("member='NameOwnerChanged',arg0='com.example.Watched'",))
    b.clear()
    a = connect(bus)
    a.bus_ok("RequestName", "su", ("com.example.Other", 0))
    a.bus_ok("RequestName", "su", ("com.example.Watched", 0))
    assert [m.body() for m in b.received()] == [["com.example.Watched", "", a.unique_name]]


def test_unicast_is_not_delivered_to_ordinary_rules(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    c.bus_ok("AddMatch", "s", ("",))
    c.bus_ok("AddMatch", "s", (f"destination='{b.unique_name}'",))
    c.clear()
    a.call(b.unique_name, "M", flags=1)
    a.signal("S", destination=b.unique_name)
    assert c.received() == []


def test_eavesdrop(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    c.bus_ok("AddMatch", "s", (f"eavesdrop='true',destination='{b.unique_name}'",))
    c.clear()
    serial = a.call(b.unique_name, "M", "s", ("hi",))
    a.signal("S", destination=b.unique_name)
    a.call(c.unique_name, "ToC", flags=1)
    got = c.received()
    assert [(m.type, m.member, m.sender, m.destination) for m in got] == [
        (METHOD_CALL, "M", a.unique_name, b.unique_name),
        (SIGNAL, "S", a.unique_name, b.unique_name),
        (METHOD_CALL, "ToC", a.unique_name, c.unique_name),  # its own message, delivered normally
    ]
    assert got[0].serial == serial and got[0].body() == ["hi"]
    # the eavesdropper cannot answer in the callee's place
    c.reply(got[0])
    assert a.received() == []


def test_eavesdrop_rule_with_false_is_ordinary(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    c.bus_ok("AddMatch", "s", ("eavesdrop='false'",))
    c.clear()
    a.call(b.unique_name, "M", flags=1)
    assert c.received() == []


def test_remove_match(bus):
    a, b = connect(bus), connect(bus)
    b.bus_ok("AddMatch", "s", ("member='Changed'",))
    b.bus_ok("AddMatch", "s", ("member='Changed'",))
    b.clear()
    a.signal("Changed")
    assert len(b.received()) == 1
    # removes one of the two equal rules
    assert b.bus_ok("RemoveMatch", "s", ("member='Changed'",)) == []
    a.signal("Changed")
    assert len(b.received()) == 1
    assert b.bus_ok("RemoveMatch", "s", ("member='Changed'",)) == []
    a.signal("Changed")
    assert b.received() == []
    assert b.bus_error("RemoveMatch", "s", ("member='Changed'",)) == (
        ERR + "MatchRuleNotFound", "The given match rule wasn't found and can't be removed")


def test_remove_match_compares_rules_not_texts(bus):
    b = connect(bus)
    b.bus_ok("AddMatch", "s", ("type='signal',member='Changed',arg0='x'",))
    assert b.bus_ok("RemoveMatch", "s", ("arg0=x, member='Changed',type=signal",)) == []
    assert b.peer.rules == []


def test_remove_match_needs_an_equal_rule(bus):
    b = connect(bus)
    b.bus_ok("AddMatch", "s", ("type='signal',member='Changed'",))
    assert b.bus_error("RemoveMatch", "s", ("member='Changed'",))[0] == ERR + "MatchRuleNotFound"
    assert b.bus_error("RemoveMatch", "s", ("type='signal',member='Changed',eavesdrop='true'",))[0] == \
        ERR + "MatchRuleNotFound"
    assert len(b.peer.rules) == 1


def test_remove_match_of_another_peers_rule(bus):
    a, b = connect(bus), connect(bus)
    a.bus_ok("AddMatch", "s", ("member='Changed'",))
    assert b.bus_error("RemoveMatch", "s", ("member='Changed'",))[0] == ERR + "MatchRuleNotFound"


def test_remove_match_invalid_rule(bus):
    b = connect(bus)
    assert b.bus_error("RemoveMatch", "s", ("bogus='x'",)) == (
        ERR + "MatchRuleInvalid", 'Unknown key "bogus" in match rule')


def test_rules_go_away_with_their_peer(bus):
    a, b = connect(bus), connect(bus)
    b.bus_ok("AddMatch", "s", ("member='Changed'",))
    b.bus_ok("AddMatch", "s", ("eavesdrop='true'",))
    assert bus.matches.count == 2
    bus.disconnect(b.peer)
    assert bus.matches.count == 0
    assert bus.eavesdrop_rules == []
    a.signal("Changed")


def test_max_match_rules_per_connection():
    bus = make_bus(max_match_rules_per_connection=2)
    b = connect(bus)
    b.bus_ok("AddMatch", "s", ("member='A'",))
    b.bus_ok("AddMatch", "s", ("member='A'",))
    assert b.bus_error("AddMatch", "s", ("member='B'",)) == (
        ERR + "LimitsExceeded",
        f'Connection "{b.unique_name}" is not allowed to add more match rules (increase limits in '
        "configuration file if required; max_match_rules_per_connection=2)")
    b.bus_ok("RemoveMatch", "s", ("member='A'",))
    assert b.bus_ok("AddMatch", "s", ("member='B'",)) == []


def test_index_with_10k_non_matching_rules():
    bus = make_bus(max_match_rules_per_connection=20000)
    a = connect(bus)
    noise = connect(bus)
    for i in range(10000):
        kind = i % 5
        if kind == 0:
            rule = f"member='Noise{i}'"
        elif kind == 1:
            rule = f"interface='com.example.Noise{i}'"
        elif kind == 2:
            rule = f"path='/noise/{i}'"
        elif kind == 3:
            rule = f"sender=':9.{i}'"
        else:
            rule = f"type='signal',interface='com.example.Iface',member='Changed',arg0='noise{i}'"
        noise.bus_ok("AddMatch", "s", (rule,))
    want = [connect(bus) for _ in range(5)]
    want[0].bus_ok("AddMatch", "s", ("member='Changed'",))
    want[1].bus_ok("AddMatch", "s", ("interface='com.example.Iface'",))
    want[2].bus_ok("AddMatch", "s", ("path='/com/example/obj'",))
    want[3].bus_ok("AddMatch", "s", (f"sender='{a.unique_name}'",))
    want[4].bus_ok("AddMatch", "s", ("type='signal',member='Changed',arg0='hit'",))
    for w in want:
        w.clear()
    noise.clear()
    a.signal("Changed", "s", ("hit",), path="/com/example/obj", interface="com.example.Iface")
    assert [len(w.received()) for w in want] == [1, 1, 1, 1, 1]
    assert noise.received() == []
    a.signal("Quiet", path="/x", interface="a.b")
    assert [len(w.received()) for w in want] == [0, 0, 0, 1, 0]
    assert noise.received() == []
    a.signal("Unrelated", "s", ("noise4",), path="/noise/2", interface="com.example.Noise1")
    assert len(noise.received()) == 1  # path='/noise/2'... and interface Noise1: still once
    assert bus.matches.count == 10005


def test_index_survives_add_and_remove_churn(bus):
    a, b = connect(bus), connect(bus)
    rules = ["member='M'", "interface='a.b'", "path='/p'", f"sender='{a.unique_name}'", "type='signal'"]
    for _ in range(3):
        for r in rules:
            b.bus_ok("AddMatch", "s", (r,))
        for r in rules:
            b.bus_ok("RemoveMatch", "s", (r,))
    assert bus.matches.count == 0
    b.clear()
    a.signal("M", interface="a.b", path="/p")
    assert b.received() == []
    b.bus_ok("AddMatch", "s", ("path='/p'",))
    b.clear()
    a.signal("M", interface="a.b", path="/p")
    assert len(b.received()) == 1


@pytest.mark.parametrize("text, canonical", [
    ("", ""),
    ("member=Changed,type=signal", "type='signal',member='Changed'"),
    ("eavesdrop=false,type='error'", "type='error'"),
    ("arg3=x,arg0namespace=a.b,eavesdrop=true", "eavesdrop='true',arg0namespace='a.b',arg3='x'"),
    ("arg1path=/p/,arg0=y", "arg0='y',arg1path='/p/'"),
    ("destination=:1.2,sender=a.b,path_namespace=/o,interface=i.j",
     "interface='i.j',path_namespace='/o',sender='a.b',destination=':1.2'"),
    ("arg0=it\\'s", "arg0='it'\\''s'"),
])
def test_canonical_spelling(text, canonical):
    # dbus-daemon's match_rule_to_string (tests/integration/test_driver.py
    # compares with it live); the canonical text parses to the same rule
    rule = MatchRule(text)
    assert rule.canonical() == canonical
    assert MatchRule(canonical).key == rule.key


def test_only_the_bus_uid_and_root_may_eavesdrop(bus):
    # dbus-daemon 1.11.14+ (tests/integration/test_signals.py checks it live)
    bus.settings.bus_uid = 1000
    for uid, ok in ((0, True), (1000, True), (1001, False)):
        c = connect(bus, uid=uid)
        if ok:
            c.bus_ok("AddMatch", "s", ("eavesdrop=true",))
        else:
            name, text = c.bus_error("AddMatch", "s", ("eavesdrop=true",))
            assert name == ERR + "AccessDenied" and text.startswith("rejected attempt to call AddMatch by connection")
            c.bus_ok("AddMatch", "s", ("eavesdrop=false",))
        assert len(c.peer.rules) == 1
