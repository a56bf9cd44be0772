"""Containers1 end to end: AddServer and its named arguments, instance
lifetime, identification, limits, with real clients on real container
sockets (jeepney, gdbus, dbus-send, a raw client for header field 10)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from jeepney import HeaderFields

from containers_util import (  # noqa: F401  (fixtures)
    ACCESS_DENIED,
    CIFACE,
    INVALID_ARGS,
    LIMITS_EXCEEDED,
    NAME_HAS_NO_OWNER,
    NOBODY,
    NOT_CONTAINER,
    SKIP_REFERENCE,
    add_server,
    cbus,
    cbus_factory,
    ccall,
    cerror,
)
from itutil import (
    BUS_IFACE,
    BUS_NAME,
    BUS_PATH,
    TIMEOUT,
    Client,
    DBusErrorReply,
    echo_service,
    is_closed,
    is_signal,
    run,
    wait_until,
)

from sandbus.containers.cli import BlockingClient
from sandbus.wire.marshal import unmarshal
from sandbus.wire.message import METHOD_CALL, build_message

pytestmark = SKIP_REFERENCE

PATH_RE = re.compile(r"^/org/freedesktop/DBus/Containers1/c[0-9]+$")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _connect_fails(address: str) -> bool:
    try:
        c = Client(address)
    except (OSError, ValueError, DBusErrorReply, TimeoutError, EOFError):
        return True
    c.close()
    return False


def _wait_removed(watcher: Client, path: str):
    return watcher.wait_signal("InstanceRemoved", interface=CIFACE, body0=path)


def _watch_removed(c: Client):
    c.add_match(f"type='signal',interface='{CIFACE}',member='InstanceRemoved'")


def _no_removed(watcher: Client, path: str):
    watcher.assert_no(lambda m: is_signal(m, "InstanceRemoved", body0=path), what="InstanceRemoved")


# -- AddServer -------------------------------------------------------------------------


def test_add_server_reply_shape_and_socket(cbus):
    c = cbus.client()
    path, socket_path, address = add_server(c)
    assert PATH_RE.match(path)
    assert isinstance(socket_path, bytes) and socket_path.endswith(b"\0") and b"\0" not in socket_path[:-1]
    sp = socket_path[:-1].decode()
    assert os.path.dirname(sp) == str(cbus.socket_dir)
    assert os.path.basename(sp).startswith("dbus-")
    assert os.path.exists(sp)
    assert re.match(r"^unix:path=[^,]+,guid=[0-9a-f]{32}$", address), address
    assert address.split(",")[0] == f"unix:path={sp}"
    # instance numbers are never reused
    path2 = add_server(c)[0]
    assert int(path2.rsplit("c", 1)[1]) > int(path.rsplit("c", 1)[1])


def test_contained_client_talks_to_bus_and_outside_peer(cbus):
    c = cbus.client()
    _, _, address = add_server(c)
    with echo_service(cbus.address, "com.example.Echo") as svc:
        inner = cbus.client(address)
        assert BUS_NAME in inner.bus("ListNames")[0]
        assert inner.call("com.example.Echo", "/Test", "com.example.Test", "Echo", "s", ("hi",)) == ("hi",)
        assert svc.calls[-1][0] == inner.unique_name
        # and a real gdbus client through the same socket
        cp = run(["gdbus", "call", "--address", address, "--dest", "com.example.Echo",
                  "--object-path", "/Test", "--method", "com.example.Test.Echo", "from gdbus"])
        assert "from gdbus" in cp.stdout
    # an outside peer calls into the container (unmediated instance)
    inner_svc_name = inner.unique_name
    out = cbus.client()
    out.send(__import__("jeepney").new_signal(
        __import__("jeepney").DBusAddress("/x", interface="com.example.Sig"), "Ping"))
    with echo_service(address, None) as contained:
        assert out.call(contained.unique_name, "/Test", "com.example.Test", "Add", "ii", (2, 3)) == (5,)
    assert inner_svc_name.startswith(":")


def _fields(data: bytes) -> dict:
    endian = chr(data[0])
    fields_len = int.from_bytes(data[12:16], "little" if endian == "l" else "big")
    _, mtype, _, _, _, _, fields = unmarshal("yyyyuua(yv)", data, endian, 0, 16 + fields_len)
    return mtype, {code: v.value for code, v in fields}


def _raw_next(rc: BlockingClient, pred, limit=50):
    for _ in range(limit):
        m = rc._read_message()
        mtype, f = _fields(m.data)
        if pred(mtype, f):
            return f
    raise AssertionError("message not received")


def test_container_instance_header_field(cbus):
    c = cbus.client()
    path, _, address = add_server(c)
    inner = cbus.client(address)
    outer = cbus.client()
    rc = BlockingClient(cbus.address, timeout=TIMEOUT)
    try:
        def signal_from(sender, member):
            from jeepney import DBusAddress, new_signal
            m = new_signal(DBusAddress("/x", interface="com.example.Sig"), member)
            m.header.fields[HeaderFields.destination] = rc.unique_name  # unicast signal
            sender.send(m)
            return _raw_next(rc, lambda t, f: t == 4 and f.get(3) == member)

        assert 10 not in signal_from(inner, "Before")
        rc.containers("RequestHeader")
        assert signal_from(inner, "Inside")[10] == path
        assert signal_from(outer, "Outside")[10] == "/"
        # the bus driver's own messages carry "/"
        serial = 999
        rc.sock.sendall(build_message(METHOD_CALL, serial, path=BUS_PATH, interface=BUS_IFACE,
                                      member="GetId", destination=BUS_NAME))
        assert _raw_next(rc, lambda t, f: f.get(5) == serial)[10] == "/"
        # a forged field 10 is stripped and replaced
        forged = build_message(METHOD_CALL, 7, path="/x", interface="com.example.Sig", member="Forged",
                               destination=rc.unique_name, flags=1, container_instance=path)
        outer.conn.sock.sendall(forged)
        assert _raw_next(rc, lambda t, f: f.get(3) == "Forged")[10] == "/"
    finally:
        rc.close()


def test_update_activation_environment_refused_inside(cbus):
    c = cbus.client()
    _, _, address = add_server(c)
    inner = cbus.client(address)
    e = inner.bus_error("UpdateActivationEnvironment", "a{ss}", {"A": "b"})
    assert e.name == ACCESS_DENIED
    for member, iface in (("BecomeMonitor", "org.freedesktop.DBus.Monitoring"),):
        assert inner.bus_error(member, "asu", [], 0, iface=iface).name == ACCESS_DENIED
    assert cerror(inner, "StopInstance", "o", "/org/freedesktop/DBus/Containers1/c1").name == ACCESS_DENIED


def test_identification_and_metadata(cbus):
    c = cbus.client()
    meta = {"App": ("s", "org.example.App"), "Nums": ("ai", [1, 2, 3]), "Nested": ("a{sv}", {"x": ("b", True)})}
    path, _, address = add_server(c, "org.flatpak", "org.example.App", meta)
    inner = cbus.client(address)
    outer = cbus.client()
    want_creds = {"ProcessID": ("u", os.getpid()), "UnixUserID": ("u", os.getuid())}
    for asker in (outer, inner):
        p, creds, ctype, name, md = ccall(asker, "GetConnectionInstance", "s", inner.unique_name)
        assert (p, ctype, name, md) == (path, "org.flatpak", "org.example.App", meta)
        for k, v in want_creds.items():
            assert creds[k] == v
        assert "UnixGroupIDs" in creds
        assert ccall(asker, "GetInstanceInfo", "o", path) == (creds, ctype, name, md)
    # the container's credentials name the instance
    creds = outer.bus("GetConnectionCredentials", "s", inner.unique_name)[0]
    assert creds["org.freedesktop.DBus.Containers1.Instance"] == ("o", path)
    assert "org.freedesktop.DBus.Containers1.Instance" not in outer.bus(
        "GetConnectionCredentials", "s", outer.unique_name)[0]
    # an empty name is allowed
    p2 = add_server(c, "org.flatpak", "")[0]
    assert ccall(c, "GetInstanceInfo", "o", p2)[1:] == ("org.flatpak", "", {})


def test_not_container_and_no_owner_errors(cbus):
    c = cbus.client()
    add_server(c)
    for name in (c.unique_name, BUS_NAME):
        assert cerror(c, "GetConnectionInstance", "s", name).name == NOT_CONTAINER
    for member in ("GetInstanceInfo", "StopListening", "StopInstance"):
        assert cerror(c, member, "o", "/org/freedesktop/DBus/Containers1/c999").name == NOT_CONTAINER
        assert cerror(c, member, "o", "/nope").name == NOT_CONTAINER
    for name in (":1.999", "com.example.Nobody"):
        assert cerror(c, "GetConnectionInstance", "s", name).name == NAME_HAS_NO_OWNER


def test_invalid_arguments(cbus):
    c = cbus.client(enable_fds=True)
    e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, {"Bogus": ("b", True)})
    assert e.name == INVALID_ARGS and "Bogus" in e.text
    e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, {"MaxConnections": ("s", "1")})
    assert e.name == INVALID_ARGS
    for bad in ("", "no-dots", "1.2", "a..b", "a.b/c"):
        assert cerror(c, "AddServer", "ssa{sv}a{sv}", bad, "x", {}, {}).name == INVALID_ARGS
    # a socket that is not listening
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, {"Socket": ("h", s)})
        assert e.name == INVALID_ARGS
    finally:
        s.close()
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, {"Socket": ("h", d)})
        assert e.name == INVALID_ARGS
    finally:
        d.close()
    # nothing was created by the failures
    assert ccall(c, "ListInstances") == ([],)
    assert os.listdir(cbus.socket_dir) == []


def test_add_server_from_inside_denied(cbus):
    c = cbus.client()
    _, _, address = add_server(c)
    inner = cbus.client(address)
    e = cerror(inner, "AddServer", "ssa{sv}a{sv}", "com.example.App", "x", {}, {})
    assert e.name == ACCESS_DENIED


# -- lifetime ----------------------------------------------------------------------------


def test_stop_listening_with_client_connected(cbus):
    c = cbus.client()
    _watch_removed(c)
    path, sp, address = add_server(c)
    inner = Client(address)
    ccall(c, "StopListening", "o", path)
    assert not os.path.exists(sp[:-1].decode())
    assert _connect_fails(address)
    _no_removed(c, path)
    assert inner.bus("GetId")  # still connected
    assert ccall(c, "GetInstanceInfo", "o", path)[1] == "com.example.App"
    inner.close()
    _wait_removed(c, path)
    assert cerror(c, "GetInstanceInfo", "o", path).name == NOT_CONTAINER


def test_stop_listening_client_gone_first(cbus):
    c = cbus.client()
    _watch_removed(c)
    path, _, address = add_server(c)
    Client(address).close()
    # the instance survives its last client while it listens
    c.bus("GetId")
    _no_removed(c, path)
    ccall(c, "StopListening", "o", path)
    _wait_removed(c, path)


def test_stop_listening_no_client_ever(cbus):
    c = cbus.client()
    _watch_removed(c)
    path, sp, _ = add_server(c)
    ccall(c, "StopListening", "o", path)
    _wait_removed(c, path)
    assert not os.path.exists(sp[:-1].decode())
    assert cerror(c, "StopListening", "o", path).name == NOT_CONTAINER


def test_stop_instance_disconnects(cbus):
    c = cbus.client()
    _watch_removed(c)
    path, _, address = add_server(c)
    inner = Client(address)
    ccall(c, "StopInstance", "o", path)
    assert is_closed(inner.conn.sock)
    _wait_removed(c, path)
    assert _connect_fails(address)


def test_creator_disconnect_stops_listening_keeps_clients(cbus):
    creator = Client(cbus.address)
    watcher = cbus.client()
    _watch_removed(watcher)
    path, _, address = add_server(creator)
    inner = cbus.client(address)
    # a detached one survives its creator
    path2, _, address2 = add_server(creator, named={"StopOnDisconnect": ("b", False)})
    creator.close()
    wait_until(lambda: _connect_fails(address), what="listening stopped")
    assert inner.bus("GetId")
    assert ccall(watcher, "GetConnectionInstance", "s", inner.unique_name)[0] == path
    _no_removed(watcher, path)
    inner.close()
    _wait_removed(watcher, path)
    assert not _connect_fails(address2)


def test_other_uid_denied(cbus):
    c = cbus.client()
    path, _, address = add_server(c)

    def as_nobody(*argv):
        return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                              capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

    for member in ("StopListening", "StopInstance"):
        cp = as_nobody("dbus-send", f"--bus={cbus.address}", "--print-reply", "--dest=org.freedesktop.DBus",
                       BUS_PATH, f"{CIFACE}.{member}", f"objpath:{path}")
        assert cp.returncode != 0 and ACCESS_DENIED in cp.stderr, cp
    # the main bus accepts nobody (so the refusal below is the container's)
    cp = as_nobody("dbus-send", f"--bus={cbus.address}", "--print-reply", "--dest=org.freedesktop.DBus",
                   BUS_PATH, "org.freedesktop.DBus.GetId")
    assert cp.returncode == 0, cp
    cp = as_nobody("dbus-send", f"--bus={address}", "--print-reply", "--dest=org.freedesktop.DBus",
                   BUS_PATH, "org.freedesktop.DBus.GetId")
    assert cp.returncode != 0, cp
    # precisely: SASL EXTERNAL is rejected for the other uid
    sasl = ("import os, socket, sys\n"
            "s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])\n"
            "s.sendall(b'\\0AUTH EXTERNAL ' + str(os.getuid()).encode().hex().encode() + b'\\r\\n')\n"
            "print(s.recv(100))\n")
    cp = as_nobody("/usr/bin/python3", "-c", sasl, address.split("=", 1)[1].split(",")[0])
    assert cp.returncode == 0 and "REJECTED" in cp.stdout, cp
    assert ccall(c, "ListInstances")[0][0][5] is True  # still listening
    assert "AccessDenied" not in cp.stderr or "Hello" not in cp.stderr, cp.stderr


# -- limits -----------------------------------------------------------------------------


def _limit(name, value):
    return f'<limit name="{name}">{value}</limit>'


def test_limit_max_containers(cbus_factory):
    b = cbus_factory(_limit("max_containers", 2))
    c = b.client()
    p1 = add_server(c)[0]
    add_server(c)
    e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "", {}, {})
    assert e.name == LIMITS_EXCEEDED
    ccall(c, "StopListening", "o", p1)  # frees a slot
    add_server(c)
    assert cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "", {}, {}).name == LIMITS_EXCEEDED


def test_limit_max_containers_per_user(cbus_factory):
    b = cbus_factory(_limit("max_containers_per_user", 1))
    c = b.client()
    p1 = add_server(c)[0]
    assert cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "", {}, {}).name == LIMITS_EXCEEDED
    # another uid still may
    cp = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                         "dbus-send", f"--bus={b.address}", "--print-reply", "--dest=org.freedesktop.DBus",
                         BUS_PATH, f"{CIFACE}.AddServer", "string:com.example.App", "string:x",
                         "dict:string:string:", "dict:string:string:"],
                        capture_output=True, text=True, timeout=TIMEOUT)
    # dbus-send cannot create an empty a{sv}; either it refuses locally
    # (type mismatch) or the bus answers: never LimitsExceeded
    assert LIMITS_EXCEEDED not in cp.stderr
    ccall(c, "StopInstance", "o", p1)
    add_server(c)
    assert cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "", {}, {}).name == LIMITS_EXCEEDED


def test_limit_max_container_metadata_bytes(cbus_factory):
    b = cbus_factory(_limit("max_container_metadata_bytes", 200))
    c = b.client()
    add_server(c, metadata={"k": ("s", "x" * 50)})
    e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "", {"k": ("s", "x" * 300)}, {})
    assert e.name == LIMITS_EXCEEDED
    e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "n" * 300, {}, {})
    assert e.name == LIMITS_EXCEEDED


def test_limit_max_connections_per_container(cbus_factory):
    b = cbus_factory(_limit("max_connections_per_container", 2))
    c = b.client()
    path, _, address = add_server(c)
    first = Client(address)
    second = Client(address)
    assert _connect_fails(address)
    first.close()
    # exactly one slot comes back once the bus has seen the disconnect
    wait_until(lambda: ccall(c, "ListInstances")[0][0][4] == 1, what="disconnect seen")
    third = Client(address)
    assert _connect_fails(address)
    # MaxConnections lowers the cap, never raises it
    _, _, a1 = add_server(c, named={"MaxConnections": ("u", 1)})
    x = Client(a1)
    assert _connect_fails(a1)
    _, _, a5 = add_server(c, named={"MaxConnections": ("u", 5)})
    ys = [Client(a5), Client(a5)]
    assert _connect_fails(a5)
    for cl in (second, third, x, *ys):
        cl.close()


def test_socket_removed_when_bus_terminates(cbus_factory):
    b = cbus_factory()
    c = b.client()
    _, sp, _ = add_server(c)
    _, sp2, _ = add_server(c, named={"StopOnDisconnect": ("b", False)})
    sp, sp2 = sp[:-1].decode(), sp2[:-1].decode()
    assert os.path.exists(sp) and os.path.exists(sp2)
    b.daemon.stop(check=True)  # SIGTERM; asserts exit 0 and the main socket gone
    assert not os.path.exists(sp) and not os.path.exists(sp2)


# -- passed sockets and notification pipes ---------------------------------------------------

SANDBOX_SCRIPT = textwrap.dedent("""
    import json, os, socket, sys
    sys.path[:0] = json.loads(os.environ["TEST_PATH"])
    from itutil import Client
    main = Client(os.environ["MAIN_ADDRESS"], enable_fds=True)
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind("/sandbox/bus")
    ls.listen(8)
    path, sp, address = main.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
        "org.freedesktop.DBus.Containers1", "AddServer", "ssa{sv}a{sv}",
        ("org.example.Sandbox", "s", {}, {"Socket": ("h", ls)}))
    ls.close()
    inner = Client("unix:path=/sandbox/bus")
    got = inner.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
        "org.freedesktop.DBus.Containers1", "GetConnectionInstance", "s", (inner.unique_name,))
    print(json.dumps({"path": path, "sp": sp.decode(), "address": address, "got": got[0],
                      "exists_inside": os.path.exists("/sandbox/bus")}))
""")


def test_passed_socket_inside_bubblewrap(cbus):
    here = os.path.dirname(os.path.abspath(__file__))
    env = cbus.env(MAIN_ADDRESS=cbus.address, TEST_PATH=json.dumps([here, *sys.path]))
    cp = run(["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/sandbox", "--die-with-parent",
              sys.executable, "-c", SANDBOX_SCRIPT], env=env, timeout=20)
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    assert PATH_RE.match(out["path"]) and out["got"] == out["path"]
    assert out["sp"] == ""
    assert out["exists_inside"]
    assert not os.path.exists("/sandbox/bus")


def test_ready_notification_and_stop_on_notify(cbus):
    c = cbus.client(enable_fds=True)
    _watch_removed(c)
    ready_r, ready_w = os.pipe()
    stop_r, stop_w = os.pipe()
    try:
        path, _, address = add_server(c, named={"ReadyNotification": ("h", ready_r),
                                                "StopOnNotify": ("h", stop_r)})
        os.close(ready_r)
        os.close(stop_r)
        # not accepting yet: a connection is not answered
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(address.split("=", 1)[1].split(",")[0])
        s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        s.settimeout(0.3)
        with pytest.raises(socket.timeout):
            s.recv(100)
        os.close(ready_w)
        ready_w = None
        s.settimeout(TIMEOUT)
        assert s.recv(100).startswith(b"OK ")
        s.close()
        inner = Client(address)
        assert inner.bus("GetId")
        os.close(stop_w)
        stop_w = None
        wait_until(lambda: _connect_fails(address), what="stopped listening")
        assert inner.bus("GetId")
        inner.close()
        _wait_removed(c, path)
    finally:
        for fd in (ready_w, stop_w):
            if fd is not None:
                os.close(fd)


def test_machine_id_for_contained_peers(cbus):
    c = cbus.client()
    real = c.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Peer", "GetMachineId")[0]
    vm = "0123456789abcdef0123456789abcdef"
    _, _, a_vm = add_server(c, named={"VirtualMachineId": ("s", vm)})
    _, _, a_hide = add_server(c, named={"HideMachineId": ("b", True)})
    _, _, a_plain = add_server(c)
    ask = lambda cl: cl.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Peer", "GetMachineId")[0]  # noqa: E731
    assert ask(cbus.client(a_vm)) == vm
    hidden = ask(cbus.client(a_hide))
    assert hidden != real and re.match(r"^[0-9a-f]{32}$", hidden)
    assert ask(cbus.client(a_hide)) == hidden  # stable per instance
    assert ask(cbus.client(a_plain)) == real
    e = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "", {}, {"VirtualMachineId": ("s", "xyz")})
    assert e.name == INVALID_ARGS


def test_properties_and_introspection(cbus):
    c = cbus.client()
    props = c.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", (CIFACE,))[0]
    assert set(props["SupportedArguments"][1]) >= {"Allow", "Socket", "StopOnDisconnect", "MaxConnections"}
    xml = c.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Introspectable", "Introspect")[0]
    assert 'name="ListInstances"' in xml and CIFACE in xml


# -- the command line ----------------------------------------------------------------------


def _sandbus(*args):
    return [sys.executable, "-m", "sandbus.cli", *args]


def test_cli_add_list_info_stop(cbus):
    from itutil import Background
    watcher = cbus.client()
    _watch_removed(watcher)
    with Background(_sandbus("container", "add", "--type", "org.flatpak", "--name", "org.example.App",
                             "--metadata", "k=v", "--max-connections", "3"), cbus.daemon,
                    env=cbus.env()) as bg:
        text = bg.wait_for(lambda t: "guid=" in t, what="path and address")
        path, address = text.splitlines()[:2]
        assert PATH_RE.match(path) and address.startswith("unix:path=")
        inner = cbus.client(address)
        cp = run(_sandbus("container", "list"), env=cbus.env())
        line = next(ln for ln in cp.stdout.splitlines() if ln.startswith(path))
        assert "org.flatpak" in line and "org.example.App" in line and line.split()[-2:] == ["1", "yes"]
        cp = run(_sandbus("container", "info", path), env=cbus.env())
        assert "Type: org.flatpak" in cp.stdout and "k: 'v'" in cp.stdout
        assert f"UnixUserID: {os.getuid()}" in cp.stdout
        # SIGTERM: the add command exits, the instance stops listening
        os.killpg(bg.proc.pid, signal.SIGTERM)
        assert bg.proc.wait(timeout=TIMEOUT) == 0
        wait_until(lambda: _connect_fails(address), what="listening stopped")
        assert inner.bus("GetId")
    cp = run(_sandbus("container", "add", "--type", "org.flatpak", "--name", "d", "--detach"),
             env=cbus.env())
    dpath, daddress = cp.stdout.splitlines()
    assert not _connect_fails(daddress)
    run(_sandbus("container", "stop", "--listening-only", dpath), env=cbus.env())
    _wait_removed(watcher, dpath)
    cp = run(_sandbus("container", "stop", dpath), env=cbus.env(), check=False)
    assert cp.returncode == 1 and NOT_CONTAINER in cp.stderr
    cp = run(_sandbus("--help"), check=False)
    assert cp.returncode == 0


def test_cli_via_entry_point(cbus):
    cp = run(["sandbus", "container", "--address", cbus.address, "add", "--type", "a.b", "--name", "",
              "--detach"])
    path = cp.stdout.splitlines()[0]
    cp = run(["sandbus", "container", "--address", cbus.address, "stop", path])
    assert cp.returncode == 0
