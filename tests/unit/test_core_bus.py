"""The sans-I/O bus core: Hello, the driver's methods, routing, reply
tracking, monitors, fd passing, ordering and limits.  Error names and texts
are dbus-daemon 1.14's (checked against a running dbus-daemon)."""

import os
import re
import xml.etree.ElementTree as ET

import pytest

from corehelpers import (
    BUS_IFACE,
    BUS_NAME,
    BUS_PATH,
    ERR,
    ERROR,
    GUID,
    MACHINE_ID,
    METHOD_CALL,
    METHOD_RETURN,
    NO_REPLY_EXPECTED,
    OTHER_UID,
    SIGNAL,
    Client,
    build_message,
    connect,
    make_bus,
    sig_summary,
)
from sandbus.wire.marshal import Variant
from sandbus.wire.message import FIELD_SENDER, Message

UNIQUE_RE = re.compile(r"^:1\.[0-9]+$")
PROPS = "org.freedesktop.DBus.Properties"
PEER = "org.freedesktop.DBus.Peer"
MONITORING = "org.freedesktop.DBus.Monitoring"
STATS = "org.freedesktop.DBus.Debug.Stats"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"


@pytest.fixture
def bus():
    return make_bus()


# -- Hello ------------------------------------------------------------------------


def test_hello_assigns_unique_name_and_sends_name_acquired(bus):
    c = Client(bus)
    serial = c.driver("Hello")
    msgs = c.received()
    assert [m.type for m in msgs] == [METHOD_RETURN, SIGNAL]
    reply, acquired = msgs
    name = reply.body()[0]
    assert UNIQUE_RE.match(name)
    assert reply.reply_serial == serial
    assert reply.sender == BUS_NAME and reply.destination == name
    assert (acquired.member, acquired.interface, acquired.path) == ("NameAcquired", BUS_IFACE, BUS_PATH)
    assert acquired.sender == BUS_NAME and acquired.destination == name
    assert acquired.body() == [name]
    assert not c.closed


def test_hello_without_interface(bus):
    c = Client(bus)
    c.call(BUS_NAME, "Hello", path=BUS_PATH)
    assert c.received()[0].type == METHOD_RETURN


def test_hello_with_no_reply_expected_is_still_answered(bus):
    # dbus-daemon answers driver calls whatever their NO_REPLY_EXPECTED flag
    c = Client(bus)
    c.driver("Hello", flags=NO_REPLY_EXPECTED)
    msgs = c.received()
    assert [(m.type, m.member) for m in msgs] == [(METHOD_RETURN, None), (SIGNAL, "NameAcquired")]
    assert c.peer.unique_name == msgs[0].body()[0] == msgs[1].body()[0]


def _before_hello(bus, first):
    """A connection that sends first before Hello, and a watcher whose
    catch-all rule would see anything the bus routed."""
    watcher = connect(bus)
    watcher.bus_ok("AddMatch", "s", ("",))
    c = Client(bus)
    first = dict(first)
    c.send(first.pop("mtype"), **first)
    return c, watcher


@pytest.mark.parametrize("first", [
    dict(mtype=METHOD_CALL, destination=BUS_NAME, path=BUS_PATH, interface=BUS_IFACE, member="ListNames"),
    dict(mtype=METHOD_CALL, destination=BUS_NAME, path=BUS_PATH, interface="com.example.I", member="Hello"),
    dict(mtype=SIGNAL, destination=BUS_NAME, path=BUS_PATH, interface=BUS_IFACE, member="Hello"),
])
def test_anything_for_the_bus_before_hello_gets_access_denied(bus, first):
    # dbus-daemon 1.14 answers AccessDenied, addressed to ":not.active.yet",
    # and routes nothing (tests/integration/test_bad_input.py checks it live).
    c, watcher = _before_hello(bus, first)
    assert not c.closed
    (err,) = [Message(d) for d, _ in c.sink.sent]
    assert err.error_name == ERR + "AccessDenied"
    assert err.destination == ":not.active.yet"
    assert watcher.received() == []  # nothing was routed


@pytest.mark.parametrize("first", [
    dict(mtype=METHOD_CALL, destination="com.example", path="/", member="Hello"),
    dict(mtype=SIGNAL, path="/a", interface="a.b", member="S"),
    dict(mtype=METHOD_RETURN, destination=":1.0", reply_serial=1),
])
def test_a_message_for_others_before_hello_closes_the_connection(bus, first):
    # dbus-daemon closes the connection and routes nothing (bus/dispatch.c;
    # tests/integration/test_bad_input.py checks it live)
    c, watcher = _before_hello(bus, first)
    assert c.closed
    assert c.sink.sent == []
    assert watcher.received() == []


def test_hello_twice_fails(bus):
    c = connect(bus)
    assert c.bus_error("Hello") == (ERR + "Failed", "Already handled an Hello message")


def test_unique_names_distinct_and_never_reused(bus):
    seen = set()
    for _ in range(5):
        c = connect(bus)
        assert UNIQUE_RE.match(c.unique_name)
        assert c.unique_name not in seen
        seen.add(c.unique_name)
        bus.disconnect(c.peer)


def test_others_see_name_owner_changed_for_new_and_gone_peers(bus):
    w = connect(bus)
    w.bus_ok("AddMatch", "s", ("type='signal',member='NameOwnerChanged'",))
    c = connect(bus)
    assert sig_summary(w.received()) == [("NameOwnerChanged", (c.unique_name, "", c.unique_name))]
    bus.disconnect(c.peer)
    assert sig_summary(w.received()) == [("NameOwnerChanged", (c.unique_name, c.unique_name, ""))]


@pytest.mark.parametrize("rule", [
    "type='signal',member='NameOwnerChanged'",
    "interface='org.freedesktop.DBus'",
    "path='/org/freedesktop/DBus'",
    "sender='org.freedesktop.DBus'",
    "type='signal'",
    "",
])
def test_name_owner_changed_reaches_a_rule_keyed_any_way(bus, rule):
    # The bus skips building a broadcast of its own that no rule could
    # receive: every way a rule is indexed must still count as a receiver.
    w = connect(bus)
    w.bus_ok("AddMatch", "s", (rule,))
    c = connect(bus)
    assert ("NameOwnerChanged", (c.unique_name, "", c.unique_name)) in sig_summary(w.received())


def test_invalid_message_disconnects_only_the_sender(bus):
    a, b = connect(bus), connect(bus)
    data = bytearray(build_message(METHOD_CALL, 1, path="/", member="M", destination=b.unique_name))
    data[1] = 0  # message type 0 is invalid (unknown non-zero types are answered, see below)
    a.send_raw(bytes(data))
    assert a.closed and "invalid message" in a.closed
    assert not b.closed
    assert b.bus_ok("NameHasOwner", "s", (a.unique_name,)) == [False]


def test_unknown_message_type_gets_access_denied(bus):
    # dbus-daemon keeps the connection and answers AccessDenied
    a, b = connect(bus), connect(bus)
    data = bytearray(build_message(METHOD_CALL, 7, path="/", member="M", destination=b.unique_name))
    data[1] = 9
    a.send_raw(bytes(data))
    assert not a.closed
    (err,) = a.received()
    assert err.error_name == ERR + "AccessDenied" and err.reply_serial == 7
    assert b.received() == []


def test_messages_after_disconnect_are_ignored(bus):
    a, b = connect(bus), connect(bus)
    bus.disconnect(a.peer)
    a.call(b.unique_name, "M")
    assert b.received() == []


def test_disconnect_twice_is_harmless(bus):
    a = connect(bus)
    bus.disconnect(a.peer)
    bus.disconnect(a.peer)


# -- driver methods ---------------------------------------------------------------


def test_list_names(bus):
    a, b = connect(bus), connect(bus)
    a.bus_ok("RequestName", "su", ("com.example.A", 0))
    names = a.bus_ok("ListNames")[0]
    assert names[0] == BUS_NAME
    assert set(names) == {BUS_NAME, a.unique_name, b.unique_name, "com.example.A"}


def test_list_names_skips_peers_without_hello(bus):
    a = connect(bus)
    pending = Client(bus)
    assert pending.peer in bus.connections
    assert set(a.bus_ok("ListNames")[0]) == {BUS_NAME, a.unique_name}


def test_list_activatable_names_without_activation(bus):
    a = connect(bus)
    assert a.bus_ok("ListActivatableNames") == [[BUS_NAME]]


def test_name_has_owner(bus):
    a = connect(bus)
    a.bus_ok("RequestName", "su", ("com.example.A", 0))
    assert a.bus_ok("NameHasOwner", "s", (BUS_NAME,)) == [True]
    assert a.bus_ok("NameHasOwner", "s", (a.unique_name,)) == [True]
    assert a.bus_ok("NameHasOwner", "s", ("com.example.A",)) == [True]
    assert a.bus_ok("NameHasOwner", "s", ("com.example.B",)) == [False]
    assert a.bus_ok("NameHasOwner", "s", (":1.999",)) == [False]
    assert a.bus_ok("NameHasOwner", "s", ("foo",)) == [False]  # invalid: just false, as dbus-daemon


def test_get_name_owner(bus):
    a = connect(bus)
    a.bus_ok("RequestName", "su", ("com.example.A", 0))
    assert a.bus_ok("GetNameOwner", "s", ("com.example.A",)) == [a.unique_name]
    assert a.bus_ok("GetNameOwner", "s", (a.unique_name,)) == [a.unique_name]
    assert a.bus_ok("GetNameOwner", "s", (BUS_NAME,)) == [BUS_NAME]
    assert a.bus_error("GetNameOwner", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get owner of name 'a.b': no such name")
    assert a.bus_error("GetNameOwner", "s", (":1.99",)) == (
        ERR + "NameHasNoOwner", "Could not get owner of name ':1.99': no such name")
    assert a.bus_error("GetNameOwner", "s", ("foo",)) == (
        ERR + "NameHasNoOwner", "Could not get owner of name 'foo': no such name")


def test_get_connection_unix_user_and_pid(bus):
    a = connect(bus, uid=OTHER_UID, pid=777)
    a.bus_ok("RequestName", "su", ("com.example.A", 0))
    b = connect(bus)
    assert b.bus_ok("GetConnectionUnixUser", "s", (a.unique_name,)) == [OTHER_UID]
    assert b.bus_ok("GetConnectionUnixUser", "s", ("com.example.A",)) == [OTHER_UID]
    assert b.bus_ok("GetConnectionUnixProcessID", "s", ("com.example.A",)) == [777]
    assert b.bus_ok("GetConnectionUnixUser", "s", (BUS_NAME,)) == [os.getuid()]
    assert b.bus_ok("GetConnectionUnixProcessID", "s", (BUS_NAME,)) == [os.getpid()]
    assert b.bus_error("GetConnectionUnixUser", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get UID of name 'a.b': no such name")
    assert b.bus_error("GetConnectionUnixUser", "s", (":1.99",)) == (
        ERR + "NameHasNoOwner", "Could not get UID of name ':1.99': no such name")
    assert b.bus_error("GetConnectionUnixProcessID", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get PID of name 'a.b': no such name")


def test_get_connection_unix_process_id_unknown(bus):
    a = connect(bus, pid=None)
    name, text = a.bus_error("GetConnectionUnixProcessID", "s", (a.unique_name,))
    assert name == ERR + "UnixProcessIdUnknown"
    assert a.unique_name in text


def test_get_connection_credentials(bus):
    a = connect(bus, uid=OTHER_UID, pid=555, gids=(5, 6))
    creds = a.bus_ok("GetConnectionCredentials", "s", (a.unique_name,))[0]
    assert creds["UnixUserID"] == Variant("u", OTHER_UID)
    assert creds["ProcessID"] == Variant("u", 555)
    assert creds["UnixGroupIDs"] == Variant("au", [5, 6])
    own = a.bus_ok("GetConnectionCredentials", "s", (BUS_NAME,))[0]
    assert own["UnixUserID"] == Variant("u", os.getuid())
    assert own["ProcessID"] == Variant("u", os.getpid())
    assert a.bus_error("GetConnectionCredentials", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get credentials of name 'a.b': no such name")


def test_audit_and_selinux_are_unknown(bus):
    a = connect(bus)
    assert a.bus_error("GetAdtAuditSessionData", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get audit session data of name 'a.b': no such name")
    assert a.bus_error("GetConnectionSELinuxSecurityContext", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get security context of name 'a.b': no such name")
    assert a.bus_error("GetAdtAuditSessionData", "s", (a.unique_name,))[0] == ERR + "AdtAuditDataUnknown"
    assert a.bus_error("GetConnectionSELinuxSecurityContext", "s", (a.unique_name,))[0] == \
        ERR + "SELinuxSecurityContextUnknown"


def test_get_id_and_machine_id_and_ping(bus):
    a = connect(bus)
    assert a.bus_ok("GetId") == [GUID]
    assert a.bus_ok("GetMachineId", interface=PEER) == [MACHINE_ID]
    assert a.bus_ok("Ping", interface=PEER) == []
    # the Peer interface is answered on any path
    assert a.bus_ok("Ping", interface=PEER, path="/") == []


def test_driver_methods_on_any_path_and_without_interface(bus):
    a = connect(bus)
    assert a.bus_ok("GetId", path="/some/where") == [GUID]
    assert a.bus_ok("GetId", interface=None) == [GUID]


def test_monitoring_and_stats_only_on_the_bus_path(bus):
    a = connect(bus)
    name, _ = a.bus_error("GetStats", interface=STATS, path="/")
    assert name in (ERR + "UnknownMethod", ERR + "UnknownInterface")
    assert "Serial" in a.bus_ok("GetStats", interface=STATS)[0]


def test_unknown_method_and_interface(bus):
    a = connect(bus)
    assert a.bus_error("Foo") == (ERR + "UnknownMethod", "org.freedesktop.DBus does not understand message Foo")
    assert a.bus_error("Foo", interface="org.freedesktop.DBus.Bogus") == (
        ERR + "UnknownInterface", "org.freedesktop.DBus does not understand message Foo")
    assert a.bus_error("Foo", interface=None)[0] == ERR + "UnknownMethod"


def test_wrong_arguments(bus):
    a = connect(bus)
    assert a.bus_error("RequestName", "s", ("foo",)) == (
        ERR + "InvalidArgs", "Call to RequestName has wrong args (s, expected su)")
    assert a.bus_error("GetId", "s", ("x",)) == (ERR + "InvalidArgs", "Call to GetId has wrong args (s, expected )")


def test_driver_answers_calls_flagged_no_reply_expected(bus):
    # Checked against dbus-daemon 1.14: it replies anyway.
    a = connect(bus)
    s1 = a.driver("RequestName", "su", ("com.example.Quiet", 0), flags=NO_REPLY_EXPECTED)
    s2 = a.driver("Foo", flags=NO_REPLY_EXPECTED)
    msgs = a.received()
    assert [(m.type, m.member, m.reply_serial) for m in msgs] == [
        (SIGNAL, "NameAcquired", None), (METHOD_RETURN, None, s1), (ERROR, None, s2)]
    assert msgs[2].error_name == ERR + "UnknownMethod"
    assert a.bus_ok("GetNameOwner", "s", ("com.example.Quiet",)) == [a.unique_name]


def test_signals_and_replies_to_the_driver_are_dropped(bus):
    a = connect(bus)
    a.signal("Whatever", destination=BUS_NAME)
    a.send(METHOD_RETURN, destination=BUS_NAME, reply_serial=1)
    a.send(ERROR, destination=BUS_NAME, reply_serial=1, error_name="a.b.C")
    assert a.received() == []
    assert not a.closed


def test_start_service_by_name_needs_a_service_file_even_for_an_owned_name(bus):
    # dbus-daemon looks for the .service file before it looks for an owner
    # (tests/integration/test_activation.py checks it live)
    a, b = connect(bus), connect(bus)
    b.bus_ok("RequestName", "su", ("com.example.Running", 0))
    for name in ("com.example.Running", b.unique_name, "a.b"):
        assert a.bus_error("StartServiceByName", "su", (name, 0)) == (
            ERR + "ServiceUnknown", f"The name {name} was not provided by any .service files")


def test_start_service_by_name_of_the_bus(bus):
    a = connect(bus)
    assert a.bus_error("StartServiceByName", "su", (BUS_NAME, 0)) == (
        ERR + "ServiceUnknown", "The name org.freedesktop.DBus was not provided by any .service files")


def test_update_activation_environment(bus):
    owner = connect(bus)
    assert owner.bus_ok("UpdateActivationEnvironment", "a{ss}", ({"A": "1"},)) == []
    assert bus.driver.activation_environment == {"A": "1"}
    other = connect(bus, uid=OTHER_UID)
    assert other.bus_error("UpdateActivationEnvironment", "a{ss}", ({"B": "2"},))[0] == ERR + "AccessDenied"
    assert "B" not in bus.driver.activation_environment
    # only at the canonical path, though org.freedesktop.DBus is on every path
    name, text = owner.bus_error("UpdateActivationEnvironment", "a{ss}", ({"C": "3"},), path="/")
    assert name == ERR + "AccessDenied" and "canonical object path" in text
    assert "C" not in bus.driver.activation_environment


def test_properties_only_at_the_canonical_path(bus):
    a = connect(bus)
    for member, sig, body in (("Get", "ss", (BUS_IFACE, "Features")), ("GetAll", "s", (BUS_IFACE,)),
                              ("Set", "ssv", (BUS_IFACE, "Features", Variant("as", [])))):
        assert a.bus_error(member, sig, body, interface=PROPS, path="/")[0] == ERR + "UnknownInterface"
        # without an interface, the member is looked for only where it is here
        assert a.bus_error(member, sig, body, interface=None, path="/")[0] == ERR + "UnknownMethod"
    # a bus interface without properties has none, it is not unknown
    assert a.bus_ok("GetAll", "s", (MONITORING,), interface=PROPS) == [{}]
    # org.freedesktop.DBus itself stays on every path
    assert a.bus_ok("GetId", path="/")


def test_reload_config_without_a_config(bus):
    a = connect(bus)
    assert a.bus_ok("ReloadConfig") == []


def test_reload_config_failure(bus):
    a = connect(bus)

    def broken():
        raise RuntimeError("bad file")
    bus.driver.reload_config = broken
    name, text = a.bus_error("ReloadConfig")
    assert name == ERR + "Failed" and "bad file" in text


def test_properties(bus):
    a = connect(bus)
    features = a.bus_ok("Get", "ss", (BUS_IFACE, "Features"), interface=PROPS)[0]
    assert features.signature == "as"
    interfaces = a.bus_ok("Get", "ss", (BUS_IFACE, "Interfaces"), interface=PROPS)[0]
    assert MONITORING in interfaces.value
    allprops = a.bus_ok("GetAll", "s", (BUS_IFACE,), interface=PROPS)[0]
    assert set(allprops) >= {"Features", "Interfaces"}
    assert a.bus_error("Get", "ss", (BUS_IFACE, "Nope"), interface=PROPS) == (
        ERR + "UnknownProperty", 'Property "org.freedesktop.DBus.Nope" not found')
    assert a.bus_error("Get", "ss", ("a.b", "Nope"), interface=PROPS) == (
        ERR + "UnknownInterface", 'Interface "a.b" not found')
    assert a.bus_error("GetAll", "s", ("a.b",), interface=PROPS) == (
        ERR + "UnknownInterface", 'Interface "a.b" not found')
    assert a.bus_error("Set", "ssv", (BUS_IFACE, "Features", Variant("s", "x")), interface=PROPS) == (
        ERR + "PropertyReadOnly", "Property 'org.freedesktop.DBus.Features' cannot be set")


def test_introspect(bus):
    a = connect(bus)
    xml = a.bus_ok("Introspect", interface=INTROSPECTABLE)[0]
    root = ET.fromstring(xml[xml.index("<node"):])
    ifaces = {i.get("name") for i in root.iter("interface")}
    assert {BUS_IFACE, PROPS, INTROSPECTABLE, PEER} <= ifaces
    methods = {m.get("name") for i in root.iter("interface") if i.get("name") == BUS_IFACE
               for m in i.iter("method")}
    assert {"Hello", "RequestName", "ReleaseName", "AddMatch", "RemoveMatch", "ListQueuedOwners"} <= methods


def test_stats_need_privilege(bus):
    other = connect(bus, uid=OTHER_UID)
    assert other.bus_error("GetStats", interface=STATS)[0] == ERR + "AccessDenied"
    owner = connect(bus)
    stats = owner.bus_ok("GetConnectionStats", "s", (other.unique_name,), interface=STATS)[0]
    assert stats["UniqueName"] == Variant("s", other.unique_name)


# -- unicast routing -----------------------------------------------------------------


def test_unicast_by_unique_name(bus):
    a, b = connect(bus), connect(bus)
    serial = a.call(b.unique_name, "Frob", "s", ("x",), path="/obj", interface="com.example.I")
    (m,) = b.received()
    assert (m.type, m.serial, m.sender, m.destination) == (METHOD_CALL, serial, a.unique_name, b.unique_name)
    assert (m.path, m.interface, m.member, m.body()) == ("/obj", "com.example.I", "Frob", ["x"])
    assert a.received() == []


def test_unicast_by_well_known_name(bus):
    a, b = connect(bus), connect(bus)
    b.bus_ok("RequestName", "su", ("com.example.B", 0))
    b.clear()
    a.call("com.example.B", "Frob")
    (m,) = b.received()
    assert m.destination == "com.example.B" and m.sender == a.unique_name


def test_forged_sender_is_replaced(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", sender=BUS_NAME)
    (m,) = b.received()
    assert m.sender == a.unique_name


def test_forged_sender_big_endian(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", "u", (7,), sender=":1.999", endian="B")
    (m,) = b.received()
    assert m.endian == "B" and m.sender == a.unique_name and m.body() == [7]


def test_service_unknown_for_missing_well_known_name(bus):
    a = connect(bus)
    serial = a.call("com.example.Missing", "Frob")
    (r,) = a.received()
    assert (r.type, r.error_name, r.reply_serial) == (ERROR, ERR + "ServiceUnknown", serial)
    assert r.body() == ["The name com.example.Missing was not provided by any .service files"]
    assert r.sender == BUS_NAME and r.destination == a.unique_name


def test_service_unknown_for_missing_unique_name(bus):
    a = connect(bus)
    a.call(":1.999", "Frob")
    (r,) = a.received()
    assert (r.error_name, r.body()) == (ERR + "ServiceUnknown",
                                        ["The name :1.999 was not provided by any .service files"])


NO_AUTO_START = 2


@pytest.mark.parametrize("dest", ["com.example.Missing", ":1.999"])
def test_missing_destination_answered_even_without_reply_expected(bus, dest):
    # Checked against dbus-daemon 1.14: NO_REPLY_EXPECTED does not silence the error.
    a = connect(bus)
    serial = a.call(dest, "Frob", flags=NO_REPLY_EXPECTED)
    (r,) = a.received()
    assert (r.error_name, r.reply_serial, r.body()) == (
        ERR + "ServiceUnknown", serial, [f"The name {dest} was not provided by any .service files"])


@pytest.mark.parametrize("dest", ["com.example.Missing", ":1.999"])
def test_missing_destination_with_no_auto_start(bus, dest):
    # Checked against dbus-daemon 1.14, for method calls and signals alike.
    a = connect(bus)
    s1 = a.call(dest, "Frob", flags=NO_AUTO_START)
    s2 = a.signal("S", destination=dest, flags=NO_AUTO_START)
    assert [(r.error_name, r.reply_serial, r.body()[0]) for r in a.received()] == [
        (ERR + "NameHasNoOwner", s1, f'Name "{dest}" does not exist'),
        (ERR + "NameHasNoOwner", s2, f'Name "{dest}" does not exist'),
    ]


def test_signal_to_missing_destination(bus):
    a = connect(bus)
    serial = a.signal("S", destination="com.example.Missing")
    (r,) = a.received()
    assert (r.error_name, r.reply_serial, r.body()) == (
        ERR + "ServiceUnknown", serial, ["The name com.example.Missing was not provided by any .service files"])


def test_unicast_signal_goes_only_to_its_destination(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    c.bus_ok("AddMatch", "s", ("type='signal'",))
    a.signal("S", destination=b.unique_name)
    assert [m.member for m in b.received()] == ["S"]
    assert c.received() == []


def test_messages_to_self(bus):
    a = connect(bus)
    serial = a.call(a.unique_name, "Frob")
    (m,) = a.received()
    assert m.serial == serial and m.sender == a.unique_name
    a.reply(m)
    (r,) = a.received()
    assert r.type == METHOD_RETURN and r.reply_serial == serial


# -- reply tracking ------------------------------------------------------------------


def test_reply_delivered_once(bus):
    a, b = connect(bus), connect(bus)
    serial = a.call(b.unique_name, "Frob")
    (call,) = b.received()
    b.reply(call, "s", ("answer",))
    (r,) = a.received()
    assert (r.type, r.reply_serial, r.sender, r.destination, r.body()) == (
        METHOD_RETURN, serial, b.unique_name, a.unique_name, ["answer"])
    b.reply(call, "s", ("again",))
    b.error(call)
    assert a.received() == []


def test_error_reply_delivered_once(bus):
    a, b = connect(bus), connect(bus)
    serial = a.call(b.unique_name, "Frob")
    (call,) = b.received()
    b.error(call, "com.example.Error.Bad", "no")
    (r,) = a.received()
    assert (r.type, r.error_name, r.reply_serial, r.body()) == (ERROR, "com.example.Error.Bad", serial, ["no"])
    b.reply(call)
    assert a.received() == []


def test_unsolicited_reply_dropped(bus):
    a, b = connect(bus), connect(bus)
    b.send(METHOD_RETURN, destination=a.unique_name, reply_serial=1)
    b.send(ERROR, destination=a.unique_name, reply_serial=1, error_name="a.b.C")
    assert a.received() == []
    assert not b.closed


def test_reply_from_someone_else_dropped(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    serial = a.call(b.unique_name, "Frob")
    c.send(METHOD_RETURN, destination=a.unique_name, reply_serial=serial)
    assert a.received() == []
    (call,) = b.received()
    b.reply(call)
    assert [m.reply_serial for m in a.received()] == [serial]


def test_reply_addressed_by_well_known_name(bus):
    a, b = connect(bus), connect(bus)
    a.bus_ok("RequestName", "su", ("com.example.Caller", 0))
    a.clear()
    serial = a.call(b.unique_name, "Frob")
    (call,) = b.received()
    b.send(METHOD_RETURN, destination="com.example.Caller", reply_serial=call.serial)
    (r,) = a.received()
    assert r.reply_serial == serial


def test_no_reply_when_callee_disconnects(bus):
    a, b = connect(bus), connect(bus)
    s1 = a.call(b.unique_name, "One")
    s2 = a.call(b.unique_name, "Two")
    answered = b.received()[0]
    b.reply(answered)
    a.clear()
    bus.disconnect(b.peer)
    errs = [m for m in a.received() if m.type == ERROR]
    assert [(m.error_name, m.reply_serial) for m in errs] == [(ERR + "NoReply", s2)]
    assert errs[0].body() == ["Message recipient disconnected from message bus without replying"]
    assert errs[0].sender == BUS_NAME
    assert s1 != s2


def test_no_reply_expected_means_no_tracking(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", flags=NO_REPLY_EXPECTED)
    (call,) = b.received()
    assert call.flags & NO_REPLY_EXPECTED
    b.reply(call)
    assert a.received() == []  # a reply nobody asked for
    a.call(b.unique_name, "Frob", flags=NO_REPLY_EXPECTED)
    b.clear()
    bus.disconnect(b.peer)
    assert [m for m in a.received() if m.type == ERROR] == []
    assert a.peer.pending_calls == 0


def test_caller_disconnecting_before_the_reply(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob")
    (call,) = b.received()
    bus.disconnect(a.peer)
    b.reply(call)  # nowhere to go; must not crash or write to a closed sink
    assert not b.closed


def test_same_serial_from_two_callers(bus):
    a, c, b = connect(bus), connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", serial=100)
    c.call(b.unique_name, "Frob", serial=100)
    calls = b.received()
    b.reply(calls[1])
    assert [m.reply_serial for m in c.received()] == [100]
    assert a.received() == []
    b.reply(calls[0])
    assert [m.reply_serial for m in a.received()] == [100]


def test_max_replies_per_connection():
    bus = make_bus(max_replies_per_connection=2)
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "One")
    a.call(b.unique_name, "Two")
    s3 = a.call(b.unique_name, "Three")
    (r,) = a.received()
    assert (r.error_name, r.reply_serial) == (ERR + "LimitsExceeded", s3)
    assert r.body() == ["The maximum number of pending replies per connection has been reached"]
    calls = b.received()
    assert [m.member for m in calls] == ["One", "Two"]
    # calls without a reply are not limited
    a.call(b.unique_name, "Four", flags=NO_REPLY_EXPECTED)
    assert [m.member for m in b.received()] == ["Four"]
    # a reply frees a slot
    b.reply(calls[0])
    a.clear()
    a.call(b.unique_name, "Five")
    assert [m.member for m in b.received()] == ["Five"]


def test_full_outgoing_queue_limits_method_calls():
    bus = make_bus(max_outgoing_bytes=1000)
    a, b = connect(bus), connect(bus)
    b.sink.queued_bytes = 1001
    serial = a.call(b.unique_name, "Frob")
    (r,) = a.received()
    assert (r.error_name, r.reply_serial) == (ERR + "LimitsExceeded", serial)
    assert b.received() == []


# -- ordering ------------------------------------------------------------------------


def test_per_sender_order_preserved(bus):
    a, b = connect(bus), connect(bus)
    b.bus_ok("AddMatch", "s", ("type='signal',sender='%s'" % a.unique_name,))
    b.clear()
    sent = []
    for i in range(60):
        if i % 3 == 0:
            sent.append(a.call(b.unique_name, "Call", "u", (i,), flags=NO_REPLY_EXPECTED))
        elif i % 3 == 1:
            sent.append(a.signal("Broadcast", "u", (i,)))
        else:
            sent.append(a.signal("Unicast", "u", (i,), destination=b.unique_name))
    got = b.received()
    assert [m.serial for m in got] == sent
    assert [m.body()[0] for m in got] == list(range(60))


# -- monitors ------------------------------------------------------------------------


def become_monitor(c, rules=()):
    c.bus_ok("BecomeMonitor", "asu", (list(rules), 0), interface=MONITORING)


def test_become_monitor(bus):
    w = connect(bus)
    w.bus_ok("AddMatch", "s", ("member='NameOwnerChanged'",))
    m = connect(bus)
    w.clear()
    serial = m.driver("BecomeMonitor", "asu", ([], 0), interface=MONITORING)
    msgs = m.received()
    assert msgs[0].type == METHOD_RETURN and msgs[0].reply_serial == serial
    assert sig_summary(msgs[1:2]) == [("NameLost", (m.unique_name,))]
    assert msgs[1].destination == m.unique_name
    # and no copy of the NameOwnerChanged its own change caused (dbus-daemon
    # releases the names before the connection becomes a monitor)
    assert len(msgs) == 2, sig_summary(msgs[2:])
    assert sig_summary(w.received()) == [("NameOwnerChanged", (m.unique_name, m.unique_name, ""))]
    assert w.bus_ok("NameHasOwner", "s", (m.unique_name,)) == [False]
    assert m.unique_name not in w.bus_ok("ListNames")[0]


def test_monitor_loses_its_names_and_rules(bus):
    w = connect(bus)
    w.bus_ok("AddMatch", "s", ("member='NameOwnerChanged'",))
    m = connect(bus)
    m.bus_ok("RequestName", "su", ("com.example.Mon", 0))
    m.bus_ok("AddMatch", "s", ("type='signal'",))
    w.clear()
    m.clear()
    become_monitor(m)
    assert sig_summary(w.received()) == [
        ("NameOwnerChanged", ("com.example.Mon", m.unique_name, "")),
        ("NameOwnerChanged", (m.unique_name, m.unique_name, "")),
    ]
    assert w.bus_ok("NameHasOwner", "s", ("com.example.Mon",)) == [False]
    assert m.peer.rules == []


def test_monitor_receives_copies_of_traffic(bus):
    a, b = connect(bus), connect(bus)
    m = connect(bus)
    become_monitor(m)
    m.clear()
    serial = a.call(b.unique_name, "Frob", "s", ("x",))
    call = b.received()[0]
    b.reply(call, "s", ("y",))
    a.signal("Ping")
    got = m.received()
    assert [(x.type, x.sender, x.destination) for x in got] == [
        (METHOD_CALL, a.unique_name, b.unique_name),
        (METHOD_RETURN, b.unique_name, a.unique_name),
        (SIGNAL, a.unique_name, None),
    ]
    assert got[0].serial == serial and got[0].body() == ["x"]
    assert got[1].body() == ["y"]


def test_monitor_sees_driver_calls_and_replies(bus):
    a = connect(bus)
    m = connect(bus)
    become_monitor(m)
    m.clear()
    serial = a.driver("GetId")
    got = m.received()
    assert [(x.type, x.sender) for x in got] == [(METHOD_CALL, a.unique_name), (METHOD_RETURN, BUS_NAME)]
    assert got[1].reply_serial == serial and got[1].destination == a.unique_name


def test_monitor_copies_held_twice_follow_the_outer_call(bus):
    # A hold inside a hold (the driver acting while an outer call is
    # held) must neither drop the outer copies nor release them early.
    a = connect(bus)
    m = connect(bus)
    become_monitor(m)
    m.clear()
    monitors = bus.monitors
    assert monitors.hold() is True
    a.signal("First")
    assert monitors.hold() is False
    a.signal("Second")
    assert m.received() == []
    monitors.release()
    assert [x.member for x in m.received()] == ["First", "Second"]
    assert monitors.held is None


def test_monitor_with_rules_gets_only_matching(bus):
    a, b = connect(bus), connect(bus)
    m = connect(bus)
    become_monitor(m, ["type='signal',member='Wanted'"])
    m.clear()
    a.signal("Wanted")
    a.signal("Unwanted")
    a.call(b.unique_name, "Wanted")
    assert [(x.type, x.member) for x in m.received()] == [(SIGNAL, "Wanted")]


def test_monitor_that_sends_is_disconnected(bus):
    a = connect(bus)
    m = connect(bus)
    become_monitor(m)
    m.call(a.unique_name, "Frob")
    assert m.closed and "monitor" in m.closed
    assert a.received() == []


def test_messages_to_a_monitors_former_name_fail(bus):
    a = connect(bus)
    m = connect(bus)
    become_monitor(m)
    m.clear()
    a.call(m.unique_name, "Frob")
    (r,) = a.received()
    assert r.error_name == ERR + "ServiceUnknown"
    # only the monitor's copies: the call and the bus's error
    assert [(x.type, x.sender) for x in m.received()] == [(METHOD_CALL, a.unique_name), (ERROR, BUS_NAME)]


def test_become_monitor_needs_privilege_and_no_flags(bus):
    other = connect(bus, uid=OTHER_UID)
    assert other.bus_error("BecomeMonitor", "asu", ([], 0), interface=MONITORING)[0] == ERR + "AccessDenied"
    owner = connect(bus)
    assert owner.bus_error("BecomeMonitor", "asu", ([], 1), interface=MONITORING) == (
        ERR + "InvalidArgs", "BecomeMonitor does not support any flags yet")
    assert owner.bus_error("BecomeMonitor", "asu", (["bogus='x'"], 0), interface=MONITORING)[0] == \
        ERR + "MatchRuleInvalid"
    assert not owner.peer.is_monitor


def test_monitor_disconnect(bus):
    a = connect(bus)
    m = connect(bus)
    become_monitor(m)
    bus.disconnect(m.peer)
    a.signal("S")  # no monitors left to copy to
    assert bus.monitors == []


# -- fd passing ------------------------------------------------------------------------


def test_unix_fds_declared_without_fds_disconnects(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", "h", (0,), unix_fds=1)
    assert a.closed
    assert b.received() == []


def test_fds_forwarded_to_a_peer_that_negotiated_them(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", "h", (0,), fds=(1001,))
    (m,) = b.received()
    assert m.unix_fds == 1 and m.fds == (1001,)
    assert not a.closed


def test_fds_to_a_peer_without_fd_support_are_refused(bus):
    a = connect(bus)
    b = connect(bus, unix_fds=False)
    serial = a.call(b.unique_name, "Frob", "h", (0,), fds=(1001,))
    assert b.received() == []
    (r,) = a.received()
    assert (r.error_name, r.reply_serial) == (ERR + "NotSupported", serial)
    assert r.body() == ["Tried to send message with Unix file descriptors to a client that doesn't support that."]
    # not tracked as pending: a later reply from b is dropped
    assert a.peer.pending_calls == 0


def test_broadcast_with_fds_skips_peers_without_fd_support(bus):
    a = connect(bus)
    yes = connect(bus)
    no = connect(bus, unix_fds=False)
    for c in (yes, no):
        c.bus_ok("AddMatch", "s", ("type='signal'",))
        c.clear()
    a.signal("S", "h", (0,), fds=(7,))
    assert [m.fds for m in yes.received()] == [(7,)]
    assert no.received() == []


def test_too_many_fds_in_one_message_disconnects():
    bus = make_bus(max_message_unix_fds=2)
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", "hhh", (0, 1, 2), fds=(10, 11, 12))
    assert a.closed


def test_released_fds_are_closed_by_the_bus():
    released = []
    bus = make_bus()
    bus.release_fds = lambda fds: released.extend(fds)
    a = connect(bus)
    b = connect(bus, unix_fds=False)
    a.call(b.unique_name, "Frob", "h", (0,), fds=(55,))
    assert released == [55]


# -- a peer's sink ------------------------------------------------------------------------


def test_nothing_is_written_to_a_kicked_peer(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob")
    (call,) = b.received()
    b.send_raw(b"l\x09\x00\x01" + b"\0" * 12)  # bad type: kicked
    assert b.closed
    # FakeSink asserts that nothing more is written to b
    a.call(b.unique_name, "Again")
    a.signal("S")
    assert [m.error_name for m in a.received()] == [ERR + "NoReply", ERR + "ServiceUnknown"]


def test_sender_header_of_bus_messages(bus):
    a = connect(bus)
    r = a.bus_call("GetId")
    fields = Message(build_message(METHOD_CALL, 1, path="/", member="M")).sender
    assert fields is None
    assert r.sender == BUS_NAME
    assert FIELD_SENDER == 7


def test_client_written_container_instance_field_is_stripped(bus):
    from sandbus.wire.marshal import unmarshal
    import struct
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob", "s", ("x",), sender=":1.999",
           container_instance="/org/freedesktop/DBus/Containers1/c1")
    ((data, _),) = b.sink.sent[b._read:]
    fields_len = struct.unpack_from("<I", data, 12)[0]
    header = unmarshal("yyyyuua(yv)", data, "l", end=16 + fields_len)
    codes = {code: v.value for code, v in header[6]}
    assert 10 not in codes
    assert codes[7] == a.unique_name
    assert Message(data).body() == ["x"]


# -- connection limits at Hello ------------------------------------------------------


def test_max_completed_connections_is_checked_at_hello():
    """Only completed connections count; the next Hello gets LimitsExceeded
    and the connection stays, free to try again (dbus-daemon's driver.c)."""
    bus = make_bus(max_completed_connections=2)
    connect(bus)
    waiting = connect(bus, hello=False)  # not completed: does not count
    second = connect(bus)
    assert waiting.bus_error("Hello") == (ERR + "LimitsExceeded",
                                          "The maximum number of active connections has been reached")
    assert waiting.sink.closed is None
    bus.disconnect(second.peer)
    assert waiting.hello().startswith(":")


def test_max_connections_per_user_is_checked_at_hello():
    bus = make_bus(max_connections_per_user=1)
    connect(bus)
    other_uid = connect(bus, uid=OTHER_UID)  # another uid has its own count
    assert other_uid.unique_name
    again = connect(bus, hello=False)
    name, text = again.bus_error("Hello")
    assert name == ERR + "LimitsExceeded" and f"UID {os.getuid()}" in text
    assert again.sink.closed is None
