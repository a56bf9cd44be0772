"""io/connection.py's per-turn bound (issue 11, flood fairness): one
connection has at most MESSAGES_PER_TURN messages routed per event-loop
turn, the rest waits in its framer (in order, nothing lost) for the next;
and the auth timer is cancelled by Hello even when Hello ends a turn.

A real Server and Bus on a real event loop, with a raw client socket in the
same thread: the client writes everything at once (the socket buffer holds
it), then the loop runs."""

import asyncio
import os
import socket

import pytest

from sandbus.core.bus import Bus, BusSettings
from sandbus.io import connection
from sandbus.io.listener import listen
from sandbus.io.server import Server
from sandbus.wire.framer import Framer
from sandbus.wire.message import METHOD_CALL, METHOD_RETURN, Message, build_message

DRIVER = dict(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
              interface="org.freedesktop.DBus")


def _call(serial, member):
    return build_message(METHOD_CALL, serial, member=member, **DRIVER)


def _auth_bytes():
    return b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\nBEGIN\r\n"


class _CountingBus(Bus):
    """A bus that notes each message a connection hands it (a subclass:
    the compiled Bus's methods cannot be replaced on the instance)."""

    world = None

    def receive(self, peer, data):
        world = self.world
        world.routed.append((Message(bytes(data)).serial, world.turn))
        return Bus.receive(self, peer, data)


class _World:
    def __init__(self, tmp_path, auth_timeout_ms=5000):
        self.loop = asyncio.new_event_loop()
        settings = BusSettings("0" * 32, "1" * 32, bus_uid=os.getuid(), bus_pid=os.getpid())
        settings.limits.auth_timeout = auth_timeout_ms
        self.bus = _CountingBus(settings, release_fds=lambda fds: None)
        self.bus.world = self
        self.server = Server(self.bus, self.loop)
        path = str(tmp_path / "bus")
        for listener in listen("unix:path=" + path):
            self.server.add_listener(listener)
        self.path = path
        self.routed = []  # (serial, turn number) of each message the bus received
        self.turn = 0

    def tick(self):
        # a callback per loop turn numbers the turns
        self.turn += 1
        self.ticker = self.loop.call_soon(self.tick)

    def run_until(self, done, timeout=30.0):
        """Run the loop until done() (a wait, not a measure of time)."""
        deadline = self.loop.time() + timeout
        while not done():
            assert self.loop.time() < deadline, "the bus did not get there"
            self.loop.run_until_complete(asyncio.sleep(0.01))

    def client(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        s.setblocking(False)
        return s

    def replies(self, s):
        """The messages the bus has sent s so far (after the SASL lines)."""
        data = b""
        while True:
            try:
                chunk = s.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        start = data.index(b"\r\n") + 2  # the OK line; BEGIN gets no answer
        framer = Framer()
        return [Message(frame) for frame, _ in framer.frames(data[start:])]

    def close(self):
        self.server.close()
        self.loop.close()


@pytest.fixture
def world(tmp_path):
    made = []

    def make(**kw):
        w = _World(tmp_path, **kw)
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


def test_a_turn_routes_at_most_messages_per_turn_and_the_rest_follows_in_order(world):
    w = world()
    s = w.client()
    n = 3 * connection.MESSAGES_PER_TURN + 5
    # one write: Hello and n calls, all in the bus's buffer at the first read
    s.sendall(_auth_bytes() + _call(1, "Hello") + b"".join(_call(i, "GetId") for i in range(2, n + 2)))
    w.tick()
    w.run_until(lambda: len(w.routed) == n + 1)
    w.run_until(lambda: not w.server._dirty)  # the last replies written
    serials = [serial for serial, _ in w.routed]
    assert serials == list(range(1, n + 2))
    per_turn = {}
    for _, turn in w.routed:
        per_turn[turn] = per_turn.get(turn, 0) + 1
    assert max(per_turn.values()) == connection.MESSAGES_PER_TURN
    assert len(per_turn) >= -(-(n + 1) // connection.MESSAGES_PER_TURN)
    replies = w.replies(s)
    got = [m.reply_serial for m in replies if m.type == METHOD_RETURN]
    assert got == list(range(1, n + 2))
    s.close()


def test_hello_ending_a_turn_still_cancels_the_auth_timer(world, monkeypatch):
    # Every message ends its turn, Hello too; GetId after it keeps the
    # framer's generator path, where the budget is checked.  Were the timer
    # cancelled only after the budget check, it would stay armed until
    # auth_timeout (_auth_timeout then finds the Hello and does nothing,
    # but every connection would keep a timer and itself alive that long).
    monkeypatch.setattr(connection, "MESSAGES_PER_TURN", 1)
    w = world(auth_timeout_ms=60000)
    s = w.client()
    s.sendall(_auth_bytes() + _call(1, "Hello") + _call(2, "GetId"))
    w.run_until(lambda: len(w.routed) == 2)
    conns = list(w.server.connections)
    assert len(conns) == 1 and not conns[0].closed
    assert conns[0].peer.unique_name is not None
    assert conns[0].auth_timer is None
    replies = w.replies(s)
    assert [m.reply_serial for m in replies if m.type == METHOD_RETURN] == [1, 2]
    s.close()
