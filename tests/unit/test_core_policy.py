"""The XML policy (core/policy.py) on the bus's own messages, without
sockets: the receiver's receive rules decide them too, and a refused one
reaches no one but monitors, followed by the AccessDenied the bus gives
itself (dbus's /monitor/forbidden-reply; tests/integration/test_monitor.py
checks it live)."""

from containerhelpers import OPEN_POLICY, ContainerBus
from corehelpers import BUS_NAME, ERR, connect
from sandbus.wire.message import ERROR, METHOD_RETURN, SIGNAL

NO_NAME_ACQUIRED = OPEN_POLICY.replace(
    "</busconfig>",
    '<policy context="default"><deny receive_interface="org.freedesktop.DBus" '
    'receive_member="NameAcquired"/></policy></busconfig>')
NO_REPLIES = OPEN_POLICY.replace(
    "</busconfig>", '<policy context="default"><deny receive_type="method_return" receive_requested_reply="true"/></policy></busconfig>')


def _monitor(bus):
    mon = connect(bus)
    mon.bus_ok("BecomeMonitor", "asu", ([], 0), interface="org.freedesktop.DBus.Monitoring")
    mon.clear()
    return mon


def test_a_refused_name_acquired_is_not_delivered_and_monitors_see_why():
    bus = ContainerBus(NO_NAME_ACQUIRED).bus
    c = connect(bus)
    mon = _monitor(bus)
    assert c.bus_ok("RequestName", "su", ("com.example.N", 4)) == [1]
    assert [m.member for m in c.received() if m.type == SIGNAL] == []
    seen = mon.received()
    i = next(i for i, m in enumerate(seen) if m.member == "NameAcquired")
    err = seen[i + 1]
    assert (err.type, err.error_name, err.sender, err.destination) == (ERROR, ERR + "AccessDenied", BUS_NAME, BUS_NAME)
    assert err.reply_serial == seen[i].serial
    # the reply itself was allowed, and comes after
    assert [m.type for m in seen[i + 2:]] == [METHOD_RETURN]


def test_a_receiver_that_refuses_replies_gets_none_from_the_bus():
    bus = ContainerBus(NO_REPLIES).bus
    c = connect(bus, hello=False)
    c.driver("Hello")
    # a deny rule applies to requested replies only with
    # receive_requested_reply="true" (as dbus-daemon's bus/policy.c)
    assert [m.type for m in c.received()] == [SIGNAL]
    assert c.peer.unique_name is not None


def test_an_open_policy_delivers_the_bus_messages():
    bus = ContainerBus().bus
    c = connect(bus)
    assert c.bus_ok("RequestName", "su", ("com.example.N", 4)) == [1]
    assert [(m.member, m.body()) for m in c.received()] == [("NameAcquired", ["com.example.N"])]


EAVESDROP_RULES = OPEN_POLICY.replace(
    "</busconfig>",
    '<policy user="1000"><deny receive_interface="com.example.Secret" eavesdrop="true"/></policy></busconfig>')


def test_an_eavesdroppers_own_rules_decide_what_it_sees():
    """The eavesdropper's receive rules apply, not those of the peer the
    message is for: uid 1000 may not eavesdrop on com.example.Secret, even
    on traffic between peers whose own rules restrict nothing."""
    bus = ContainerBus(EAVESDROP_RULES).bus
    bus.settings.bus_uid = 1000  # only the bus's uid and root may eavesdrop at all
    a, b = connect(bus, uid=0), connect(bus, uid=0)
    spy, root_spy = connect(bus, uid=1000), connect(bus, uid=0)
    for e in (spy, root_spy):
        e.bus_ok("AddMatch", "s", ("eavesdrop=true,type=signal",))
        e.clear()
    for iface in ("com.example.Secret", "com.example.Open"):
        a.send(SIGNAL, path="/x", interface=iface, member="S", destination=b.unique_name)
    assert [m.interface for m in b.received()] == ["com.example.Secret", "com.example.Open"]
    assert [m.interface for m in spy.received()] == ["com.example.Open"]
    assert [m.interface for m in root_spy.received()] == ["com.example.Secret", "com.example.Open"]
