"""Real clients talking to each other through the bus: method calls and
errors between dbus-send, gdbus, busctl, dbus-python, jeepney and dbus-fast;
reply tracking; message ordering."""

import asyncio
import textwrap

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call, new_method_return

from itutil import (
    DRIVER,
    TIMEOUT,
    Client,
    DBusErrorReply,
    describe,
    echo_service,
    error_name,
    run,
    run_dbus_python,
)

SVC = "com.example.Echo"
PATH = "/Test"
IFACE = "com.example.Test"
ERR = "org.freedesktop.DBus.Error."


@pytest.fixture
def service(bus):
    s = echo_service(bus.address, SVC)
    yield s
    s.stop()
    assert not s.errors, s.errors


# -- ping-pong with every client ---------------------------------------------------


def test_dbus_send_calls_service(bus, service):
    out = run(["dbus-send", "--session", "--print-reply", f"--dest={SVC}", PATH,
               f"{IFACE}.Echo", "string:hello"], bus).stdout
    assert 'string "hello"' in out
    out = run(["dbus-send", "--session", "--print-reply=literal", f"--dest={SVC}", PATH,
               f"{IFACE}.Add", "int32:2", "int32:40"], bus).stdout
    assert "int32 42" in out


def test_dbus_send_gets_service_error(bus, service):
    cp = run(["dbus-send", "--session", "--print-reply", f"--dest={SVC}", PATH,
              f"{IFACE}.Fail"], bus, check=False)
    assert cp.returncode != 0
    assert "Error com.example.Error.Failed: it broke" in cp.stderr


def test_dbus_send_unknown_method_on_service(bus, service):
    cp = run(["dbus-send", "--session", "--print-reply", f"--dest={SVC}", PATH,
              f"{IFACE}.Nope"], bus, check=False)
    assert cp.returncode != 0
    assert "org.freedesktop.DBus.Error.UnknownMethod" in cp.stderr


def test_dbus_send_by_unique_name(bus, service):
    out = run(["dbus-send", "--session", "--print-reply", f"--dest={service.unique_name}",
               PATH, f"{IFACE}.Echo", "string:u"], bus).stdout
    assert 'string "u"' in out


def test_gdbus_calls_service(bus, service):
    out = run(["gdbus", "call", "--session", "--dest", SVC, "--object-path", PATH,
               "--method", f"{IFACE}.Echo", "hi there"], bus).stdout
    assert out.strip() == "('hi there',)"


def test_gdbus_gets_service_error(bus, service):
    cp = run(["gdbus", "call", "--session", "--dest", SVC, "--object-path", PATH,
              "--method", f"{IFACE}.Fail"], bus, check=False)
    assert cp.returncode != 0
    assert "GDBus.Error:com.example.Error.Failed: it broke" in cp.stderr


def test_busctl_calls_service(bus, service):
    out = run(["busctl", f"--address={bus.address}", "call", SVC, PATH, IFACE, "Echo",
               "s", "from busctl"], bus).stdout
    assert out.strip() == 's "from busctl"'
    out = run(["busctl", f"--address={bus.address}", "call", SVC, PATH, IFACE, "Add",
               "ii", "1", "2"], bus).stdout
    assert out.strip() == "i 3"


def test_busctl_gets_service_error(bus, service):
    cp = run(["busctl", f"--address={bus.address}", "call", SVC, PATH, IFACE, "Fail"],
             bus, check=False)
    assert cp.returncode != 0
    assert "it broke" in cp.stderr


def test_dbus_python_calls_service(bus, service):
    code = textwrap.dedent(f"""
        obj = conn.get_object({SVC!r}, {PATH!r})
        print(obj.Echo("py", dbus_interface={IFACE!r}))
        try:
            obj.Fail(dbus_interface={IFACE!r})
        except dbus.exceptions.DBusException as e:
            print(e.get_dbus_name())
            print(e.get_dbus_message())
    """)
    out = run_dbus_python(bus, code).stdout.splitlines()
    assert out == ["py", "com.example.Error.Failed", "it broke"]
    senders = {c[0] for c in service.calls}
    assert len(senders) == 1 and senders.pop().startswith(":1.")


def test_jeepney_calls_service(bus, service):
    with Client(bus.address) as c:
        assert c.call(SVC, PATH, IFACE, "Echo", "s", ("j",)) == ("j",)
        with pytest.raises(DBusErrorReply) as ei:
            c.call(SVC, PATH, IFACE, "Fail")
        assert ei.value.name == "com.example.Error.Failed"
        assert ei.value.text == "it broke"
        # the error's sender is the service's unique name
        assert ei.value.msg.header.fields[HeaderFields.sender] == service.unique_name
    # the service saw the caller's unique name as sender
    assert service.calls[0][0] == c.unique_name


def test_dbus_fast_client_and_service(bus, service):
    from dbus_fast import Message, MessageType as FMT
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import DBusError
    from dbus_fast.service import ServiceInterface, method

    class Fast(ServiceInterface):
        def __init__(self):
            super().__init__("com.example.Fast")

        @method()
        def Twice(self, s: "s") -> "s":  # noqa: F821
            return s * 2

        @method()
        def Boom(self):
            raise DBusError("com.example.Error.Boom", "kaboom")

    async def main():
        fbus = await MessageBus(bus_address=bus.address).connect()
        try:
            fbus.export("/Fast", Fast())
            await fbus.request_name("com.example.FastSvc")
            # dbus-fast calls the jeepney service
            r = await fbus.call(Message(destination=SVC, path=PATH, interface=IFACE,
                                        member="Echo", signature="s", body=["df"]))
            assert r.message_type == FMT.METHOD_RETURN and r.body == ["df"], r.body
            r = await fbus.call(Message(destination=SVC, path=PATH, interface=IFACE,
                                        member="Fail"))
            assert r.message_type == FMT.ERROR and r.error_name == "com.example.Error.Failed"
            # external tools call the dbus-fast service
            loop = asyncio.get_running_loop()
            cp = await loop.run_in_executor(None, lambda: run(
                ["dbus-send", "--session", "--print-reply", "--dest=com.example.FastSvc",
                 "/Fast", "com.example.Fast.Twice", "string:ab"], bus))
            assert 'string "abab"' in cp.stdout
            cp = await loop.run_in_executor(None, lambda: run(
                ["gdbus", "call", "--session", "--dest", "com.example.FastSvc",
                 "--object-path", "/Fast", "--method", "com.example.Fast.Boom"],
                bus, check=False))
            assert "com.example.Error.Boom: kaboom" in cp.stderr
            cp = await loop.run_in_executor(None, lambda: run(
                ["busctl", f"--address={bus.address}", "call", "com.example.FastSvc",
                 "/Fast", "com.example.Fast", "Twice", "s", "xy"], bus))
            assert cp.stdout.strip() == 's "xyxy"'
        finally:
            fbus.disconnect()

    asyncio.run(asyncio.wait_for(main(), TIMEOUT * 2))


def test_call_self(bus):
    with Client(bus.address) as c:
        s = c.send(new_method_call(DBusAddress("/", bus_name=c.unique_name,
                                               interface="com.example.Self"), "Hi"))
        m = c.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        assert m.header.fields[HeaderFields.sender] == c.unique_name
        c.send(new_method_return(m, "s", ("me",)))
        r = c.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert r.body == ("me",)


def test_sender_field_is_set_by_bus(bus):
    """A forged SENDER header field is overwritten with the real unique name."""
    with Client(bus.address) as a, Client(bus.address) as b:
        msg = new_method_call(DBusAddress("/", bus_name=b.unique_name,
                                          interface="com.example.X"), "Y")
        msg.header.fields[HeaderFields.sender] = "com.example.Forged"
        a.send(msg)
        m = b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        assert m.header.fields[HeaderFields.sender] == a.unique_name


# -- reply tracking ----------------------------------------------------------------


def _call(a, dest, flags=0):
    msg = new_method_call(DBusAddress("/", bus_name=dest, interface="com.example.X"), "Y")
    msg.header.flags |= flags
    return a.send(msg)


def test_callee_disconnect_gives_no_reply(bus):
    with Client(bus.address) as a:
        b = Client(bus.address)
        s = _call(a, b.unique_name)
        b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        b.close()
        r = a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert r.header.message_type == MessageType.error
        assert error_name(r) == ERR + "NoReply", describe(r)
        assert r.header.fields[HeaderFields.sender] == "org.freedesktop.DBus"
        assert r.header.fields[HeaderFields.destination] == a.unique_name


def test_callee_disconnect_no_reply_for_well_known_name(bus):
    with Client(bus.address) as a:
        svc = echo_service(bus.address, "com.example.Dies")
        svc.handlers["Hang"] = lambda m: None  # never replies
        s = _call(a, "com.example.Dies")  # member Y: unknown -> replies error
        a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        msg = new_method_call(DBusAddress("/", bus_name="com.example.Dies",
                                          interface="com.example.X"), "Hang")
        s = a.send(msg)
        # wait until the service has seen the call, then kill it
        from itutil import wait_until
        wait_until(lambda: any(c[1] == "Hang" for c in svc.calls), what="Hang call")
        svc.stop()
        r = a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert error_name(r) == ERR + "NoReply", describe(r)


def test_no_reply_error_not_sent_for_no_reply_expected(bus):
    with Client(bus.address) as a:
        b = Client(bus.address)
        a.add_match("type='signal',sender='org.freedesktop.DBus',"
                    f"member='NameOwnerChanged',arg0='{b.unique_name}'")
        s = _call(a, b.unique_name, flags=1)
        b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        b.close()
        # once the bus has processed the disconnect, no NoReply may follow
        a.wait_for(lambda m: m.header.message_type == MessageType.signal
                   and m.body == (b.unique_name, b.unique_name, ""))
        a.assert_no(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)


def test_session_policy_delivers_unrequested_replies(bus):
    """With the stock session policy (<allow send_destination="*"/>)
    dbus-daemon forwards a reply nobody asked for, and a second reply."""
    with Client(bus.address) as a, Client(bus.address) as b:
        a.drain()
        b.drain()
        fake = new_method_call(DBusAddress("/", bus_name=b.unique_name, interface="x.y"), "Z")
        fake.header.serial = 4242
        ret = new_method_return(fake, "s", ("unsolicited",))
        ret.header.fields[HeaderFields.destination] = b.unique_name
        a.send(ret)
        m = b.wait_for(lambda m: m.header.message_type == MessageType.method_return)
        assert m.body == ("unsolicited",)
        assert m.header.fields[HeaderFields.reply_serial] == 4242
        a.assert_no(lambda m: m.header.message_type == MessageType.error)


REQUESTED_REPLY_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
  </policy>
  <limit name="reply_timeout">300</limit>
</busconfig>
"""


@pytest.fixture
def strict_bus(bus_factory):
    return bus_factory(full_xml=REQUESTED_REPLY_POLICY)


def test_unrequested_reply_rejected_by_policy(strict_bus):
    with Client(strict_bus.address) as a, Client(strict_bus.address) as b:
        fake = new_method_call(DBusAddress("/", bus_name=b.unique_name, interface="x.y"), "Z")
        fake.header.serial = 4242
        ret = new_method_return(fake)
        ret.header.fields[HeaderFields.destination] = b.unique_name
        a.send(ret)
        err = a.wait_for(lambda m: m.header.message_type == MessageType.error)
        assert error_name(err) == ERR + "AccessDenied", describe(err)
        b.assert_no(lambda m: m.header.message_type == MessageType.method_return)


def test_second_reply_rejected_by_policy(strict_bus):
    with Client(strict_bus.address) as a, Client(strict_bus.address) as b:
        s = _call(a, b.unique_name)
        m = b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        b.send(new_method_return(m, "s", ("one",)))
        b.send(new_method_return(m, "s", ("two",)))
        err = b.wait_for(lambda m: m.header.message_type == MessageType.error)
        assert error_name(err) == ERR + "AccessDenied"
        r = a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert r.body == ("one",)
        a.assert_no(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)


def test_reply_timeout_gives_no_reply(strict_bus):
    with Client(strict_bus.address) as a, Client(strict_bus.address) as b:
        s = _call(a, b.unique_name)
        m = b.wait_for(lambda m: m.header.message_type == MessageType.method_call)
        r = a.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == s)
        assert error_name(r) == ERR + "NoReply", describe(r)
        # the late reply is now unrequested and rejected
        b.send(new_method_return(m))
        err = b.wait_for(lambda m: m.header.message_type == MessageType.error)
        assert error_name(err) == ERR + "AccessDenied"
        a.assert_no(lambda m: m.header.message_type == MessageType.method_return)


# -- ordering ------------------------------------------------------------------------


def _call_arguments(client, n):
    """The first argument of the next n method calls client receives."""
    got = []
    while len(got) < n:
        m = client.receive()
        if m.header.message_type == MessageType.method_call:
            got.append(m.body[0])
    return got


def test_unicast_order_preserved(bus):
    n = 500
    with Client(bus.address) as a, Client(bus.address) as b:
        b.drain()
        for i in range(n):
            msg = new_method_call(DBusAddress("/", bus_name=b.unique_name,
                                              interface="com.example.Seq"), "N", "u", (i,))
            msg.header.flags |= 1
            a.send(msg)
        assert _call_arguments(b, n) == list(range(n))


def test_broadcast_order_preserved_across_receivers(bus):
    from jeepney import new_signal
    n = 300
    with Client(bus.address) as a, Client(bus.address) as b, Client(bus.address) as c:
        for r in (b, c):
            r.add_match("type='signal',interface='com.example.Seq'")
        for i in range(n):
            a.send(new_signal(DBusAddress("/s", interface="com.example.Seq"), "N", "u", (i,)))
        for r in (b, c):
            got = []
            while len(got) < n:
                m = r.receive()
                if m.header.message_type == MessageType.signal and m.header.fields.get(
                        HeaderFields.interface) == "com.example.Seq":
                    got.append(m.body[0])
            assert got == list(range(n))


def test_dbus_python_ordering_through_service(bus, service):
    code = textwrap.dedent(f"""
        obj = conn.get_object({SVC!r}, {PATH!r})
        for i in range(100):
            obj.Echo(str(i), dbus_interface={IFACE!r}, ignore_reply=True)
        print(obj.Echo("last", dbus_interface={IFACE!r}))
    """)
    assert run_dbus_python(bus, code).stdout.strip() == "last"
    echoed = [c[2][0] for c in service.calls if c[1] == "Echo"]
    assert echoed == [str(i) for i in range(100)] + ["last"]


def test_many_messages_in_one_write_keep_their_order(bus):
    """A read holding far more messages than the bus routes before writing
    (it writes out every few dozen): calls to a peer and to the driver,
    interleaved in one write, all arrive, each stream in order."""
    n = 300
    with Client(bus.address) as a, Client(bus.address) as b:
        b.drain()
        target = DBusAddress("/", bus_name=b.unique_name, interface="com.example.Seq")
        blob = []
        serials = []
        for i in range(n):
            call = new_method_call(target, "N", "u", (i,))
            call.header.flags |= 1  # no reply expected
            blob.append(call.serialise(serial=a.next_serial()))
            serial = a.next_serial()
            serials.append(serial)
            blob.append(new_method_call(DRIVER, "GetId").serialise(serial=serial))
        a.conn.sock.sendall(b"".join(blob))
        replies = []
        while len(replies) < n:
            m = a.receive()
            if m.header.message_type == MessageType.method_return:
                replies.append(m.header.fields[HeaderFields.reply_serial])
        assert replies == serials
        assert _call_arguments(b, n) == list(range(n))
