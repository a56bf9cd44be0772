"""Monitors: BecomeMonitor, dbus-monitor, busctl monitor, gdbus monitor."""

import pytest
from jeepney import DBusAddress, HeaderFields, new_method_call, new_signal

from itutil import (
    BUS_NAME,
    BUS_PATH,
    Background,
    Client,
    assert_bus_alive,
    describe,
    echo_service,
    is_closed,
    is_signal,
    run,
    wait_until,
)

SVC = "com.example.Echo"
MON = "org.freedesktop.DBus.Monitoring"


@pytest.fixture
def service(bus):
    s = echo_service(bus.address, SVC)
    yield s
    s.stop()


def _traffic(bus):
    run(["dbus-send", "--session", "--print-reply", f"--dest={SVC}", "/Test",
         "com.example.Test.Echo", "string:MARK-CALL"], bus)
    run(["dbus-send", "--session", "--type=signal", "/Test", "com.example.Test.Sig",
         "string:MARK-SIGNAL"], bus)


def test_dbus_monitor_sees_calls_replies_and_signals(bus, service):
    with Background(["dbus-monitor", "--address", bus.address], bus) as mon:
        # dbus-monitor is ready once its unique name was taken away (NameLost)
        mon.wait_for_text("member=NameLost")
        _traffic(bus)
        text = mon.wait_for_text('string "MARK-SIGNAL"')
    assert f"destination={SVC} serial=" in text
    assert "path=/Test; interface=com.example.Test; member=Echo" in text
    assert 'string "MARK-CALL"' in text
    assert f"method return time=" in text
    assert f"sender={service.unique_name} -> destination=" in text
    assert "member=Sig" in text


def test_dbus_monitor_with_match_filter(bus, service):
    with Background(["dbus-monitor", "--address", bus.address,
                     "type='signal',interface='com.example.Test'"], bus) as mon:
        mon.wait_for_text("member=NameLost")
        _traffic(bus)
        text = mon.wait_for_text('string "MARK-SIGNAL"')
    assert "MARK-CALL" not in text
    assert "member=Echo" not in text


def test_busctl_monitor(bus, service):
    with Background(["busctl", f"--address={bus.address}", "monitor", "--no-pager"],
                    bus) as mon:
        mon.wait_for_text("Monitoring bus message stream.")
        _traffic(bus)
        text = mon.wait_for_text('STRING "MARK-SIGNAL";')
    assert "Member=Echo" in text
    assert 'STRING "MARK-CALL";' in text
    assert "Type=method_return" in text
    assert "Interface=com.example.Test  Member=Sig" in text


def test_gdbus_monitor_signals_of_name(bus, service):
    with Background(["gdbus", "monitor", "--session", "--dest", SVC], bus) as mon:
        mon.wait_for_text(f"is owned by {service.unique_name}")
        # gdbus adds its match rule only after printing the owner, so keep
        # emitting until the signal shows up
        def emitted():
            service.client.send(new_signal(DBusAddress("/Test", interface="com.example.Test"),
                                           "Changed", "s", ("MARK-GDBUS",)))
            try:
                mon.wait_for_text("MARK-GDBUS", timeout=0.1)
                return True
            except AssertionError:
                return False
        wait_until(emitted, what="gdbus monitor to show the signal")
        text = mon.text
    assert "/Test: com.example.Test.Changed ('MARK-GDBUS',)" in text


def test_become_monitor_jeepney(bus):
    with Client(bus.address) as w:
        w.add_match(f"type='signal',sender='{BUS_NAME}',member='NameOwnerChanged'")
        mon = Client(bus.address)
        mon_name = mon.unique_name
        w.wait_signal("NameOwnerChanged", body0=mon_name)
        assert mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", ([], 0)) == ()
        # the monitor loses its unique name
        mon.wait_signal("NameLost", sender=BUS_NAME, body0=mon_name)
        m = w.wait_signal("NameOwnerChanged", body0=mon_name)
        assert m.body == (mon_name, mon_name, "")
        assert mon_name not in w.bus("ListNames")[0]
        with Client(bus.address) as a, Client(bus.address) as b:
            a.send(new_method_call(DBusAddress("/m", bus_name=b.unique_name,
                                               interface="com.example.M"), "Watched"))
            got = mon.wait_for(lambda m: m.header.fields.get(HeaderFields.member) == "Watched")
            assert got.header.fields[HeaderFields.sender] == a.unique_name
            assert got.header.fields[HeaderFields.destination] == b.unique_name
            # the real recipient still gets it
            b.wait_for(lambda m: m.header.fields.get(HeaderFields.member) == "Watched")
        mon.close()
    assert_bus_alive(bus)


def test_become_monitor_with_rules(bus):
    mon = Client(bus.address)
    mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu",
             (["type='signal',interface='com.example.Wanted'"], 0))
    with Client(bus.address) as a:
        a.send(new_signal(DBusAddress("/x", interface="com.example.Unwanted"), "U"))
        a.send(new_signal(DBusAddress("/x", interface="com.example.Wanted"), "W"))
        m = mon.wait_for(lambda m: m.header.fields.get(HeaderFields.interface, "").startswith("com.example"))
        assert m.header.fields[HeaderFields.member] == "W", describe(m)
    mon.close()


def test_monitor_that_sends_is_disconnected(bus):
    mon = Client(bus.address)
    mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", ([], 0))
    mon.send(new_method_call(DBusAddress(BUS_PATH, bus_name=BUS_NAME, interface="org.freedesktop.DBus"), "GetId"))
    assert is_closed(mon.conn.sock)
    mon.close()
    assert_bus_alive(bus)


def test_become_monitor_invalid_rule(bus):
    with Client(bus.address) as c:
        e = c.bus_error("BecomeMonitor", "asu", ["type='bogus'"], 0, iface=MON)
        assert e.name == "org.freedesktop.DBus.Error.MatchRuleInvalid"
        e = c.bus_error("BecomeMonitor", "asu", [], 1, iface=MON)
        assert e.name == "org.freedesktop.DBus.Error.InvalidArgs"
        # still a normal connection afterwards
        assert c.bus("GetId")


def test_new_monitor_sees_no_copy_of_its_own_name_change(bus):
    """dbus-daemon releases the names before the connection becomes a
    monitor: the monitor gets its NameLost, but no monitored copy of the
    NameOwnerChanged that its BecomeMonitor caused (dbus's /monitor/become)."""
    mon = Client(bus.address)
    mon_name = mon.unique_name
    mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", ([], 0))
    with Client(bus.address) as a:
        a.send(new_signal(DBusAddress("/x", interface="com.example.Mark"), "Mark"))
        seen = []
        mon.wait_for(lambda m: seen.append(m) or m.header.fields.get(HeaderFields.member) == "Mark")
    lost = [m for m in seen if m.header.fields.get(HeaderFields.member) == "NameLost"]
    assert [m.body for m in lost] == [(mon_name,)], [describe(m) for m in seen]
    own = [describe(m) for m in seen if m.header.fields.get(HeaderFields.member) == "NameOwnerChanged"
           and m.body[0] == mon_name]
    assert own == []
    mon.close()


FORBID = '<policy context="default"><deny send_interface="com.example.CannotSend"/></policy>'


def test_monitor_sees_refused_messages_and_the_errors(bus_factory):
    """dbus-daemon shows monitors a message its policy refuses, then the
    AccessDenied it sends back, also for a unicast signal (dbus's
    /monitor/forbidden and /monitor/forbidden-method)."""
    b = bus_factory(extra_xml=FORBID)
    mon = Client(b.address)
    mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", ([], 0))
    with Client(b.address) as a, Client(b.address) as r:
        sig = new_signal(DBusAddress("/foo", interface="com.example.CannotSend"), "Sig")
        sig.header.fields[HeaderFields.destination] = r.unique_name
        s1 = a.send(sig)
        s2 = a.send(new_method_call(DBusAddress("/foo", bus_name=r.unique_name,
                                                interface="com.example.CannotSend"), "Call"))
        mark = new_signal(DBusAddress("/foo", interface="com.example.Fine"), "Mark")
        mark.header.fields[HeaderFields.destination] = r.unique_name
        a.send(mark)
        seen = []
        mon.wait_for(lambda m: seen.append(m) or m.header.fields.get(HeaderFields.member) == "Mark")
        ours = [m for m in seen if m.header.fields.get(HeaderFields.path) == "/foo"
                or m.header.fields.get(HeaderFields.reply_serial) in (s1, s2)
                and m.header.fields.get(HeaderFields.destination) == a.unique_name]
        summary = [(m.header.fields.get(HeaderFields.member) or m.header.fields.get(HeaderFields.error_name),
                    m.header.fields.get(HeaderFields.reply_serial)) for m in ours]
        assert summary == [("Sig", None), ("org.freedesktop.DBus.Error.AccessDenied", s1),
                           ("Call", None), ("org.freedesktop.DBus.Error.AccessDenied", s2),
                           ("Mark", None)], [describe(m) for m in ours]
        # the sender gets both errors, the intended recipient only the mark
        errs = []
        a.wait_for(lambda m: errs.append(m) or m.header.fields.get(HeaderFields.reply_serial) == s2)
        assert s1 in [m.header.fields.get(HeaderFields.reply_serial) for m in errs]
        got = r.wait_for(lambda m: m.header.fields.get(HeaderFields.interface, "").startswith("com.example"))
        assert got.header.fields[HeaderFields.member] == "Mark"
    mon.close()


def test_monitor_rule_with_well_known_destination(bus):
    """A monitor's destination='WELL.KNOWN' rule matches messages to the
    connection that owns the name, also those addressed to its unique name
    (dbus's /monitor/well-known-destination)."""
    with Client(bus.address) as owner, Client(bus.address) as a:
        assert owner.bus("RequestName", "su", "com.example.WK", 4) == (1,)
        mon = Client(bus.address)
        mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", (["destination='com.example.WK'"], 0))
        for dest in (owner.unique_name, "com.example.WK"):
            m = new_signal(DBusAddress("/x", interface="com.example.Mark"), "To" + dest.replace(".", "_").lstrip(":"))
            m.header.fields[HeaderFields.destination] = dest
            a.send(m)
        seen = []
        mon.wait_for(lambda m: seen.append(m) or m.header.fields.get(HeaderFields.member) == "Tocom_example_WK")
        members = [m.header.fields.get(HeaderFields.member) for m in seen]
        assert "To" + owner.unique_name.replace(".", "_").lstrip(":") in members, members
        mon.close()


def _summary(m):
    f = m.header.fields
    return (m.header.message_type.name, f.get(HeaderFields.member) or f.get(HeaderFields.error_name),
            f.get(HeaderFields.sender), f.get(HeaderFields.destination), m.body)


def test_monitor_sees_a_client_come_and_go(bus):
    """Around a client's life a monitor sees its Hello (under the name it
    gets), the reply, NameOwnerChanged, NameAcquired; when it disconnects,
    for each name, the one taken last first and its unique name last, the
    NameLost the bus addresses to it before the NameOwnerChanged."""
    mon = Client(bus.address)
    mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", ([], 0))
    c = Client(bus.address)
    me = c.unique_name
    assert c.bus("RequestName", "su", "com.example.First", 4) == (1,)
    assert c.bus("RequestName", "su", "com.example.Second", 4) == (1,)
    c.close()
    seen = []
    mon.wait_for(lambda m: seen.append(m) or (m.header.fields.get(HeaderFields.member) == "NameOwnerChanged"
                                              and m.body == (me, me, "")))
    ours = [_summary(m) for m in seen
            if me in (m.header.fields.get(HeaderFields.sender), m.header.fields.get(HeaderFields.destination))
            or m.body and m.body[0] in (me, "com.example.First", "com.example.Second")]
    calls = []
    for name in ("com.example.First", "com.example.Second"):
        calls += [("method_call", "RequestName", me, BUS_NAME, (name, 4)),
                  ("signal", "NameOwnerChanged", BUS_NAME, None, (name, "", me)),
                  ("signal", "NameAcquired", BUS_NAME, me, (name,)),
                  ("method_return", None, BUS_NAME, me, (1,))]
    assert ours == [
        ("method_call", "Hello", me, BUS_NAME, ()),
        ("method_return", None, BUS_NAME, me, (me,)),
        ("signal", "NameOwnerChanged", BUS_NAME, None, (me, "", me)),
        ("signal", "NameAcquired", BUS_NAME, me, (me,)),
        *calls,
        ("signal", "NameLost", BUS_NAME, me, ("com.example.Second",)),
        ("signal", "NameOwnerChanged", BUS_NAME, None, ("com.example.Second", me, "")),
        ("signal", "NameLost", BUS_NAME, me, ("com.example.First",)),
        ("signal", "NameOwnerChanged", BUS_NAME, None, ("com.example.First", me, "")),
        ("signal", "NameLost", BUS_NAME, me, (me,)),
        ("signal", "NameOwnerChanged", BUS_NAME, None, (me, me, "")),
    ], ours
    mon.close()


def test_monitor_sees_the_bus_refuse_its_own_message(bus_factory):
    """The bus's own messages meet the receiver's receive rules too: a
    NameAcquired the policy forbids is not delivered, and monitors see it
    followed by an AccessDenied from the bus to itself (dbus's
    /monitor/forbidden-reply)."""
    b = bus_factory(extra_xml='<policy context="default"><deny receive_interface="org.freedesktop.DBus" '
                              'receive_member="NameAcquired"/></policy>')
    mon = Client(b.address)
    mon.call(BUS_NAME, BUS_PATH, MON, "BecomeMonitor", "asu", ([], 0))
    with Client(b.address) as c:
        assert c.bus("RequestName", "su", "com.example.Sender", 4) == (1,)
        seen = []
        mon.wait_for(lambda m: seen.append(m) or (m.header.message_type.name == "method_return"
                                                  and m.header.fields.get(HeaderFields.destination) == c.unique_name
                                                  and m.body == (1,)))
        i = next(i for i, m in enumerate(seen) if m.header.fields.get(HeaderFields.member) == "NameAcquired"
                 and m.body == ("com.example.Sender",))
        acquired, error = seen[i], seen[i + 1]
        assert _summary(error)[:4] == ("error", "org.freedesktop.DBus.Error.AccessDenied", BUS_NAME, BUS_NAME)
        assert error.header.fields[HeaderFields.reply_serial] == acquired.header.serial
        c.assert_no(lambda m: is_signal(m, "NameAcquired"))
    mon.close()
