"""Signal routing: match rules (AddMatch/RemoveMatch), unicast signals,
and signals emitted by the stock tools."""

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_signal

from itutil import MINIMAL_CONFIG, TIMEOUT, Client, DaemonBus, describe, is_signal, run, write_config

ERR = "org.freedesktop.DBus.Error."
IFACE = "com.example.Sig"


def sig(path="/s", member="Ping", signature=None, body=(), dest=None, iface=IFACE):
    m = new_signal(DBusAddress(path, interface=iface), member, signature, tuple(body))
    if dest is not None:
        m.header.fields[HeaderFields.destination] = dest
    return m


def ours(m):
    return (m.header.message_type == MessageType.signal
            and m.header.fields.get(HeaderFields.interface) == IFACE)


def received_after(sender, receiver, rule, signals):
    """Add rule on receiver, send the signals, then a marker signal that
    always matches; return the bodies/paths the receiver got before it."""
    receiver.add_match(rule)
    receiver.add_match(f"type='signal',interface='{IFACE}',member='Marker'")
    for s in signals:
        sender.send(s)
    sender.send(sig(member="Marker"))
    got = []
    while True:
        m = receiver.wait_for(ours)
        if m.header.fields[HeaderFields.member] == "Marker":
            return got
        got.append((m.header.fields[HeaderFields.path],
                    m.header.fields[HeaderFields.member], m.body))


@pytest.fixture
def pair(bus):
    with Client(bus.address) as a, Client(bus.address) as b:
        yield a, b


def test_no_rule_no_broadcast(pair):
    a, b = pair
    a.send(sig())
    b.assert_no(ours)
    # but the sender's own matching rule gets its own signal
    a.add_match(f"type='signal',interface='{IFACE}'")
    a.send(sig(member="Self"))
    a.wait_signal("Self", sender=a.unique_name)


def test_interface_and_member(pair):
    a, b = pair
    got = received_after(a, b, f"type='signal',interface='{IFACE}',member='Yes'",
                         [sig(member="No"), sig(member="Yes"), sig(member="Yes", iface="com.example.Other")])
    assert got == [("/s", "Yes", ())]


def test_arg0(pair):
    a, b = pair
    got = received_after(a, b, f"type='signal',interface='{IFACE}',arg0='foo'", [
        sig(member="A", signature="s", body=("foo",)),
        sig(member="B", signature="s", body=("bar",)),
        sig(member="C", signature="ss", body=("foo", "x")),
        sig(member="D", signature="u", body=(1,)),
        sig(member="E"),
        sig(member="F", signature="o", body=("/foo",)),
    ])
    assert [g[1] for g in got] == ["A", "C"]


def test_arg_n(pair):
    a, b = pair
    got = received_after(a, b, f"type='signal',interface='{IFACE}',arg2='z'", [
        sig(member="A", signature="sss", body=("x", "y", "z")),
        sig(member="B", signature="ss", body=("z", "z")),
        sig(member="C", signature="sus", body=("a", 2, "z")),
    ])
    assert [g[1] for g in got] == ["A", "C"]


def test_arg0namespace(pair):
    a, b = pair
    names = ["com.example", "com.example.Foo", "com.example.Foo.Bar", "com.examplefoo",
             "com", "org.example"]
    got = received_after(a, b, f"type='signal',interface='{IFACE}',arg0namespace='com.example'",
                         [sig(member="N", signature="s", body=(n,)) for n in names])
    assert [g[2][0] for g in got] == ["com.example", "com.example.Foo", "com.example.Foo.Bar"]


def test_path_and_path_namespace(pair):
    a, b = pair
    paths = ["/a/b", "/a/b/c", "/a/bc", "/a", "/"]
    got = received_after(a, b, f"type='signal',interface='{IFACE}',path_namespace='/a/b'",
                         [sig(path=p, member="P") for p in paths])
    assert [g[0] for g in got] == ["/a/b", "/a/b/c"]
    a2, b2 = a, b
    b2.bus("RemoveMatch", "s", f"type='signal',interface='{IFACE}',path_namespace='/a/b'")
    got = received_after(a2, b2, f"type='signal',interface='{IFACE}',path='/a'",
                         [sig(path=p, member="P") for p in paths])
    assert [g[0] for g in got] == ["/a"]


def test_path_namespace_root_matches_all(pair):
    a, b = pair
    got = received_after(a, b, f"type='signal',interface='{IFACE}',path_namespace='/'",
                         [sig(path=p, member="P") for p in ["/", "/x", "/x/y"]])
    assert [g[0] for g in got] == ["/", "/x", "/x/y"]


def test_arg_path(pair):
    a, b = pair
    args = ["/", "/aa/", "/aa/bb/", "/aa/bb/cc", "/aa/bb/cc/", "/aa", "/aa/b", "/aa/bb",
            "/aa/bbb/"]
    got = received_after(a, b, f"type='signal',interface='{IFACE}',arg0path='/aa/bb/'",
                         [sig(member="P", signature="s", body=(x,)) for x in args])
    assert [g[2][0] for g in got] == ["/", "/aa/", "/aa/bb/", "/aa/bb/cc", "/aa/bb/cc/"]


def test_arg_path_object_path_arg(pair):
    a, b = pair
    got = received_after(a, b, f"type='signal',interface='{IFACE}',arg1path='/aa/'", [
        sig(member="O", signature="so", body=("x", "/aa/bb")),
        sig(member="S", signature="ss", body=("x", "/aa/cc")),
        sig(member="N", signature="so", body=("x", "/bb")),
    ])
    assert [g[1] for g in got] == ["O", "S"]


def test_sender_match_unique_and_well_known(bus):
    with Client(bus.address) as a, Client(bus.address) as b, Client(bus.address) as r:
        a.bus("RequestName", "su", "com.example.Emitter", 0)
        r.add_match(f"type='signal',interface='{IFACE}',sender='com.example.Emitter'")
        r.add_match(f"type='signal',interface='{IFACE}',sender='{b.unique_name}',member='FromB'")
        b.send(sig(member="Ignored"))
        a.send(sig(member="FromA"))
        b.send(sig(member="FromB"))
        # a and b are different connections: no ordering between them
        got = {}
        for _ in range(2):
            m = r.wait_for(ours)
            got[m.header.fields[HeaderFields.member]] = m.header.fields[HeaderFields.sender]
        # the SENDER field is always the unique name
        assert got == {"FromA": a.unique_name, "FromB": b.unique_name}
        r.assert_no(ours)


def test_unicast_signal_delivered_without_rule(pair):
    a, b = pair
    a.send(sig(member="Direct", dest=b.unique_name))
    m = b.wait_for(ours)
    assert m.header.fields[HeaderFields.destination] == b.unique_name


def test_unicast_signal_to_well_known_name(bus):
    with Client(bus.address) as a, Client(bus.address) as b:
        b.bus("RequestName", "su", "com.example.Target", 0)
        a.send(sig(member="Direct", dest="com.example.Target"))
        m = b.wait_for(ours)
        assert m.header.fields[HeaderFields.destination] == "com.example.Target"


def test_unicast_signal_not_seen_by_other_matchers(bus):
    with Client(bus.address) as a, Client(bus.address) as b, Client(bus.address) as c:
        c.add_match(f"type='signal',interface='{IFACE}'")
        b.add_match(f"type='signal',interface='{IFACE}'")
        a.send(sig(member="Direct", dest=b.unique_name))
        a.send(sig(member="Broadcast"))
        m = c.wait_for(ours)
        assert is_signal(m, "Broadcast"), describe(m)
        # b gets the unicast exactly once, even though its rule also matches
        assert is_signal(b.wait_for(ours), "Direct")
        assert is_signal(b.wait_for(ours), "Broadcast")
        b.assert_no(ours)


def test_eavesdrop_destination_rule(bus):
    with Client(bus.address) as a, Client(bus.address) as b, Client(bus.address) as e:
        e.add_match(f"type='signal',interface='{IFACE}',destination='{b.unique_name}',"
                    "eavesdrop='true'")
        e.add_match(f"type='signal',interface='{IFACE}',member='Marker'")
        a.send(sig(member="Direct", dest=b.unique_name))
        a.send(sig(member="Marker"))
        m = e.wait_for(ours)
        assert is_signal(m, "Direct"), describe(m)
        assert m.header.fields[HeaderFields.destination] == b.unique_name
        assert is_signal(e.wait_for(ours), "Marker")


def test_eavesdropper_sees_calls_to_the_bus_but_not_its_messages(bus):
    """An eavesdrop='true' rule matches what connections send the bus (once
    the bus acted on it without an error), its own calls too, but none of
    the bus's own unicast messages (replies, NameAcquired, NameLost), as
    dbus-daemon (bus/dispatch.c matches calls to the driver like any
    message; bus/connection.c sends its own messages past the rules)."""
    with Client(bus.address) as e:
        e.add_match("eavesdrop=true")
        c = Client(bus.address)
        me = c.unique_name
        assert c.bus("RequestName", "su", "com.example.Eaves", 4) == (1,)
        c.bus_error("RequestName", "su", ":1.not", 0)  # refused: not shown
        c.close()
        e.wait_signal("NameOwnerChanged", body0=me)
        e.wait_signal("NameOwnerChanged", body0=me)  # gone: the bus is done with c
        e.bus("GetId")
        seen = [m for m in e.inbox
                if me in (m.header.fields.get(HeaderFields.sender), m.header.fields.get(HeaderFields.destination))]
        assert [(m.header.message_type, m.header.fields.get(HeaderFields.member)) for m in seen] == [
            (MessageType.method_call, "Hello"), (MessageType.method_call, "RequestName")], \
            [describe(m) for m in seen]
        assert seen[0].header.fields[HeaderFields.sender] == me
        e.inbox.clear()
        e.bus("GetId")
        e.bus("GetId")
        own = [m for m in e.inbox if m.header.fields.get(HeaderFields.member) == "GetId"]
        assert own and own[0].header.fields[HeaderFields.sender] == e.unique_name, [describe(m) for m in e.inbox]


def test_only_the_bus_uid_and_root_may_add_an_eavesdropping_rule(tmp_path):
    """dbus-daemon (1.11.14 and later) refuses AddMatch with eavesdrop='true'
    from any uid but its own and root, whatever its XML policy allows
    (a plain rule is fine)."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to connect as nobody")
    root = Path(tempfile.mkdtemp(prefix="sbe-"))
    try:
        root.chmod(0o755)
        conf = write_config(root / "bus.conf", full=MINIMAL_CONFIG.replace(
            '<policy context="default">\n', '<policy context="default">\n    <allow user="*"/>\n', 1).format(extra=""))
        (root / "bus").mkdir(mode=0o755)
        b = DaemonBus(root / "bus", config_file=conf)
        try:
            os.chmod(b.socket_path, 0o777)

            def add_match_as_nobody(rule):
                return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "dbus-send",
                                       f"--bus={b.address}", "--print-reply", "--dest=org.freedesktop.DBus",
                                       "/org/freedesktop/DBus", "org.freedesktop.DBus.AddMatch", f"string:{rule}"],
                                      capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

            cp = add_match_as_nobody("eavesdrop=true")
            assert cp.returncode != 0 and ERR + "AccessDenied" in cp.stderr, cp
            assert "rejected attempt to call AddMatch" in cp.stderr, cp
            cp = add_match_as_nobody("type='signal'")
            assert cp.returncode == 0, cp
            with Client(b.address) as c:  # root
                c.add_match("eavesdrop=true")
        finally:
            b.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_unicast_signal_to_missing_name(pair):
    """dbus-daemon answers a unicast signal to a name nobody owns with a
    ServiceUnknown error (auto-start does not apply to signals)."""
    a, b = pair
    a.send(sig(member="Nowhere", dest="com.example.NoSuchName"))
    m = a.wait_for(lambda m: m.header.message_type == MessageType.error)
    assert m.header.fields[HeaderFields.error_name] == ERR + "ServiceUnknown", describe(m)
    b.assert_no(ours)


def test_remove_match(pair):
    a, b = pair
    rule = f"type='signal',interface='{IFACE}',member='R'"
    b.add_match(rule)
    b.add_match(rule)  # rules are counted: two adds need two removes
    a.send(sig(member="R"))
    assert is_signal(b.wait_for(ours), "R")
    b.assert_no(ours)  # delivered once even though added twice
    b.bus("RemoveMatch", "s", rule)
    a.send(sig(member="R"))
    assert is_signal(b.wait_for(ours), "R")
    b.bus("RemoveMatch", "s", rule)
    a.send(sig(member="R"))
    b.assert_no(ours)
    e = b.bus_error("RemoveMatch", "s", rule)
    assert e.name == ERR + "MatchRuleNotFound"


def test_remove_match_equivalent_spelling(pair):
    a, b = pair
    b.add_match(f"type='signal',interface='{IFACE}',member='R'")
    # same rule, keys in another order, with spaces
    b.bus("RemoveMatch", "s", f"member='R', interface='{IFACE}',type='signal'")
    a.send(sig(member="R"))
    b.assert_no(ours)


@pytest.mark.parametrize("rule", [
    "type='bogus'",
    "foo",
    "bogus='x'",
    "arg0namespace='a..b'",
    "path='no-slash'",
    "path_namespace='not/a/path'",
    "path='/a',path_namespace='/a'",
    "arg64='x'",
    "interface='not an interface'",
    "member='a.b'",
    "sender='a..b'",
    "eavesdrop='maybe'",
    "type='signal",
])
def test_invalid_match_rule(pair, rule):
    a, _ = pair
    e = a.bus_error("AddMatch", "s", rule)
    assert e.name == ERR + "MatchRuleInvalid", (rule, e)


def test_empty_rule_matches_everything_broadcast(pair):
    a, b = pair
    b.add_match("")
    a.send(sig(member="Any"))
    assert is_signal(b.wait_for(ours), "Any")


def test_gdbus_emit(bus):
    with Client(bus.address) as r:
        r.add_match(f"type='signal',interface='{IFACE}'")
        run(["gdbus", "emit", "--session", "--object-path", "/g", "--signal",
             f"{IFACE}.FromGdbus", "'hello'", "42"], bus)
        m = r.wait_for(ours)
        assert is_signal(m, "FromGdbus", path="/g"), describe(m)
        assert m.body == ("hello", 42)
        assert m.header.fields[HeaderFields.signature] == "si"


def test_gdbus_emit_unicast(bus):
    with Client(bus.address) as r:
        run(["gdbus", "emit", "--session", "--dest", r.unique_name, "--object-path", "/g",
             "--signal", f"{IFACE}.Direct", "'x'"], bus)
        m = r.wait_for(ours)
        assert is_signal(m, "Direct"), describe(m)


def test_dbus_send_signal(bus):
    with Client(bus.address) as r:
        r.add_match(f"type='signal',interface='{IFACE}',arg0='match-me'")
        run(["dbus-send", "--session", "--type=signal", "/ds", f"{IFACE}.Skipped",
             "string:other"], bus)
        run(["dbus-send", "--session", "--type=signal", "/ds", f"{IFACE}.FromDbusSend",
             "string:match-me", "uint32:7"], bus)
        m = r.wait_for(ours)
        assert is_signal(m, "FromDbusSend", path="/ds"), describe(m)
        assert m.body == ("match-me", 7)


def test_dbus_fast_receives_signals(bus):
    from dbus_fast import Message, MessageType as FMT
    from dbus_fast.aio import MessageBus

    async def main():
        fbus = await MessageBus(bus_address=bus.address).connect()
        got = asyncio.Queue()

        def handler(msg):
            if msg.message_type == FMT.SIGNAL and msg.interface == IFACE:
                got.put_nowait(msg)

        fbus.add_message_handler(handler)
        reply = await fbus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',interface='{IFACE}',arg0namespace='com.example'"]))
        assert reply.message_type == FMT.METHOD_RETURN
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: run(
            ["dbus-send", "--session", "--type=signal", "/f", f"{IFACE}.X",
             "string:org.other"], bus))
        await loop.run_in_executor(None, lambda: run(
            ["gdbus", "emit", "--session", "--object-path", "/f", "--signal",
             f"{IFACE}.Y", "'com.example.Thing'"], bus))
        msg = await asyncio.wait_for(got.get(), TIMEOUT)
        assert msg.member == "Y" and msg.body == ["com.example.Thing"]
        assert got.empty()
        fbus.disconnect()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT * 2))


def test_dbus_python_signal_receiver(bus):
    """dbus-python with a GLib main loop receives a signal emitted by gdbus."""
    from itutil import SYSTEM_PYTHON, Background
    code = f"""
import dbus, dbus.mainloop.glib, os, sys
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
conn = dbus.bus.BusConnection(os.environ['DBUS_SESSION_BUS_ADDRESS'])
loop = GLib.MainLoop()
def got(*args):
    print('GOT', *args, flush=True)
    loop.quit()
conn.add_signal_receiver(got, signal_name='Hello', dbus_interface={IFACE!r})
conn.request_name('com.example.PyReady')
GLib.timeout_add(10000, loop.quit)
loop.run()
"""
    with Background([SYSTEM_PYTHON, "-c", code], bus) as bg:
        with Client(bus.address) as c:
            from itutil import wait_until
            wait_until(lambda: c.bus("NameHasOwner", "s", "com.example.PyReady")[0],
                       what="dbus-python receiver ready")
            c.send(sig(member="Hello", signature="s", body=("py",)))
            bg.wait_for_text("GOT py")


@pytest.mark.parametrize("flags,error", [
    (0, "ServiceUnknown"),
    (1, "ServiceUnknown"),    # NO_REPLY_EXPECTED does not suppress the error
    (2, "NameHasNoOwner"),    # NO_AUTO_START
    (3, "NameHasNoOwner"),
])
def test_unicast_to_missing_name_errors_by_flag(pair, flags, error):
    a, _ = pair
    m = sig(member="Nowhere", dest="com.example.NoSuchName")
    m.header.flags = flags
    a.send(m)
    e = a.wait_for(lambda m: m.header.message_type == MessageType.error)
    assert e.header.fields[HeaderFields.error_name] == ERR + error, describe(e)
