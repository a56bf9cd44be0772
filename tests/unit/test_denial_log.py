"""What `sandbus status` reads as "denials in the last minute": every
refusal by a mediator (core/mediation.py), counted per sender, reported by
Debug.Stats (GetStats, GetConnectionStats), forgotten after a minute."""

from containerhelpers import ContainerBus
from corehelpers import ERR
from sandbus.core.mediation import DENIAL_LOG_SIZE, DenialLog

POLICY = """<busconfig>
  <type>session</type>
  <policy context="default">
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
    <allow own="*"/>
    <deny send_destination="com.example.Svc" send_interface="com.example.I" send_member="Forbidden"/>
  </policy>
</busconfig>"""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def stats(client, member="GetStats", sig="", body=()):
    (values,) = client.bus_ok(member, sig, body, interface="org.freedesktop.DBus.Debug.Stats")
    return {k: v.value for k, v in values.items()}


def make(clock):
    cb = ContainerBus(POLICY)
    cb.bus.mediation.denials.clock = clock
    return cb


def test_refusals_are_counted_per_sender_for_a_minute():
    clock = Clock()
    cb = make(clock)
    svc = cb.client()
    svc.bus_ok("RequestName", "su", ("com.example.Svc", 4))
    bad, good = cb.client(), cb.client()
    for _ in range(3):
        s = bad.call("com.example.Svc", "Forbidden", interface="com.example.I")
        assert bad.reply_to(s).error_name == ERR + "AccessDenied"
    good.call("com.example.Svc", "Allowed", interface="com.example.I")
    st = stats(good)
    assert (st["Denials"], st["DenialsLastMinute"]) == (3, 3)
    assert stats(good, "GetConnectionStats", "s", (bad.unique_name,))["DenialsLastMinute"] == 3
    assert stats(good, "GetConnectionStats", "s", (good.unique_name,))["DenialsLastMinute"] == 0
    clock.now += 61
    st = stats(good)
    assert (st["Denials"], st["DenialsLastMinute"]) == (3, 0)
    assert stats(good, "GetConnectionStats", "s", (bad.unique_name,))["DenialsLastMinute"] == 0


def test_log_is_bounded_and_clockless_keeps_the_total():
    class Peer:
        unique_name = ":1.5"
    clock = Clock()
    log = DenialLog(clock)
    for _ in range(DENIAL_LOG_SIZE + 10):
        log.record(Peer)
    assert log.total == DENIAL_LOG_SIZE + 10
    assert log.count() == DENIAL_LOG_SIZE == log.count(":1.5")
    plain = DenialLog()
    plain.record(Peer)
    assert (plain.total, plain.count()) == (1, 0)
