"""A large message is handed to a connection as its header and a view of
the body it arrived in (Bus._send, Message.forwarded_parts), so the bus does
not copy the body in user space; everything else keeps the one-buffer path."""

import os

import pytest

from corehelpers import FakeSink, connect, make_bus
from sandbus.core.bus import LARGE_BODY


class PartsSink(FakeSink):
    """A sink that takes header and body apart, as io/connection.py does."""

    def __init__(self):
        super().__init__()
        self.parts = []

    def send_parts(self, head, body, fds=()):
        self.parts.append((head, body))
        self.send(b"".join((head, body)), fds)


@pytest.fixture
def bus():
    return make_bus()


def _call(a, b, size, **kw):
    payload = os.urandom(size)
    serial = a.call(b.unique_name, "Take", "ay", (payload,), interface="com.example.I", **kw)
    return serial, payload


def test_large_body_goes_as_a_view_and_arrives_whole(bus):
    a = connect(bus)
    b = connect(bus, sink=PartsSink())
    serial, payload = _call(a, b, LARGE_BODY + 5)
    (m,) = b.received()
    assert (m.serial, m.sender, m.member, m.body()) == (serial, a.unique_name, "Take", [payload])
    (head, body), = b.sink.parts
    assert isinstance(body, memoryview) and payload in bytes(body)
    assert len(head) == m.body_start


def test_small_body_and_sinks_without_parts_take_one_buffer(bus):
    a = connect(bus)
    b = connect(bus, sink=PartsSink())
    c = connect(bus)  # FakeSink: no send_parts
    _, small = _call(a, b, LARGE_BODY // 2)
    _, large = _call(a, c, LARGE_BODY * 2)
    assert b.sink.parts == []
    assert [m.body() for m in b.received()] == [[small]]
    assert [m.body() for m in c.received()] == [[large]]


def test_forged_sender_is_replaced_on_the_parts_path_too(bus):
    a = connect(bus)
    b = connect(bus, sink=PartsSink())
    payload = os.urandom(LARGE_BODY)
    a.call(b.unique_name, "Take", "ay", (payload,), interface="com.example.I", sender=":1.999")
    (m,) = b.received()
    assert m.sender == a.unique_name and m.body() == [payload]
    assert b.sink.parts == []  # its fields are rewritten: forwarded() builds it whole


def test_large_body_with_fds_keeps_its_fds(bus):
    a = connect(bus)
    b = connect(bus, sink=PartsSink())
    r, w = os.pipe()
    try:
        a.call(b.unique_name, "Take", "ayh", (os.urandom(LARGE_BODY), 0), interface="com.example.I",
               fds=[r])
        (m,) = b.received()
        assert len(m.fds) == 1 and m.body()[0] and len(b.sink.sent[-1][0]) > LARGE_BODY
    finally:
        os.close(r)
        os.close(w)
