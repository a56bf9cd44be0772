"""The sans-I/O core's own cost per call, with no sockets and no event loop:
``python -m bench.core_cost``.  Compare with the bus CPU per call that
``python -m bench --workloads sequential`` measures: the difference is the
io layer (loop wakeups, recvmsg/send, the kernel)."""

import sys
import time

from sandbus.core.bus import Bus, BusSettings
from sandbus.core.peer import Credentials
from sandbus.wire.message import METHOD_CALL, METHOD_RETURN, Message, build_message


class _Sink:
    """Keeps nothing: only the core's work is timed."""
    queued_bytes = 0

    def send(self, data, fds=()):
        pass

    def close(self, reason):
        pass


class _NameSink(_Sink):
    def __init__(self):
        self.unique_name = None

    def send(self, data, fds=()):
        msg = Message(bytes(data))
        if self.unique_name is None and msg.type == METHOD_RETURN:
            self.unique_name = msg.body()[0]


def _peer(bus):
    sink = _NameSink()
    peer = bus.connect(sink, Credentials(uid=0, pid=1), False)
    bus.receive(peer, build_message(METHOD_CALL, 1, path="/org/freedesktop/DBus", member="Hello",
                                    interface="org.freedesktop.DBus", destination="org.freedesktop.DBus"))
    peer.sink = _Sink()
    return peer


def main(n: int = 200000) -> float:
    bus = Bus(BusSettings("0" * 32, "1" * 32))
    caller, service = _peer(bus), _peer(bus)
    calls, replies = [], []
    for serial in range(2, n + 2):
        calls.append(build_message(METHOD_CALL, serial, path="/echo", interface="org.example.Echo",
                                   member="Echo", destination=service.unique_name,
                                   signature="s", body=("hello",)))
        replies.append(build_message(METHOD_RETURN, serial, reply_serial=serial,
                                     destination=caller.unique_name, signature="s", body=("hello",)))
    t0 = time.perf_counter()
    for call, reply in zip(calls, replies):
        bus.receive(caller, call)
        bus.receive(service, reply)
    per_call = (time.perf_counter() - t0) / n * 1e6
    print(f"sans-I/O core: {per_call:.2f} us per call "
          "(2 messages: parse, route, reply tracking, forward)")
    return per_call


def validation_cost(n: int = 200000) -> float:
    """Per-message cost of body validation: the same calls with the
    validator replaced by a no-op, subtracted, halved (two messages a call)."""
    from sandbus.wire import message

    with_it = main(n)
    real = message.validate_body
    message.validate_body = lambda *args: None
    try:
        without = main(n)
    finally:
        message.validate_body = real
    per_message = (with_it - without) / 2
    print(f"body validation: {per_message:.2f} us per message ('s' bodies), "
          f"{with_it:.2f} us per call with it, {without:.2f} without")
    return per_message


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    validation_cost(count)
