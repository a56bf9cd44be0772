"""sandbus-dbus-proxy's proxy back end in front of a real dbus-daemon (no
Containers1), and xdg-dbus-proxy's known bug classes fixed: clients whose
serials do not grow and nested proxies, SASL pipelined as sd-bus and zbus
send it, busctl, gdbus, dbus-send and jeepney through it, eavesdrop match
rules spelt with whitespace, and hidden names answered byte for byte as
dbus-daemon answers missing ones."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
from dbusproxy_util import dbus_daemon, sandbus_proxy
from itutil import BUS_IFACE, BUS_NAME, BUS_PATH, Client, Service, write_config
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
from jeepney.low_level import Parser

NOTIF = "org.freedesktop.Notifications"
NOTIF_PATH = "/org/freedesktop/Notifications"
HIDDEN = "org.example.Hidden"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
POLICY = ["--filter", f"--talk={NOTIF}", "--own=org.example.App.*"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("proxyback")
    with dbus_daemon(tmp, config=write_config(tmp / "bus.conf")) as address:
        notif = Service(address, NOTIF, {"Notify": lambda m: ("u", (7,)),
                                         "Echo": lambda m: ("s", (m.body[0],))})
        hidden = Service(address, HIDDEN, {"Hello": lambda m: ("s", ("hidden",))})
        sock = tmp / "proxy"
        sock.write_text("")
        p = sandbus_proxy([address, str(sock), *POLICY])
        try:
            assert p.ready, p.stderr_text()
            yield {"bus": address, "proxy": f"unix:path={sock}", "tmp": tmp, "proc": p}
        finally:
            p.stop()
            notif.stop()
            hidden.stop()


def _env(address):
    return dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address)


def _error(reply):
    if reply.header.message_type != MessageType.error:
        return None
    return reply.header.fields[HeaderFields.error_name], reply.body[0]


def _call(dest, path, iface, member, sig=None, body=()):
    return new_method_call(DBusAddress(path, bus_name=dest, interface=iface), member, sig, tuple(body))


def _next_reply(c):
    while True:
        m = c.conn.receive(timeout=10)
        if m.header.message_type in (MessageType.method_return, MessageType.error):
            return m


def test_clients_whose_serials_do_not_grow(setup):
    """xdg-dbus-proxy refuses a serial lower than one seen ("Invalid client
    serial"); serials only have to be unique among a client's pending
    calls, and ours are rewritten anyway."""
    with Client(setup["proxy"]) as c:
        for serial in (50, 10, 50, 3, 3):
            c.send(_call(NOTIF, NOTIF_PATH, NOTIF, "Echo", "s", (str(serial),)), serial=serial)
            r = _next_reply(c)
            assert r.header.fields[HeaderFields.reply_serial] == serial
            assert r.body == (str(serial),)
        # two calls in flight, the later one with the lower serial
        c.send(_call(NOTIF, NOTIF_PATH, NOTIF, "Echo", "s", ("a",)), serial=900)
        c.send(_call(NOTIF, NOTIF_PATH, NOTIF, "Echo", "s", ("b",)), serial=800)
        got = {_next_reply(c).header.fields[HeaderFields.reply_serial] for _ in range(2)}
        assert got == {800, 900}


def test_nested_proxies(setup, tmp_path):
    """A proxy in front of the proxy (a sandbox inside a sandbox): the
    outer one's own calls and its client's share serials without clashing."""
    inner = tmp_path / "inner"
    p = sandbus_proxy([setup["proxy"], str(inner), *POLICY])
    try:
        assert p.ready, p.stderr_text()
        with Client(f"unix:path={inner}") as c:
            assert c.call(NOTIF, NOTIF_PATH, NOTIF, "Notify") == (7,)
            assert c.bus("NameHasOwner", "s", HIDDEN) == (False,)
            for _ in range(20):
                assert c.call(NOTIF, NOTIF_PATH, NOTIF, "Echo", "s", ("n",)) == ("n",)
    finally:
        p.stop()


def _hello_bytes(serial=1):
    return _call(BUS_NAME, BUS_PATH, BUS_IFACE, "Hello").serialise(serial=serial)


def test_pipelined_sasl(setup):
    """sd-bus and zbus write AUTH, NEGOTIATE_UNIX_FD, BEGIN and Hello in one go."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(setup["proxy"].partition("=")[2])
    try:
        uid = str(os.getuid()).encode().hex().encode()
        s.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n" + _hello_bytes()
                  + _call(NOTIF, NOTIF_PATH, NOTIF, "Notify").serialise(serial=2))
        s.settimeout(10)
        buf = b""
        while buf.count(b"\r\n") < 2:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        ok, agree, rest = buf.split(b"\r\n", 2)
        assert ok.startswith(b"OK ") and agree == b"AGREE_UNIX_FD"
        parser = Parser()
        parser.add_data(rest)
        msgs = []
        while True:
            m = parser.get_next_message()
            while m is not None:
                msgs.append(m)
                m = parser.get_next_message()
            replies = [m for m in msgs if m.header.message_type == MessageType.method_return]
            if len(replies) == 2:
                break
            chunk = s.recv(65536)
            assert chunk, msgs
            parser.add_data(chunk)
        by_serial = {m.header.fields[HeaderFields.reply_serial]: m.body for m in replies}
        assert by_serial[1][0].startswith(":") and by_serial[2] == (7,)
    finally:
        s.close()


@pytest.mark.skipif(shutil.which("busctl") is None, reason="busctl is not installed")
def test_busctl_through_the_proxy(setup):
    env = _env(setup["proxy"])
    r = subprocess.run(["busctl", "--user", "call", NOTIF, NOTIF_PATH, NOTIF, "Notify"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "u 7", r.stderr
    r = subprocess.run(["busctl", "--user", "list", "--no-pager"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert NOTIF in r.stdout and HIDDEN not in r.stdout
    r = subprocess.run(["busctl", "--user", "call", HIDDEN, "/", HIDDEN, "Hello"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "not provided by any .service files" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("gdbus") is None or shutil.which("dbus-send") is None,
                    reason="gdbus and dbus-send are needed")
def test_gdbus_and_dbus_send_through_the_proxy(setup):
    env = _env(setup["proxy"])
    r = subprocess.run(["gdbus", "call", "--session", "-d", NOTIF, "-o", NOTIF_PATH, "-m", f"{NOTIF}.Notify"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "(uint32 7,)", r.stderr
    r = subprocess.run(["dbus-send", "--session", "--print-reply", f"--dest={NOTIF}", NOTIF_PATH,
                        f"{NOTIF}.Echo", "string:hi"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and 'string "hi"' in r.stdout, r.stderr
    r = subprocess.run(["gdbus", "call", "--session", "-d", BUS_NAME, "-o", BUS_PATH, "-m",
                        f"{BUS_IFACE}.RequestName", "org.example.Nope", "4"], env=env, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and ACCESS_DENIED in r.stderr, r.stderr


EAVESDROP_SPELLINGS = [
    "eavesdrop=true", "eavesdrop='true'", " eavesdrop='true'", "type='method_call', eavesdrop='true'",
    "type='method_call',\teavesdrop=true", "eavesdrop ='true'", "type='signal',  eavesdrop=true",
]


@pytest.mark.parametrize("rule", EAVESDROP_SPELLINGS)
def test_eavesdropping_is_refused_however_it_is_spelt(setup, rule):
    """xdg-dbus-proxy before 0.1.7 looked for a string; we parse the rule
    as the bus does.  The bus itself takes each spelling as eavesdropping."""
    with Client(setup["bus"]) as direct:
        assert direct.bus("AddMatch", "s", rule) == ()
    with Client(setup["proxy"]) as c:
        r = c.call_msg(_call(BUS_NAME, BUS_PATH, BUS_IFACE, "AddMatch", "s", (rule,)))
        assert _error(r) is not None and _error(r)[0] == ACCESS_DENIED, r


def test_hidden_names_get_the_buss_own_answer_for_missing_ones(setup):
    """Byte for byte what dbus-daemon answers for a name nobody owns."""
    missing = "org.example.Missing"
    cases = [
        lambda name: _call(name, "/", name, "Hello"),
        lambda name: _call(BUS_NAME, BUS_PATH, BUS_IFACE, "GetNameOwner", "s", (name,)),
        lambda name: _call(BUS_NAME, BUS_PATH, BUS_IFACE, "GetConnectionUnixProcessID", "s", (name,)),
        lambda name: _call(BUS_NAME, BUS_PATH, BUS_IFACE, "GetConnectionCredentials", "s", (name,)),
        lambda name: _call(BUS_NAME, BUS_PATH, BUS_IFACE, "NameHasOwner", "s", (name,)),
    ]
    with Client(setup["bus"]) as direct, Client(setup["proxy"]) as c:
        for make in cases:
            bus_says = direct.call_msg(make(missing))
            proxy_says = c.call_msg(make(HIDDEN))
            assert proxy_says.header.message_type == bus_says.header.message_type
            if bus_says.header.message_type == MessageType.error:
                name, text = _error(bus_says)
                assert _error(proxy_says) == (name, text.replace(missing, HIDDEN))
            else:
                assert proxy_says.body == bus_says.body
            # and a name nobody owns is the bus's own answer through the proxy too
            assert _error(c.call_msg(make(missing))) == _error(bus_says)


def test_the_app_cannot_see_what_it_may_not(setup):
    with Client(setup["proxy"]) as c:
        names = c.bus("ListNames")[0]
        assert NOTIF in names and HIDDEN not in names
        assert c.bus("RequestName", "su", "org.example.App.Tool", 4) == (1,)
        with Client(setup["bus"]) as outside:
            # its own name is on the real bus, owned by its proxied connection
            assert outside.bus("GetNameOwner", "s", "org.example.App.Tool") == (c.unique_name,)


def test_a_client_that_does_not_read_the_proxys_answers_is_not_read(setup):
    """The proxy answers calls to hidden names itself; a client that keeps
    calling and never reads must stop being read (its writes block), not
    grow the proxy's queue to it without end; once it reads, every call
    gets its answer."""
    import select
    import struct

    from sandbus.proxy.stream import HIGH_WATER

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(setup["proxy"].partition("=")[2])
    try:
        uid = str(os.getuid()).encode().hex().encode()
        s.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\nBEGIN\r\n" + _hello_bytes())
        s.settimeout(10)
        parser = Parser()
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        parser.add_data(buf.split(b"\r\n", 1)[1])
        hello = None
        while hello is None:
            m = parser.get_next_message()
            if m is None:
                parser.add_data(s.recv(65536))
            elif m.header.message_type == MessageType.method_return:
                hello = m
        s.setblocking(False)
        template = bytearray(_call(HIDDEN, "/", HIDDEN, "Hello").serialise(serial=2))
        cap = 6 * HIGH_WATER
        sent = written = 0
        pending = b""
        while written < cap:
            if not pending:
                sent += 1
                struct.pack_into("<I", template, 8, sent + 1)
                pending = bytes(template)
            try:
                n = s.send(pending)
            except BlockingIOError:
                if not select.select([], [s], [], 3)[1]:
                    break  # the proxy has stopped reading us
                continue
            written += n
            pending = pending[n:]
        # stopped, well before it took everything (what the kernel buffers
        # and one read's answers come on top of HIGH_WATER)
        assert written < 3 * HIGH_WATER, f"the proxy read {written} bytes of a client that reads nothing"
        # reading lets it go on: every call (the last one finished) gets
        # the proxy's ServiceUnknown
        errors = 0
        while errors < sent:
            m = parser.get_next_message()
            if m is not None:
                if m.header.message_type == MessageType.error:
                    assert m.header.fields[HeaderFields.error_name] == "org.freedesktop.DBus.Error.ServiceUnknown"
                    errors += 1
                continue
            readable, writable, _ = select.select([s], [s] if pending else [], [], 10)
            assert readable or writable, f"{errors} of {sent} answers"
            if writable:
                pending = pending[s.send(pending):]
            if readable:
                chunk = s.recv(1 << 20)
                assert chunk, errors
                parser.add_data(chunk)
        assert errors == sent
    finally:
        s.close()
