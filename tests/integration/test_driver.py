"""The org.freedesktop.DBus driver, as dbus-daemon 1.14 implements it."""

import os
import re
import xml.etree.ElementTree as ET

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call

from itutil import (
    BUS_IFACE,
    BUS_NAME,
    BUS_PATH,
    Client,
    DBusErrorReply,
    describe,
    error_name,
    is_signal,
    run,
    wait_until,
)

PEER = "org.freedesktop.DBus.Peer"
PROPS = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
ERR = "org.freedesktop.DBus.Error."
UNIQUE_RE = re.compile(r"^:1\.[0-9]+$")


@pytest.fixture
def client(bus):
    with Client(bus.address) as c:
        yield c


# -- Hello and unique names --------------------------------------------------


def test_unique_names_format_and_distinct(bus):
    with Client(bus.address) as a, Client(bus.address) as b:
        assert UNIQUE_RE.match(a.unique_name), a.unique_name
        assert UNIQUE_RE.match(b.unique_name), b.unique_name
        assert a.unique_name != b.unique_name
        # the first unique name is followed by NameAcquired for it
        m = a.wait_signal("NameAcquired", sender=BUS_NAME, body0=a.unique_name)
        assert m.header.fields[6] == a.unique_name  # destination


def test_hello_twice_fails(client):
    e = client.bus_error("Hello")
    assert e.name == ERR + "Failed"


def test_unique_names_not_reused(bus):
    seen = set()
    for _ in range(3):
        with Client(bus.address) as c:
            assert c.unique_name not in seen
            seen.add(c.unique_name)


# -- simple queries -------------------------------------------------------


def test_get_id(client):
    (bus_id,) = client.bus("GetId")
    assert re.fullmatch(r"[0-9a-f]{32}", bus_id), bus_id
    assert client.bus("GetId") == (bus_id,)


def test_list_names_contains_driver_and_self(bus, client):
    with Client(bus.address) as other:
        (names,) = client.bus("ListNames")
        assert BUS_NAME in names
        assert client.unique_name in names
        assert other.unique_name in names
    # once disconnected the name disappears (the bus notices asynchronously)
    wait_until(lambda: other.unique_name not in client.bus("ListNames")[0],
               what="disconnected name to leave ListNames")


def test_name_has_owner(client):
    assert client.bus("NameHasOwner", "s", BUS_NAME) == (True,)
    assert client.bus("NameHasOwner", "s", client.unique_name) == (True,)
    assert client.bus("NameHasOwner", "s", "com.example.Missing") == (False,)
    assert client.bus("NameHasOwner", "s", ":1.9999") == (False,)


def test_get_name_owner(client):
    assert client.bus("GetNameOwner", "s", BUS_NAME) == (BUS_NAME,)
    assert client.bus("GetNameOwner", "s", client.unique_name) == (client.unique_name,)
    client.bus("RequestName", "su", "com.example.Owned", 0)
    assert client.bus("GetNameOwner", "s", "com.example.Owned") == (client.unique_name,)


@pytest.mark.parametrize("name", ["com.example.Missing", ":1.9999", "bad..name"])
def test_get_name_owner_no_owner(client, name):
    e = client.bus_error("GetNameOwner", "s", name)
    assert e.name == ERR + "NameHasNoOwner"
    assert name in e.text


def test_list_activatable_names(client):
    (names,) = client.bus("ListActivatableNames")
    assert BUS_NAME in names
    assert len(names) == len(set(names))


def test_start_service_by_name_unknown(client):
    e = client.bus_error("StartServiceByName", "su", "com.example.NotActivatable", 0)
    assert e.name == ERR + "ServiceUnknown"


def test_connection_unix_user_and_pid(bus, client):
    assert client.bus("GetConnectionUnixUser", "s", client.unique_name) == (os.getuid(),)
    assert client.bus("GetConnectionUnixProcessID", "s", client.unique_name) == (os.getpid(),)
    # the bus driver itself is the daemon's process
    assert client.bus("GetConnectionUnixUser", "s", BUS_NAME) == (os.getuid(),)
    assert client.bus("GetConnectionUnixProcessID", "s", BUS_NAME) == (bus.pid,)
    # well-known names resolve to their owner
    client.bus("RequestName", "su", "com.example.Creds", 0)
    assert client.bus("GetConnectionUnixProcessID", "s", "com.example.Creds") == (os.getpid(),)


@pytest.mark.parametrize("method", [
    "GetConnectionUnixUser", "GetConnectionUnixProcessID", "GetConnectionCredentials",
    "GetConnectionSELinuxSecurityContext", "GetAdtAuditSessionData",
])
def test_connection_queries_missing_name(client, method):
    e = client.bus_error(method, "s", ":1.9999")
    assert e.name == ERR + "NameHasNoOwner", e
    e = client.bus_error(method, "s", "com.example.Missing")
    assert e.name == ERR + "NameHasNoOwner", e


def test_connection_credentials(bus, client):
    (creds,) = client.bus("GetConnectionCredentials", "s", client.unique_name)
    assert creds["UnixUserID"] == ("u", os.getuid())
    assert creds["ProcessID"] == ("u", os.getpid())
    sig, gids = creds["UnixGroupIDs"]
    assert sig == "au"
    assert os.getgid() in gids
    assert sorted(gids) == gids
    # the driver: uid and pid of the daemon
    (creds,) = client.bus("GetConnectionCredentials", "s", BUS_NAME)
    assert creds["UnixUserID"] == ("u", os.getuid())
    assert creds["ProcessID"] == ("u", bus.pid)


def test_selinux_and_audit_data_unknown(client):
    # no SELinux / no audit: specific errors, not a generic failure
    e = client.bus_error("GetConnectionSELinuxSecurityContext", "s", client.unique_name)
    assert e.name == ERR + "SELinuxSecurityContextUnknown"
    e = client.bus_error("GetAdtAuditSessionData", "s", client.unique_name)
    assert e.name == ERR + "AdtAuditDataUnknown"


def test_update_activation_environment_and_reload_config(client):
    assert client.bus("UpdateActivationEnvironment", "a{ss}", {"SANDBUS_T": "1"}) == ()
    assert client.bus("ReloadConfig") == ()


# -- Peer, Introspectable, Properties ------------------------------------------


def test_peer_ping_and_machine_id(client):
    assert client.call(BUS_NAME, BUS_PATH, PEER, "Ping") == ()
    (mid,) = client.call(BUS_NAME, BUS_PATH, PEER, "GetMachineId")
    assert re.fullmatch(r"[0-9a-f]{32}", mid), mid
    for f in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(f) as fh:
                assert mid == fh.read().strip()
            break
        except FileNotFoundError:
            continue


def test_driver_answers_on_any_path(client):
    # dbus-daemon 1.14 answers org.freedesktop.DBus methods on every path
    (a,) = client.call(BUS_NAME, "/", BUS_IFACE, "GetId")
    (b,) = client.call(BUS_NAME, "/some/other/path", BUS_IFACE, "GetId")
    assert a == b


def test_method_call_without_interface(client):
    # no INTERFACE field: dbus-daemon finds the method by member name
    assert client.call(BUS_NAME, BUS_PATH, None, "NameHasOwner", "s", (BUS_NAME,)) == (True,)


@pytest.mark.parametrize("member,signature,body,want", [
    ("GetNameOwner", "s", (BUS_NAME,), (BUS_NAME,)),
    ("NameHasOwner", "s", ("com.example.Nobody",), (False,)),
    ("GetId", None, (), None),
    ("AddMatch", "s", ("type='signal',member='NoInterface'",), ()),
    ("RequestName", "su", ("com.example.NoInterface", 4), (1,)),
])
def test_more_methods_without_interface(client, member, signature, body, want):
    msg = new_method_call(DBusAddress(BUS_PATH, bus_name=BUS_NAME), member, signature, body)
    assert HeaderFields.interface not in msg.header.fields
    reply = client.call_msg(msg)
    assert reply.header.message_type == MessageType.method_return, describe(reply)
    if want is not None:
        assert reply.body == want
    else:
        assert re.match(r"^[0-9a-f]{32}$", reply.body[0])


def test_list_names_without_interface(client):
    msg = new_method_call(DBusAddress(BUS_PATH, bus_name=BUS_NAME), "ListNames")
    assert HeaderFields.interface not in msg.header.fields
    reply = client.call_msg(msg)
    assert reply.header.message_type == MessageType.method_return, describe(reply)
    assert {BUS_NAME, client.unique_name} <= set(reply.body[0])


def _introspect(client, path=BUS_PATH):
    (xml,) = client.call(BUS_NAME, path, INTROSPECTABLE, "Introspect")
    return xml


def test_introspect_xml(client):
    xml = _introspect(client)
    assert xml.startswith("<!DOCTYPE node PUBLIC")
    root = ET.fromstring(xml)
    ifaces = {i.get("name"): i for i in root.findall("interface")}
    for name in (BUS_IFACE, PROPS, INTROSPECTABLE, PEER,
                 "org.freedesktop.DBus.Monitoring", "org.freedesktop.DBus.Debug.Stats"):
        assert name in ifaces, sorted(ifaces)
    methods = {m.get("name") for m in ifaces[BUS_IFACE].findall("method")}
    for m in ("Hello", "RequestName", "ReleaseName", "StartServiceByName",
              "UpdateActivationEnvironment", "NameHasOwner", "ListNames",
              "ListActivatableNames", "AddMatch", "RemoveMatch", "GetNameOwner",
              "ListQueuedOwners", "GetConnectionUnixUser",
              "GetConnectionUnixProcessID", "GetAdtAuditSessionData",
              "GetConnectionSELinuxSecurityContext", "ReloadConfig", "GetId",
              "GetConnectionCredentials"):
        assert m in methods, m
    signals = {s.get("name") for s in ifaces[BUS_IFACE].findall("signal")}
    assert {"NameOwnerChanged", "NameLost", "NameAcquired"} <= signals
    props = {p.get("name"): p for p in ifaces[BUS_IFACE].findall("property")}
    assert props["Features"].get("type") == "as"
    assert props["Interfaces"].get("type") == "as"
    # argument signatures of one method
    rn = [m for m in ifaces[BUS_IFACE].findall("method") if m.get("name") == "RequestName"][0]
    args = [(a.get("direction"), a.get("type")) for a in rn.findall("arg")]
    assert args == [("in", "s"), ("in", "u"), ("out", "u")]


def test_introspect_root(client):
    # "/" describes the driver too (dbus-daemon does not list child nodes
    # beyond what it is asked about, but the XML parses and has the driver)
    root = ET.fromstring(_introspect(client, "/"))
    assert BUS_IFACE in {i.get("name") for i in root.findall("interface")}


def test_gdbus_introspect_driver(bus):
    out = run(["gdbus", "introspect", "--session", "--dest", BUS_NAME,
               "--object-path", BUS_PATH], bus).stdout
    assert "interface org.freedesktop.DBus {" in out
    assert "interface org.freedesktop.DBus.Peer {" in out
    assert "interface org.freedesktop.DBus.Introspectable {" in out
    assert "RequestName(in  s arg_0," in out or "RequestName(" in out
    assert "NameOwnerChanged(" in out
    assert "readonly as Features" in out


def test_busctl_introspect_driver(bus):
    out = run(["busctl", f"--address={bus.address}", "introspect", "--no-pager",
               BUS_NAME, BUS_PATH], bus).stdout
    assert "org.freedesktop.DBus" in out
    assert re.search(r"\.GetNameOwner\s+method\s+s\s+s", out), out


def test_properties(client):
    (v,) = client.call(BUS_NAME, BUS_PATH, PROPS, "Get", "ss", (BUS_IFACE, "Features"))
    assert v[0] == "as"
    (v,) = client.call(BUS_NAME, BUS_PATH, PROPS, "Get", "ss", (BUS_IFACE, "Interfaces"))
    assert v[0] == "as"
    assert "org.freedesktop.DBus.Monitoring" in v[1]
    (allp,) = client.call(BUS_NAME, BUS_PATH, PROPS, "GetAll", "s", (BUS_IFACE,))
    assert set(allp) >= {"Features", "Interfaces"}
    assert allp["Interfaces"] == v


def test_properties_errors(client):
    def err(member, sig, *body):
        with pytest.raises(DBusErrorReply) as ei:
            client.call(BUS_NAME, BUS_PATH, PROPS, member, sig, body)
        return ei.value

    assert err("Get", "ss", BUS_IFACE, "NoSuchProp").name == ERR + "UnknownProperty"
    assert err("Get", "ss", "com.example.NoIface", "X").name == ERR + "UnknownInterface"
    assert err("Set", "ssv", BUS_IFACE, "Features", ("as", [])).name == ERR + "PropertyReadOnly"
    assert err("Get", "s", BUS_IFACE).name == ERR + "InvalidArgs"


def test_busctl_get_property(bus):
    out = run(["busctl", f"--address={bus.address}", "get-property", BUS_NAME,
               BUS_PATH, BUS_IFACE, "Interfaces"], bus).stdout
    assert out.startswith("as ")
    assert '"org.freedesktop.DBus.Monitoring"' in out


# -- errors ---------------------------------------------------------------------


def test_unknown_method(client):
    e = client.bus_error("NoSuchMethod")
    assert e.name == ERR + "UnknownMethod"
    e = client.bus_error("NoSuchMethod", iface=PEER)
    assert e.name == ERR + "UnknownMethod"


def test_unknown_interface(client):
    e = client.bus_error("GetId", iface="com.example.NoSuchInterface")
    assert e.name == ERR + "UnknownInterface"


@pytest.mark.parametrize("member,sig,body", [
    ("GetNameOwner", "u", (5,)),
    ("GetNameOwner", None, ()),
    ("NameHasOwner", "ss", ("a.b", "c.d")),
    ("RequestName", "s", ("com.example.X",)),
    ("ListNames", "s", ("x",)),
])
def test_wrong_signature_invalid_args(client, member, sig, body):
    e = client.bus_error(member, sig, *body)
    assert e.name == ERR + "InvalidArgs", e


def test_monitoring_and_stats_only_on_bus_path(client):
    # Monitoring and Debug.Stats exist only at /org/freedesktop/DBus
    e = client.bus_error("GetStats", path="/", iface="org.freedesktop.DBus.Debug.Stats")
    assert e.name == ERR + "UnknownInterface"
    e = client.bus_error("BecomeMonitor", "asu", [], 0, path="/",
                         iface="org.freedesktop.DBus.Monitoring")
    assert e.name == ERR + "UnknownInterface"


def test_stats(client):
    (stats,) = client.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Debug.Stats", "GetStats")
    assert "ActiveConnections" in stats
    (cs,) = client.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Debug.Stats",
                        "GetConnectionStats", "s", (client.unique_name,))
    assert cs["UniqueName"] == ("s", client.unique_name)


def test_get_all_match_rules_in_canonical_form(client):
    """Debug.Stats gives each rule back as dbus-daemon spells it
    (bus/signals.c: match_rule_to_string): fixed key order, every value
    quoted, an apostrophe as '\\'', eavesdrop only when true."""
    rules = {
        "member='Changed',type='signal'": "type='signal',member='Changed'",
        "arg2='x',arg0namespace='com.example',path_namespace='/a',eavesdrop=true":
            "path_namespace='/a',eavesdrop='true',arg0namespace='com.example',arg2='x'",
        "arg1path='/p/',destination=':1.999',sender=org.freedesktop.DBus,path=/o,interface=a.b":
            "interface='a.b',path='/o',sender='org.freedesktop.DBus',destination=':1.999',arg1path='/p/'",
        "arg0=it\\'s,eavesdrop='false',type=method_call": "type='method_call',arg0='it'\\''s'",
        "arg3='a'\\''b'": "arg3='a'\\''b'",
        "": "",
    }
    for text in rules:
        client.add_match(text)
    (all_rules,) = client.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Debug.Stats", "GetAllMatchRules")
    assert sorted(all_rules[client.unique_name]) == sorted(rules.values())


def test_destinationless_method_calls_are_answered_by_the_connection(bus, client):
    """dbus-daemon never dispatches a method call with no destination, nor
    anything on the Peer interface without one: libdbus on the connection
    answers Ping and GetMachineId, and UnknownMethod to the rest, from no
    sender to no destination; monitors see none of it, and a Peer signal is
    not broadcast."""
    mon = Client(bus.address)
    mon.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Monitoring", "BecomeMonitor", "asu", ([], 0))
    with Client(bus.address) as watcher:
        watcher.add_match("")

        def ask(mtype, iface, member):
            m = new_method_call(DBusAddress("/x", bus_name="x.y", interface=iface), member)
            del m.header.fields[HeaderFields.destination]
            if iface is None:
                m.header.fields.pop(HeaderFields.interface, None)
            m.header.message_type = mtype
            r = client.call_msg(m)
            assert HeaderFields.sender not in r.header.fields, describe(r)
            assert HeaderFields.destination not in r.header.fields, describe(r)
            return r

        r = ask(MessageType.method_call, PEER, "Ping")
        assert (r.header.message_type, r.body) == (MessageType.method_return, ())
        r = ask(MessageType.method_call, PEER, "GetMachineId")
        assert r.header.message_type == MessageType.method_return
        assert r.body == client.call(BUS_NAME, BUS_PATH, PEER, "GetMachineId")
        for mtype, member in ((MessageType.method_call, "Nope"), (MessageType.signal, "Ping")):
            r = ask(mtype, PEER, member)
            assert (error_name(r), r.body) == (ERR + "UnknownMethod",
                                               ("Unknown method invoked on org.freedesktop.DBus.Peer interface",))
        for iface in ("com.example.I", None):
            r = ask(MessageType.method_call, iface, "M")
            assert (error_name(r), r.body) == (ERR + "UnknownMethod", (
                f'Method "M" with signature "" on interface "{iface or "(null)"}" doesn\'t exist\n',))
        client.send(new_method_call(DBusAddress("/mark", bus_name=watcher.unique_name, interface="com.example.Mark"),
                                    "Mark"))
        got = watcher.wait_for(lambda m: m.header.fields.get(HeaderFields.member) == "Mark")
        seen = []
        mon.wait_for(lambda m: seen.append(m) or m.header.fields.get(HeaderFields.member) == "Mark")
        ours = [m for m in seen if m.header.fields.get(HeaderFields.sender) == client.unique_name
                or m.header.fields.get(HeaderFields.destination) == client.unique_name]
        # only the GetMachineId call to the bus, its reply, and the mark
        assert [(m.header.message_type, m.header.fields.get(HeaderFields.member)) for m in ours] == [
            (MessageType.method_call, "GetMachineId"), (MessageType.method_return, None),
            (MessageType.method_call, "Mark")], [describe(m) for m in ours]
        watcher.assert_no(lambda m: m.header.fields.get(HeaderFields.interface) == PEER)
        assert got
    mon.close()


def test_start_service_by_name_wants_a_service_file_before_an_owner(client):
    """dbus-daemon looks up the .service file first: a name that has an
    owner but no .service file is ServiceUnknown, not ALREADY_RUNNING (2),
    and so are unique names and the bus's own name."""
    assert client.bus("RequestName", "su", "com.example.Owned", 4) == (1,)
    for name in ("com.example.Owned", client.unique_name, BUS_NAME):
        e = client.bus_error("StartServiceByName", "su", name, 0)
        assert (e.name, e.text) == (ERR + "ServiceUnknown", f"The name {name} was not provided by any .service files")


def test_call_missing_name_service_unknown(client):
    with pytest.raises(DBusErrorReply) as ei:
        client.call("com.example.NotThere", "/", "com.example.X", "Foo")
    assert ei.value.name == ERR + "ServiceUnknown"


def test_call_missing_unique_name(client):
    with pytest.raises(DBusErrorReply) as ei:
        client.call(":1.9999", "/", "com.example.X", "Foo")
    assert ei.value.name == ERR + "ServiceUnknown"


def test_call_missing_name_no_auto_start(client):
    msg = new_method_call(DBusAddress("/", bus_name="com.example.NotThere",
                                      interface="com.example.X"), "Foo")
    msg.header.flags |= 2  # NO_AUTO_START
    reply = client.call_msg(msg)
    assert reply.header.message_type == MessageType.error
    assert error_name(reply) == ERR + "NameHasNoOwner", describe(reply)


def test_dbus_send_service_unknown(bus):
    cp = run(["dbus-send", "--session", "--print-reply", "--dest=com.example.NotThere",
              "/", "com.example.X.Foo"], bus, check=False)
    assert cp.returncode != 0
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in cp.stderr


def test_driver_replies_even_with_no_reply_expected(client):
    # dbus-daemon's driver ignores NO_REPLY_EXPECTED and replies anyway.
    # (It also sets NO_REPLY_EXPECTED on everything it sends; nothing
    # depends on that, so it is not asserted.)
    msg = new_method_call(DBusAddress(BUS_PATH, bus_name=BUS_NAME, interface=BUS_IFACE),
                          "GetId")
    msg.header.flags |= 1  # NO_REPLY_EXPECTED
    serial = client.send(msg)
    reply = client.wait_for(lambda m: m.header.fields.get(5) == serial)
    assert reply.header.message_type == MessageType.method_return
    normal = client.call_msg(new_method_call(
        DBusAddress(BUS_PATH, bus_name=BUS_NAME, interface=BUS_IFACE), "GetId"))
    assert normal.body == reply.body


def test_driver_signal_sender_is_bus(bus, client):
    client.add_match("type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'")
    with Client(bus.address) as other:
        m = client.wait_signal("NameOwnerChanged", body0=other.unique_name)
    assert m.header.fields[7] == BUS_NAME  # sender
    assert m.header.fields[1] == BUS_PATH
    assert m.header.fields[2] == BUS_IFACE
    assert m.body == (other.unique_name, "", other.unique_name)
    m = client.wait_signal("NameOwnerChanged", body0=other.unique_name)
    assert m.body == (other.unique_name, other.unique_name, "")


def test_dbus_send_list_names(bus):
    out = run(["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus",
               "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames"], bus).stdout
    assert 'string "org.freedesktop.DBus"' in out
    assert "method return" in out


def test_busctl_status_and_list(bus):
    with Client(bus.address) as c:
        c.bus("RequestName", "su", "com.example.Listed", 0)
        out = run(["busctl", f"--address={bus.address}", "list", "--no-pager"], bus).stdout
        assert "com.example.Listed" in out
        assert c.unique_name in out
        assert "org.freedesktop.DBus" in out
        out = run(["busctl", f"--address={bus.address}", "status", "--no-pager",
                   "com.example.Listed"], bus).stdout
        assert f"PID={os.getpid()}" in out
        assert f"UID={os.getuid()}" in out


def test_gdbus_call_driver(bus):
    out = run(["gdbus", "call", "--session", "--dest", BUS_NAME, "--object-path",
               BUS_PATH, "--method", "org.freedesktop.DBus.GetNameOwner", BUS_NAME],
              bus).stdout
    assert out.strip() == "('org.freedesktop.DBus',)"


def test_unique_name_signal_order(bus):
    """After Hello, NameAcquired(:unique) is the first signal."""
    with Client(bus.address) as c:
        m = c.wait_for(lambda m: m.header.message_type == MessageType.signal)
        assert is_signal(m, "NameAcquired", body0=c.unique_name), describe(m)


@pytest.mark.parametrize("member,sig,body", [
    ("Get", "ss", (BUS_IFACE, "Features")),
    ("GetAll", "s", (BUS_IFACE,)),
    ("Set", "ssv", (BUS_IFACE, "Features", ("as", []))),
])
def test_properties_only_at_the_canonical_path(client, member, sig, body):
    """dbus-daemon has org.freedesktop.DBus on every path but Properties
    only at /org/freedesktop/DBus (dbus's test-dbus-daemon
    /properties/*-invalid-path)."""
    with pytest.raises(DBusErrorReply) as ei:
        client.call(BUS_NAME, "/", PROPS, member, sig, body)
    assert ei.value.name == ERR + "UnknownInterface"


def test_update_activation_environment_only_at_the_canonical_path(client):
    """dbus's /canonical-path/uae: elsewhere it is AccessDenied."""
    with pytest.raises(DBusErrorReply) as ei:
        client.call(BUS_NAME, "/", BUS_IFACE, "UpdateActivationEnvironment", "a{ss}", ({"A": "1"},))
    assert ei.value.name == ERR + "AccessDenied"
    client.call(BUS_NAME, BUS_PATH, BUS_IFACE, "UpdateActivationEnvironment", "a{ss}", ({"A": "1"},))


@pytest.mark.parametrize("systemd", [False, True])
def test_features_systemd_activation(bus_factory, systemd):
    """Features lists SystemdActivation exactly under --systemd-activation."""
    b = bus_factory(args=("--systemd-activation",) if systemd else ())
    with Client(b.address) as c:
        (v,) = c.call(BUS_NAME, BUS_PATH, PROPS, "Get", "ss", (BUS_IFACE, "Features"))
    assert ("SystemdActivation" in v[1]) == systemd
    assert "HeaderFiltering" in v[1]


@pytest.mark.parametrize("limit", ["max_completed_connections", "max_connections_per_user"])
def test_connection_limit_answers_hello_with_limits_exceeded(bus_factory, limit):
    """Over the limit, Hello gets LimitsExceeded (the connection is not cut
    during authentication), as dbus's /limits/max-* cases expect."""
    b = bus_factory(extra_xml=f'<limit name="{limit}">2</limit>')
    with Client(b.address), Client(b.address):
        cp = run(["dbus-send", f"--bus={b.address}", "--print-reply", "--dest=org.freedesktop.DBus",
                  "/org/freedesktop/DBus", "org.freedesktop.DBus.GetId"], b, check=False)
        assert cp.returncode != 0 and "The maximum number of active connections" in cp.stderr, cp.stderr
    # once one is gone, a new one is served
    with Client(b.address):
        run(["dbus-send", f"--bus={b.address}", "--print-reply", "--dest=org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus.GetId"], b)
