"""Containers1 as a trust boundary (issue 11): StopInstance and connections
still authenticating (hole 4), fd-typed named arguments of AddServer
(hole 10), and per-instance quotas."""

from __future__ import annotations

import os
import socket

import pytest
from jeepney import DBusAddress, new_method_call

from containers_util import (  # noqa: F401  (fixtures)
    CIFACE,
    INVALID_ARGS,
    SKIP_REFERENCE,
    add_server,
    cbus,
    cbus_factory,
    ccall,
    cerror,
)
from itutil import TIMEOUT, Client, hello_bytes, is_closed, is_signal, recv_line

pytestmark = SKIP_REFERENCE

UID_HEX = str(os.getuid()).encode().hex().encode()


def _watch_removed(c: Client):
    c.add_match(f"type='signal',interface='{CIFACE}',member='InstanceRemoved'")


def _raw(socket_path: bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(socket_path.rstrip(b"\0").decode())
    return s


# -- hole 4: StopInstance and connections still in SASL -------------------------------


# auth_timeout far beyond the test's waits: the bus must act on StopInstance
# itself, not on the half-authenticated connection timing out
LONG_AUTH = '<limit name="auth_timeout">120000</limit>'


@pytest.mark.parametrize("stage", ["connected", "nul-sent", "auth-ok"])
def test_stop_instance_closes_connections_still_authenticating(cbus_factory, stage):
    cbus = cbus_factory(LONG_AUTH)
    c = cbus.client()
    _watch_removed(c)
    path, socket_path, _ = add_server(c)
    raw = _raw(socket_path)
    try:
        if stage != "connected":
            raw.sendall(b"\0")
        if stage == "auth-ok":
            raw.sendall(b"AUTH EXTERNAL " + UID_HEX + b"\r\n")
            assert recv_line(raw).startswith(b"OK ")
        else:
            # the bus has accepted it once another connection's SASL went through
            Client(_address_of(socket_path)).close()
        ccall(c, "StopInstance", "o", path)
        # InstanceRemoved does not wait for the half-authenticated connection ...
        c.wait_signal("InstanceRemoved", interface=CIFACE, body0=path)
        # ... which is closed, and can never finish and get a unique name
        try:
            raw.sendall((b"" if stage == "auth-ok" else b"\0AUTH EXTERNAL " + UID_HEX + b"\r\n")
                        + b"BEGIN\r\n" + hello_bytes())
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert is_closed(raw)
    finally:
        raw.close()
    # nothing of that instance shows up on the bus afterwards
    names = c.bus("ListNames")[0]
    assert not [n for n in names if n.startswith(":") and n not in (c.unique_name,)]
    c.assert_no(lambda m: is_signal(m, "NameOwnerChanged"), what="a new connection")


def _address_of(socket_path: bytes) -> str:
    return "unix:path=" + socket_path.rstrip(b"\0").decode()


def test_stop_listening_keeps_connections_still_authenticating(cbus):
    # StopListening only stops accepting: one already accepted may finish
    c = cbus.client()
    path, socket_path, _ = add_server(c)
    raw = _raw(socket_path)
    try:
        raw.sendall(b"\0AUTH EXTERNAL " + UID_HEX + b"\r\n")
        assert recv_line(raw).startswith(b"OK ")
        ccall(c, "StopListening", "o", path)
        raw.sendall(b"BEGIN\r\n" + hello_bytes())
        assert not is_closed(raw, timeout=0.5)
    finally:
        raw.close()


# -- hole 10: fd-typed named arguments of AddServer -----------------------------------


def _daemon_fds(cbus) -> int:
    return len(os.listdir(f"/proc/{cbus.daemon.pid}/fd"))


def _bad_fd_cases(tmp_path):
    """(named argument, how to make the fd): each must be InvalidArgs."""
    def regular_file():
        p = tmp_path / "regular"
        p.write_bytes(b"x")
        return os.open(p, os.O_RDONLY)

    def pipe_write_end():
        r, w = os.pipe()
        os.close(r)
        return w

    def unbound_unix_socket():
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()

    def listening_tcp_socket():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        return s.detach()

    def devnull():
        return os.open(os.devnull, os.O_RDONLY)

    return [("ReadyNotification", regular_file), ("StopOnNotify", regular_file),
            ("ReadyNotification", pipe_write_end), ("StopOnNotify", pipe_write_end),
            ("StopOnNotify", devnull),
            ("Socket", regular_file), ("Socket", unbound_unix_socket), ("Socket", listening_tcp_socket),
            ("Socket", pipe_write_end)]


def test_addserver_refuses_unusable_fds_without_leaking_any(cbus, tmp_path):
    c = cbus.client(enable_fds=True)
    _watch_removed(c)
    add_server(c)  # warm-up: the containers directory, caches
    before = _daemon_fds(cbus)
    for key, make in _bad_fd_cases(tmp_path):
        fd = make()
        try:
            err = cerror(c, "AddServer", "ssa{sv}a{sv}", "com.example.App", "app", {}, {key: ("h", fd)})
        finally:
            os.close(fd)
        assert err.name == INVALID_ARGS, (key, make.__name__, err)
        assert key in err.text, err.text
    # the creator is still connected and served, nothing leaked, nothing logged as a crash
    assert c.bus("GetId")
    assert _daemon_fds(cbus) == before
    assert "Traceback" not in cbus.daemon.stderr_text()
    # and no instance was made for any of them
    listed = ccall(c, "ListInstances")[0]
    assert len(listed) == 1


def test_addserver_accepts_the_read_end_of_a_pipe_and_a_socket(cbus):
    c = cbus.client(enable_fds=True)
    r, w = os.pipe()
    a, b = socket.socketpair()
    try:
        add_server(c, named={"ReadyNotification": ("h", r), "StopOnNotify": ("h", a.fileno())})
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()
    assert c.bus("GetId")


# -- per-instance quotas ---------------------------------------------------------------

QUOTAS = ('<limit name="max_container_match_rules">4</limit>'
          '<limit name="max_container_pending_replies">2</limit>')


def test_instance_quotas_bound_all_its_connections_together(cbus_factory):
    cbus = cbus_factory(QUOTAS)
    c = cbus.client()
    c.add_match("type='signal',member='NameOwnerChanged'")
    service = cbus.client()  # never answers
    _path, _sp, address = add_server(c)
    a, b = cbus.client(address), cbus.client(address)
    a.add_match("member='A0'")
    a.add_match("member='A1'")
    b.add_match("member='B0'")
    b.add_match("member='B1'")
    for inner in (a, b):
        err = inner.bus_error("AddMatch", "s", "member='More'")
        assert err.name == "org.freedesktop.DBus.Error.LimitsExceeded"
        assert "max_container_match_rules=4" in err.text
    for i in range(8):  # outside the instance: only the per-connection limit applies
        c.add_match(f"member='C{i}'")
    # pending replies: two calls wait for the silent service, the third is refused
    addr = DBusAddress("/", bus_name=service.unique_name, interface="com.example.Silent")
    a.send(new_method_call(addr, "Wait"))
    b.send(new_method_call(addr, "Wait"))
    service.wait_for(lambda m: m.header.fields.get(3) == "Wait")
    service.wait_for(lambda m: m.header.fields.get(3) == "Wait")
    reply = a.call_msg(new_method_call(addr, "Wait"))
    assert reply.header.fields.get(4) == "org.freedesktop.DBus.Error.LimitsExceeded", reply
    assert "max_container_pending_replies=2" in reply.body[0]
    # a connection that leaves gives back what it held (once the bus saw it leave)
    b_name = b.unique_name
    b.close()
    # (c also holds the NameOwnerChanged of b's arrival: wait for its departure)
    c.wait_for(lambda m: is_signal(m, "NameOwnerChanged", body0=b_name) and m.body[2] == "")
    a.add_match("member='AfterLeave'")
    a.send(new_method_call(addr, "Wait"))
    service.wait_for(lambda m: m.header.fields.get(3) == "Wait")
