"""Per-instance quotas (containers/quotas.py), on the sans-I/O core: what
all connections of one container instance hold together is bounded."""

import pytest
from corehelpers import ERR, FakeSink, Client, connect, make_bus

from sandbus.containers.instance import ContainerInstance
from sandbus.containers.manager import ContainerManager
from sandbus.core.mediation import Mediation
from sandbus.core.peer import Credentials

LIMITS_EXCEEDED = ERR + "LimitsExceeded"


class _Listener:
    def __init__(self, inst):
        self.container = inst


class ContainedClient(Client):
    """A Client connected through an instance's listener."""

    def __init__(self, bus, inst):  # noqa: super().__init__ would connect without the listener
        import os
        self.bus = bus
        self.sink = FakeSink()
        assert inst.admit_connection()
        self.peer = bus.connect(self.sink, Credentials(uid=os.getuid(), pid=4321), True, _Listener(inst))
        self._serial = 0
        self._read = 0
        self.unique_name = None
        self.hello()
        self.clear()


def _bus_and_instance(mediated=False, **limits):
    bus = make_bus(**limits)
    mgr = ContainerManager(bus)
    bus.set_mediation(Mediation([mgr.access]))
    creator = connect(bus)
    inst = ContainerInstance(1, "com.example.App", "app", {}, creator.peer, {}, 16)
    inst.listening = True
    if mediated:
        # talk to anything, own org.example.*: only the quotas are under test
        inst.access = mgr.access.compile_rules([(1 | 4 | 8, "", "/", ""), (2 | 4 | 8 | 32, "org.example", "/", "")])
    mgr.instances[inst.path] = inst
    return bus, inst, creator


@pytest.mark.parametrize("mediated", [False, True])
def test_match_rules_are_counted_over_the_whole_instance(mediated):
    bus, inst, outside = _bus_and_instance(mediated, max_container_match_rules=5)
    a, b = ContainedClient(bus, inst), ContainedClient(bus, inst)
    for i in range(3):
        a.bus_ok("AddMatch", "s", (f"member='A{i}'",))
    for i in range(2):
        b.bus_ok("AddMatch", "s", (f"member='B{i}'",))
    for c in (a, b):
        name, text = c.bus_error("AddMatch", "s", ("member='More'",))
        assert name == LIMITS_EXCEEDED and "max_container_match_rules=5" in text
    for i in range(10):  # an uncontained peer is not charged
        outside.bus_ok("AddMatch", "s", (f"member='O{i}'",))
    b.bus_ok("RemoveMatch", "s", ("member='B0'",))
    a.bus_ok("AddMatch", "s", ("member='Again'",))
    # a connection leaving gives its rules back
    bus.disconnect(a.peer)
    b.bus_ok("AddMatch", "s", ("member='AfterLeave'",))


def test_names_are_counted_over_the_whole_instance():
    bus, inst, _ = _bus_and_instance(True, max_container_names=3)
    a, b = ContainedClient(bus, inst), ContainedClient(bus, inst)
    assert a.bus_ok("RequestName", "su", ("org.example.A1", 4)) == [1]
    assert a.bus_ok("RequestName", "su", ("org.example.A2", 4)) == [1]
    assert b.bus_ok("RequestName", "su", ("org.example.B1", 4)) == [1]
    name, text = b.bus_error("RequestName", "su", ("org.example.B2", 4))
    assert name == LIMITS_EXCEEDED and "max_container_names=3" in text
    # asking again for a name it owns costs nothing
    assert a.bus_ok("RequestName", "su", ("org.example.A1", 4)) == [4]
    a.bus_ok("ReleaseName", "s", ("org.example.A2",))
    assert b.bus_ok("RequestName", "su", ("org.example.B2", 4)) == [1]


def test_pending_replies_are_counted_over_the_whole_instance():
    bus, inst, service = _bus_and_instance(False, max_container_pending_replies=3)
    a, b = ContainedClient(bus, inst), ContainedClient(bus, inst)
    for c in (a, a, b):
        c.call(service.unique_name, "Slow", interface="com.example.S")
    assert not a.received() and not b.received()
    serial = b.call(service.unique_name, "Slow", interface="com.example.S")
    refused = b.reply_to(serial)
    assert refused.error_name == LIMITS_EXCEEDED and "max_container_pending_replies=3" in refused.body()[0]
    # calls that expect no reply are not held, and pass
    b.call(service.unique_name, "Fire", interface="com.example.S", flags=1)
    # an answer frees a slot
    calls = [m for m in service.received() if m.member == "Slow"]
    assert len(calls) == 3
    service.reply(calls[0])
    serial = b.call(service.unique_name, "Slow", interface="com.example.S")
    with pytest.raises(AssertionError):
        b.reply_to(serial)  # no error: the call went through and awaits its answer


def test_the_instance_count_of_pending_calls_follows_every_way_a_call_ends():
    """inst.pending_calls (kept by core/replies.py) is the sum of its
    connections' at every step: answered, NoReply because the callee left,
    timed out, the caller gone; an error answer frees its slot too."""
    bus, inst, service = _bus_and_instance(False, max_container_pending_replies=100, reply_timeout=25000)
    timers = []

    class Timer:
        def __init__(self, fn, args):
            self.fn, self.args, self.cancelled = fn, args, False

        def cancel(self):
            self.cancelled = True

    def call_later(delay, fn, *args):
        timers.append(Timer(fn, args))
        return timers[-1]
    bus.call_later = call_later
    a, b = ContainedClient(bus, inst), ContainedClient(bus, inst)
    other = connect(bus)

    def consistent():
        assert inst.pending_calls == sum(p.pending_calls for p in inst.connections)
        return inst.pending_calls

    for c in (a, a, b, b):
        c.call(service.unique_name, "Slow", interface="com.example.S")
    a.call(other.unique_name, "Slow", interface="com.example.S")
    assert consistent() == 5
    calls = [m for m in service.received() if m.member == "Slow"]
    service.reply(calls[0])
    service.error(calls[2])
    assert consistent() == 3
    bus.disconnect(other.peer)  # a's call to it gets NoReply
    assert consistent() == 2
    live = [t for t in timers if not t.cancelled]
    live[0].fn(*live[0].args)  # one of the remaining calls times out
    assert consistent() == 1
    bus.disconnect(b.peer if b.peer.pending_calls else a.peer)
    assert inst.pending_calls == 0


def test_queued_bytes_are_counted_over_the_whole_instance():
    bus, inst, outside = _bus_and_instance(False, max_container_queued_bytes=1000)
    a, b = ContainedClient(bus, inst), ContainedClient(bus, inst)
    a.bus_ok("AddMatch", "s", ("member='Sig'",))
    b.bus_ok("AddMatch", "s", ("member='Sig'",))
    a.sink.queued_bytes, b.sink.queued_bytes = 600, 401  # neither reads; together over the quota
    serial = outside.call(a.unique_name, "Call", interface="com.example.S")
    err = outside.reply_to(serial)
    assert err.error_name == LIMITS_EXCEEDED and "max_container_queued_bytes=1000" in err.body()[0]
    a.clear()
    b.clear()
    outside.signal("Sig")  # broadcast: dropped for both
    outside.signal("Sig", destination=b.unique_name)  # unicast signal: dropped
    assert not [m for m in a.received() + b.received() if m.member == "Sig"]
    # an uncontained receiver still gets it
    other = connect(bus)
    other.bus_ok("AddMatch", "s", ("member='Sig'",))
    outside.signal("Sig")
    assert [m.member for m in other.received()] == ["Sig"]
    # below the quota again: delivered
    b.sink.queued_bytes = 0
    serial = outside.call(a.unique_name, "Call", interface="com.example.S")
    assert [m.member for m in a.received()] == ["Call"]


def test_queued_fds_are_counted_over_the_whole_instance():
    bus, inst, outside = _bus_and_instance(False, max_container_unix_fds=4)
    a, b = ContainedClient(bus, inst), ContainedClient(bus, inst)
    a.sink.queued_fds, b.sink.queued_fds = 2, 1
    serial = outside.call(a.unique_name, "TakeFds", interface="com.example.S", fds=(10, 11))
    err = outside.reply_to(serial)
    assert err.error_name == LIMITS_EXCEEDED and "max_container_unix_fds=4" in err.body()[0]
    outside.call(a.unique_name, "TakeFd", interface="com.example.S", fds=(10,))
    assert [m.member for m in a.received()] == ["TakeFd"]
