"""sandbus's own blocking client (io/client.py) against the bus under test:
Hello, calls, errors, signals arriving while a call waits, fd passing.
Passes against dbus-daemon too."""

import os

import pytest

from sandbus.io.client import BusError, Client, ClientError
from sandbus.wire.message import SIGNAL, build_message

from itutil import TIMEOUT


def test_hello_call_and_error(bus):
    c = Client(bus.address, timeout=TIMEOUT)
    try:
        assert c.unique_name.startswith(":")
        assert c.bus("GetNameOwner", "s", "org.freedesktop.DBus")[0] == "org.freedesktop.DBus"
        with pytest.raises(BusError) as e:
            c.bus("GetNameOwner", "s", "com.example.Missing")
        assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner"
    finally:
        c.close()


def test_signal_that_arrives_while_a_call_waits_is_kept(bus):
    a = Client(bus.address, timeout=TIMEOUT)
    b = Client(bus.address, timeout=TIMEOUT)
    try:
        a.add_match("type='signal',interface='com.example.T'")
        b.send(build_message(SIGNAL, b.next_serial(), path="/t", interface="com.example.T", member="Ping",
                             signature="s", body=("one",)))
        # A call made after the signal was sent: its reply comes behind the signal.
        assert a.bus("NameHasOwner", "s", b.unique_name)[0] is True
        m = a.wait_signal("com.example.T", "Ping", timeout=TIMEOUT)
        assert m.sender == b.unique_name and list(m.body()) == ["one"]
        with pytest.raises(ClientError, match="timed out"):
            a.wait_signal("com.example.T", "Ping", timeout=0.2)
    finally:
        a.close()
        b.close()


def test_fd_passing_both_ways(bus):
    a = Client(bus.address, timeout=TIMEOUT)
    b = Client(bus.address, timeout=TIMEOUT)
    r, w = os.pipe()
    try:
        assert a.unix_fds and b.unix_fds
        a.send(build_message(SIGNAL, a.next_serial(), path="/t", interface="com.example.T", member="Fd",
                             destination=b.unique_name, signature="h", body=(0,), unix_fds=1), [w])
        m = b.wait_signal("com.example.T", "Fd", timeout=TIMEOUT)
        assert len(m.fds) == 1
        os.write(m.fds[0], b"through the bus")
        os.close(m.fds[0])
        os.close(w)
        w = None
        assert os.read(r, 100) == b"through the bus"
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
        a.close()
        b.close()


def test_unreachable_address_is_one_clear_error(tmp_path):
    with pytest.raises(ClientError, match="cannot connect"):
        Client(f"unix:path={tmp_path}/nothing", timeout=TIMEOUT)
