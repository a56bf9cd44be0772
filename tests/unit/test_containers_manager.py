"""Container instances' lifetime through Bus.receive, without sockets
(containerhelpers.py fakes io/container_sockets.py): notification pipes,
MaxConnections, StopListening / StopInstance, InstanceRemoved, and socket
creation failures (tests/integration/test_containers.py has the same with
real sockets)."""

import pytest

from containerhelpers import CIFACE, make_container_bus
from corehelpers import ERR, METHOD_RETURN
from sandbus.wire.marshal import Variant

READY_FD, STOP_FD = 40, 41


@pytest.fixture
def cb():
    return make_container_bus(max_connections_per_container=3)


def removed(watcher):
    return [m.body()[0] for m in watcher.signals("InstanceRemoved")]


def watch_removed(cb):
    w = cb.client()
    w.bus_ok("AddMatch", "s", (f"type='signal',interface='{CIFACE}',member='InstanceRemoved'",))
    return w


def add_with_pipes(cb, creator):
    serial = creator.send(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface=CIFACE,
                          member="AddServer", signature="ssa{sv}a{sv}", fds=(READY_FD, STOP_FD),
                          body=("com.example.App", "", {}, {"ReadyNotification": Variant("h", 0),
                                                            "StopOnNotify": Variant("h", 1)}))
    r = creator.reply_to(serial)
    assert r.type == METHOD_RETURN, r.body()
    return cb.manager.instances[r.body()[0]]


def test_ready_notification_then_stop_on_notify(cb):
    watcher = watch_removed(cb)
    creator = cb.client()
    inst = add_with_pipes(cb, creator)
    assert [w[0] for w in cb.sockets.watches] == [STOP_FD, READY_FD]
    assert inst.listening and not inst.listener.accepting  # not before the pipe says so
    cb.sockets.fire(READY_FD)
    assert inst.listener.accepting
    inner = cb.join(inst)
    cb.sockets.fire(STOP_FD)
    assert not inst.listening and inst.listener is None and cb.sockets.listeners[0].closed
    assert removed(watcher) == []  # a connection keeps it
    assert inner.bus_ok("GetNameOwner", "s", ("org.freedesktop.DBus",)) == ["org.freedesktop.DBus"]
    cb.bus.disconnect(inner.peer)
    assert removed(watcher) == [inst.path] and inst.path not in cb.manager.instances


def test_max_connections_counts_those_still_authenticating(cb):
    creator = cb.client()
    inst = cb.add_server(creator, MaxConnections=Variant("u", 2))
    first = cb.join(inst)
    assert inst.admit_connection()  # a second one accepted, not yet authenticated
    assert not inst.admit_connection()
    inst.connection_gone(None)  # it never authenticated
    second = cb.join(inst)
    assert not inst.admit_connection()
    cb.bus.disconnect(first.peer)
    assert inst.admit_connection()
    assert {p.unique_name for p in inst.connections} == {second.unique_name}


def test_stop_listening_and_stop_instance(cb):
    watcher = watch_removed(cb)
    creator = cb.client()
    stranger = cb.client(uid=cb.bus.settings.bus_uid + 4242)
    a = cb.add_server(creator)
    b = cb.add_server(creator)
    in_a, in_b = cb.join(a), cb.join(b)
    for member in ("StopListening", "StopInstance"):
        assert cb.ccall(stranger, member, "o", (a.path,)).error_name == ERR + "AccessDenied"
    assert cb.ccall(creator, "StopListening", "o", (a.path,)).type == METHOD_RETURN
    assert not a.listening and in_a.closed is None and removed(watcher) == []
    assert cb.ccall(creator, "StopInstance", "o", (b.path,)).type == METHOD_RETURN
    assert in_b.closed and removed(watcher) == [b.path]
    cb.bus.disconnect(in_a.peer)
    assert removed(watcher) == [a.path]
    for member in ("StopListening", "StopInstance", "GetInstanceInfo"):
        assert cb.ccall(creator, member, "o", (a.path,)).error_name == ERR + "NotContainer"


def test_creator_disconnect_stops_listening_unless_detached(cb):
    creator = cb.client()
    attached = cb.add_server(creator)
    detached = cb.add_server(creator, StopOnDisconnect=Variant("b", False))
    cb.bus.disconnect(creator.peer)
    assert not attached.listening and attached.path not in cb.manager.instances
    assert detached.listening and detached.listener.accepting


def test_socket_failures_create_nothing(cb):
    creator = cb.client()
    cb.sockets.fail_create = OSError("no room")
    r = cb.ccall(creator, "AddServer", "ssa{sv}a{sv}", ("com.example.App", "", {}, {}))
    assert r.error_name == ERR + "Failed" and "no room" in r.body()[0]
    cb.sockets.fail_adopt = ValueError("Socket must already be listening")
    serial = creator.send(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface=CIFACE,
                          member="AddServer", signature="ssa{sv}a{sv}", fds=(READY_FD,),
                          body=("com.example.App", "", {}, {"Socket": Variant("h", 0)}))
    r = creator.reply_to(serial)
    assert r.error_name == ERR + "InvalidArgs" and "listening" in r.body()[0]
    assert cb.manager.instances == {} and cb.sockets.listeners == []
    cb.sockets.fail_create = cb.sockets.fail_adopt = None
    inst = cb.add_server(creator)
    assert inst.number == 1  # failures use up no instance number


@pytest.mark.parametrize("bad", [READY_FD, STOP_FD])
def test_unwatchable_notification_fd_is_invalid_args_before_anything_is_made(cb, bad):
    # issue 11, hole 10: refused before the answer, so nothing fails after it
    cb.sockets.unwatchable.add(bad)
    creator = cb.client()
    serial = creator.send(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus", interface=CIFACE,
                          member="AddServer", signature="ssa{sv}a{sv}", fds=(READY_FD, STOP_FD),
                          body=("com.example.App", "", {}, {"ReadyNotification": Variant("h", 0),
                                                            "StopOnNotify": Variant("h", 1)}))
    r = creator.reply_to(serial)
    assert r.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert ("ReadyNotification" if bad == READY_FD else "StopOnNotify") in r.body()[0]
    assert not cb.manager.instances and not cb.sockets.listeners and not cb.sockets.watches
    assert creator.closed is None
