"""Unix file descriptor passing through the bus."""

import array
import asyncio
import os
import socket
import tempfile
import time

import pytest

from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call, new_signal

from itutil import (IS_SANDBUS, TIMEOUT, Client, assert_bus_alive, describe, error_name, hello_bytes,
                    is_closed, raw_auth, raw_connect)

ERR = "org.freedesktop.DBus.Error."


def fd_call(dest, fd, member="TakeFd"):
    return new_method_call(DBusAddress("/fd", bus_name=dest, interface="com.example.Fd"),
                           member, "h", (fd,))


def test_fd_passed_between_jeepney_clients(bus):
    with Client(bus.address, enable_fds=True) as a, Client(bus.address, enable_fds=True) as b:
        r, w = os.pipe()
        try:
            s = a.send(fd_call(b.unique_name, r))
        finally:
            os.close(r)
        m = b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        assert m.header.fields[HeaderFields.unix_fds] == 1
        (fdobj,) = m.body
        with fdobj.to_file("rb") as f:
            os.write(w, b"through the bus")
            os.close(w)
            assert f.read() == b"through the bus"
        from jeepney import new_method_return
        b.send(new_method_return(m))
        reply = a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert reply.header.message_type == MessageType.method_return


def test_multiple_fds_in_one_message(bus):
    with Client(bus.address, enable_fds=True) as a, Client(bus.address, enable_fds=True) as b:
        files = []
        for i in range(3):
            f = tempfile.TemporaryFile()
            f.write(f"file{i}".encode())
            f.flush()
            files.append(f)
        msg = new_method_call(DBusAddress("/fd", bus_name=b.unique_name,
                                          interface="com.example.Fd"),
                              "Many", "hhh", tuple(f.fileno() for f in files))
        a.send(msg)
        for f in files:
            f.close()
        m = b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        assert m.header.fields[HeaderFields.unix_fds] == 3
        contents = []
        for fdobj in m.body:
            with fdobj.to_file("rb") as f:
                f.seek(0)
                contents.append(f.read())
        assert contents == [b"file0", b"file1", b"file2"]


def test_fd_to_peer_without_fd_support_is_rejected(bus):
    with Client(bus.address, enable_fds=True) as a, Client(bus.address) as b:
        r, w = os.pipe()
        try:
            s = a.send(fd_call(b.unique_name, r))
        finally:
            os.close(r)
            os.close(w)
        e = a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert e.header.message_type == MessageType.error
        assert error_name(e) == ERR + "NotSupported", describe(e)
        b.assert_no(lambda m: m.header.message_type == MessageType.method_call)
    assert_bus_alive(bus)


def test_fd_broadcast_skips_peers_without_fd_support(bus):
    with Client(bus.address, enable_fds=True) as a, \
            Client(bus.address, enable_fds=True) as yes, Client(bus.address) as no:
        for c in (yes, no):
            c.add_match("type='signal',interface='com.example.Fd'")
        r, w = os.pipe()
        try:
            a.send(new_signal(DBusAddress("/fd", interface="com.example.Fd"), "Fd", "h", (r,)))
        finally:
            os.close(r)
            os.close(w)
        a.send(new_signal(DBusAddress("/fd", interface="com.example.Fd"), "Plain"))
        m = yes.wait_for(lambda m: m.header.message_type == MessageType.signal
                         and m.header.fields.get(HeaderFields.interface) == "com.example.Fd")
        assert m.header.fields[HeaderFields.member] == "Fd"
        m.body[0].close()
        m = no.wait_for(lambda m: m.header.message_type == MessageType.signal
                        and m.header.fields.get(HeaderFields.interface) == "com.example.Fd")
        assert m.header.fields[HeaderFields.member] == "Plain"
    assert_bus_alive(bus)


def test_dbus_fast_fd_passing(bus):
    from dbus_fast import Message, MessageType as FMT
    from dbus_fast.aio import MessageBus

    async def main():
        sender = await MessageBus(bus_address=bus.address, negotiate_unix_fd=True).connect()
        receiver = await MessageBus(bus_address=bus.address, negotiate_unix_fd=True).connect()
        got = asyncio.get_running_loop().create_future()

        def handler(msg):
            if msg.message_type == FMT.METHOD_CALL and msg.member == "TakeFd":
                fd = msg.unix_fds[msg.body[0]]
                with os.fdopen(fd, "rb") as f:
                    data = f.read()
                got.set_result(data)
                return Message.new_method_return(msg, "s", [data.decode()])
            return None

        receiver.add_message_handler(handler)
        r, w = os.pipe()
        os.write(w, b"fast fd")
        os.close(w)
        reply = await sender.call(Message(
            destination=receiver.unique_name, path="/fd", interface="com.example.Fd",
            member="TakeFd", signature="h", body=[0], unix_fds=[r]))
        os.close(r)
        assert reply.message_type == FMT.METHOD_RETURN, (reply.error_name, reply.body)
        assert reply.body == ["fast fd"]
        assert await got == b"fast fd"
        sender.disconnect()
        receiver.disconnect()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT * 2))


def test_negotiate_unix_fd_agreed(bus):
    from itutil import raw_connect, recv_line
    s = raw_connect(bus)
    try:
        s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        assert recv_line(s).startswith(b"OK ")
        s.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        assert recv_line(s) == b"AGREE_UNIX_FD\r\n"
    finally:
        s.close()


def _send_with_fd(s, data):
    r, w = os.pipe()
    try:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.skipif(not IS_SANDBUS, reason="sandbus disconnects; dbus-daemon's handling differs")
def test_fds_without_negotiating_them_disconnect(bus):
    # The bus reads such a peer without an ancillary buffer; the fds it sends
    # anyway must still cost it its connection, not pass unnoticed.
    s = raw_connect(bus)
    raw_auth(s)
    s.sendall(hello_bytes())
    time.sleep(0.3)
    assert s.recv(65536)  # the Hello's reply: the ping comes in a read of its own
    ping = new_method_call(DBusAddress("/", bus_name="org.freedesktop.DBus",
                                       interface="org.freedesktop.DBus.Peer"), "Ping")
    _send_with_fd(s, ping.serialise(serial=2))
    assert is_closed(s)
    assert_bus_alive(bus)


@pytest.mark.skipif(not IS_SANDBUS, reason="sandbus disconnects; dbus-daemon's handling differs")
def test_fds_without_negotiating_them_inside_a_large_message_disconnect(bus):
    with Client(bus.address) as b:
        s = raw_connect(bus)
        raw_auth(s)
        s.sendall(hello_bytes())
        big = new_method_call(DBusAddress("/x", bus_name=b.unique_name, interface="com.example.Big"),
                              "Take", "ay", (b"x" * (1024 * 1024),)).serialise(serial=2)
        s.sendall(big[:128 * 1024])   # the bus is now reading it into its own buffer
        time.sleep(0.3)
        _send_with_fd(s, big[128 * 1024:256 * 1024])
        try:
            s.sendall(big[256 * 1024:])
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert is_closed(s)
        b.assert_no(lambda m: m.header.message_type == MessageType.method_call)
    assert_bus_alive(bus)
