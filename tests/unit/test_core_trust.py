"""The bus core as a trust boundary: what one peer sends must never cost the
bus more than a glance at what it does not need, and what one peer leaves
behind must not stay (issue 11's holes 1 and 3, at core level)."""

import pytest

from corehelpers import ERR, ERROR, METHOD_RETURN, connect, make_bus
from sandbus.wire import message as message_module


@pytest.fixture
def bus():
    return make_bus()


BIG = ["x" * 1000] * 4000  # 4 MB of strings: costly to unmarshal, cheap to validate


def test_wrong_driver_calls_are_answered_without_unmarshalling(bus, monkeypatch):
    c = connect(bus)
    seen = []

    def refuse(*args):
        seen.append(args)
        raise AssertionError("a body was unmarshalled")

    # Message.body cannot be patched where Message is a compiled extension
    # type (setup.py); every unmarshalling in wire/message.py, body() among
    # them, goes through its module's Reader, which can be in both builds.
    monkeypatch.setattr(message_module, "Reader", refuse)
    calls = (("NoSuchMethod", "as", (BIG,)),   # unknown method
             ("GetNameOwner", "as", (BIG,)),   # known method, wrong signature
             ("Hello", "as", (BIG,)),          # takes nothing
             ("ListNames", "s", ("x",)))
    for member, signature, body in calls:
        c.driver(member, signature, body)
    monkeypatch.undo()
    assert seen == []
    answers = c.received()
    assert [m.error_name for m in answers] == [ERR + "UnknownMethod", ERR + "InvalidArgs",
                                               ERR + "InvalidArgs", ERR + "InvalidArgs"]
    assert not c.closed


def test_caller_leaving_drops_the_callees_entries(bus):
    """A caller that disconnects before its call is answered leaves nothing
    with the callee: nothing waits for a reply that can go nowhere."""
    b = connect(bus)
    for _ in range(200):
        a = connect(bus)
        a.call(b.unique_name, "Frob")
        a.call(b.unique_name, "Frob")
        bus.disconnect(a.peer)
    assert b.peer.expected_replies == {}
    # b, which never answered, can still call and be answered
    c = connect(bus)
    serial = b.call(c.unique_name, "Ping")
    (call,) = [m for m in c.received() if m.member == "Ping"]
    c.reply(call)
    assert b.reply_to(serial).type == METHOD_RETURN


def test_callee_leaving_clears_the_callers_count(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob")
    a.call(b.unique_name, "Frob")
    assert a.peer.pending_calls == 2 and a.peer.calls_out == {b.peer: 2}
    bus.disconnect(b.peer)
    assert a.peer.pending_calls == 0 and a.peer.calls_out == {}
    assert [m.error_name for m in a.received() if m.type == ERROR] == [ERR + "NoReply"] * 2


def test_late_reply_after_caller_left_goes_nowhere(bus):
    a, b = connect(bus), connect(bus)
    a.call(b.unique_name, "Frob")
    (call,) = b.received()
    bus.disconnect(a.peer)
    b.reply(call)
    assert not b.closed and b.peer.expected_replies == {}
