"""Mediator.hides (core/mediation.py, issue 11 hole 7): the bus asks it
before it looks a destination up, and a hidden name then takes the path a
missing one takes, to the byte (but for the bus's own serial)."""

import pytest

from corehelpers import ERR, connect, make_bus
from sandbus.core.mediation import Mediation, Mediator
from sandbus.wire.message import ERROR, NO_AUTO_START, SIGNAL

HIDDEN_NAME = "com.example.Hidden"


class Hider(Mediator):
    """Restricts the peers it is told to; hides HIDDEN_NAME and the unique
    names in ``hidden``; records what it is asked, in order, in ``events``."""

    def __init__(self, events):
        self.events = events
        self.restricted = set()
        self.hidden = {HIDDEN_NAME}

    def restricts(self, peer) -> bool:
        return peer.id in self.restricted

    def hides(self, sender, msg) -> bool:
        self.events.append(("hides", msg.destination))
        return msg.destination in self.hidden

    def unicast(self, sender, target, msg, requested):
        self.events.append(("unicast", msg.destination))
        return None


class Peers(dict):
    """bus.peers, recording its lookups."""

    def __init__(self, events, peers):
        super().__init__(peers)
        self.events = events

    def get(self, key, default=None):
        self.events.append(("lookup", key))
        return super().get(key, default)


def _world(hide_owner: bool):
    """A bus with one restricted caller and another peer: (hide_owner) it
    owns HIDDEN_NAME and both its names are hidden from the caller; else it
    owns nothing and nothing is hidden."""
    events = []
    bus = make_bus()
    hider = Hider(events)
    bus.set_mediation(Mediation([hider]))
    hider.restricted.add(bus._next_peer_id + 1)
    caller = connect(bus)
    other = connect(bus)
    if hide_owner:
        assert other.bus_ok("RequestName", "su", (HIDDEN_NAME, 4)) == [1]
        hider.hidden.add(other.unique_name)
    else:
        hider.hidden.clear()  # a missing name is missing, not hidden
    other.clear()
    caller.clear()
    bus.peers = Peers(events, bus.peers)
    events.clear()
    return bus, caller, other, events


def _answer(caller, serial):
    """The bytes of the error answering serial, with the bus's serial cut out."""
    m = caller.reply_to(serial)
    assert m.type == ERROR
    data = m.data
    return m, data[:8] + data[12:]


@pytest.mark.parametrize("flags", [0, NO_AUTO_START])
@pytest.mark.parametrize("unique", [False, True])
def test_a_hidden_name_is_answered_byte_for_byte_as_a_missing_one(unique, flags):
    answers = []
    for hide_owner in (True, False):
        bus, caller, other, events = _world(hide_owner)
        # the same name in both worlds: in the second nobody has it
        dest = ":1.1" if unique else HIDDEN_NAME
        assert (other.unique_name == dest) == unique
        if not hide_owner and unique:
            bus.peers = Peers(events, {k: v for k, v in bus.peers.items() if k != dest})
        serial = caller.call(dest, "M", path="/x", interface="com.example.X", flags=flags)
        m, data = _answer(caller, serial)
        assert m.error_name == ERR + ("NameHasNoOwner" if flags else "ServiceUnknown")
        assert other.received() == []
        answers.append(data)
    assert answers[0] == answers[1]


def test_hides_is_asked_before_the_lookup_and_nothing_after():
    bus, caller, other, events = _world(True)
    caller.call(other.unique_name, "M", path="/x", interface="com.example.X")
    # asked first; a hidden name is never looked up, nor put to unicast
    assert events == [("hides", other.unique_name)]
    events.clear()
    caller.call(":1.77", "M", path="/x", interface="com.example.X")
    assert events == [("hides", ":1.77"), ("lookup", ":1.77")]


def test_hidden_unicast_signal_goes_nowhere():
    bus, caller, other, events = _world(True)
    caller.send(SIGNAL, destination=HIDDEN_NAME, path="/x", interface="com.example.X", member="S")
    assert other.received() == []
    assert events[0] == ("hides", HIDDEN_NAME)
    assert ("unicast", HIDDEN_NAME) not in events


def test_a_visible_name_is_routed_after_the_question():
    bus, caller, other, events = _world(False)
    caller.call(other.unique_name, "M", path="/x", interface="com.example.X")
    assert events[:3] == [("hides", other.unique_name), ("lookup", other.unique_name),
                          ("unicast", other.unique_name)]
    assert [m.member for m in other.received()] == ["M"]


def test_an_unrestricted_sender_is_not_asked_about():
    bus, caller, other, events = _world(True)
    other.call(caller.unique_name, "M", path="/x", interface="com.example.X")
    assert ("hides", caller.unique_name) not in events
    assert [m.member for m in caller.received()] == ["M"]
