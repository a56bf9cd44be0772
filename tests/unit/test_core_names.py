"""Well-known names: RequestName with every flag combination, queueing,
hand-over, the order of NameLost / NameOwnerChanged / NameAcquired,
ReleaseName and ListQueuedOwners (as dbus-daemon 1.14 behaves)."""

import itertools

import pytest

from corehelpers import BUS_NAME, ERR, METHOD_RETURN, SIGNAL, connect, make_bus, sig_summary

ALLOW_REPLACEMENT, REPLACE_EXISTING, DO_NOT_QUEUE = 1, 2, 4
PRIMARY_OWNER, IN_QUEUE, EXISTS, ALREADY_OWNER = 1, 2, 3, 4
RELEASED, NON_EXISTENT, NOT_OWNER = 1, 2, 3
NAME = "com.example.Name"


@pytest.fixture
def bus():
    return make_bus()


def watcher(bus, rule=f"type='signal',member='NameOwnerChanged',arg0='{NAME}'"):
    w = connect(bus)
    w.bus_ok("AddMatch", "s", (rule,))
    w.clear()
    return w


def request(c, name=NAME, flags=0):
    return c.bus_ok("RequestName", "su", (name, flags))[0]


def release(c, name=NAME):
    return c.bus_ok("ReleaseName", "s", (name,))[0]


def queue(c, name=NAME):
    return c.bus_ok("ListQueuedOwners", "s", (name,))[0]


# -- first owner ----------------------------------------------------------------------


@pytest.mark.parametrize("flags", range(8))
def test_free_name_any_flags(bus, flags):
    w = watcher(bus)
    a = connect(bus)
    assert request(a, flags=flags) == PRIMARY_OWNER
    assert sig_summary(a.received()) == [("NameAcquired", (NAME,))]
    assert sig_summary(w.received()) == [("NameOwnerChanged", (NAME, "", a.unique_name))]
    assert queue(w) == [a.unique_name]


def test_signals_come_before_the_reply(bus):
    a = connect(bus)
    a.bus_ok("AddMatch", "s", (f"member='NameOwnerChanged',arg0='{NAME}'",))
    a.clear()
    a.driver("RequestName", "su", (NAME, 0))
    msgs = a.received()
    assert [(m.type, m.member) for m in msgs] == [
        (SIGNAL, "NameOwnerChanged"), (SIGNAL, "NameAcquired"), (METHOD_RETURN, None)]
    assert msgs[1].destination == a.unique_name and msgs[1].sender == BUS_NAME


def test_already_owner(bus):
    a = connect(bus)
    assert request(a) == PRIMARY_OWNER
    a.clear()
    for flags in range(8):
        assert request(a, flags=flags) == ALREADY_OWNER
    assert a.signals() == []


def test_already_owner_updates_flags(bus):
    a, b = connect(bus), connect(bus)
    request(a, flags=ALLOW_REPLACEMENT)
    assert request(a, flags=0) == ALREADY_OWNER
    assert request(b, flags=REPLACE_EXISTING | DO_NOT_QUEUE) == EXISTS
    assert request(a, flags=ALLOW_REPLACEMENT) == ALREADY_OWNER
    assert request(b, flags=REPLACE_EXISTING | DO_NOT_QUEUE) == PRIMARY_OWNER


# -- contention: every combination of the owner's and the requester's flags -----------------


def _expected(owner_flags, flags):
    """dbus-daemon's bus_registry_acquire_service, restated."""
    can_replace = owner_flags & ALLOW_REPLACEMENT and flags & REPLACE_EXISTING
    if flags & DO_NOT_QUEUE and not can_replace:
        return EXISTS
    if not flags & DO_NOT_QUEUE and not can_replace:
        return IN_QUEUE
    return PRIMARY_OWNER


@pytest.mark.parametrize("owner_flags,flags", list(itertools.product(range(8), range(8))))
def test_request_name_contention(bus, owner_flags, flags):
    w = watcher(bus)
    a, b = connect(bus), connect(bus)
    assert request(a, flags=owner_flags) == PRIMARY_OWNER
    a.clear()
    w.clear()
    code = request(b, flags=flags)
    assert code == _expected(owner_flags, flags)
    if code == EXISTS:
        assert queue(w) == [a.unique_name]
        assert a.signals() == [] and b.signals() == [] and w.signals() == []
    elif code == IN_QUEUE:
        assert queue(w) == [a.unique_name, b.unique_name]
        assert a.signals() == [] and b.signals() == [] and w.signals() == []
    else:
        # the old owner is queued behind the new one unless it asked not to be
        expected_queue = [b.unique_name] if owner_flags & DO_NOT_QUEUE else [b.unique_name, a.unique_name]
        assert queue(w) == expected_queue
        assert sig_summary(a.received()) == [("NameLost", (NAME,))]
        assert sig_summary(b.received()) == [("NameAcquired", (NAME,))]
        assert sig_summary(w.received()) == [("NameOwnerChanged", (NAME, a.unique_name, b.unique_name))]
        assert w.bus_ok("GetNameOwner", "s", (NAME,)) == [b.unique_name]


def test_replacement_signal_order_for_the_old_owner(bus):
    # Checked against dbus-daemon: NameLost, then NameOwnerChanged.
    a, b = connect(bus), connect(bus)
    for c in (a, b):
        c.bus_ok("AddMatch", "s", (f"member='NameOwnerChanged',arg0='{NAME}'",))
    request(a, flags=ALLOW_REPLACEMENT)
    a.clear()
    b.clear()
    b.driver("RequestName", "su", (NAME, REPLACE_EXISTING))
    assert sig_summary(a.received()) == [
        ("NameLost", (NAME,)), ("NameOwnerChanged", (NAME, a.unique_name, b.unique_name))]
    msgs = b.received()
    assert [(m.type, m.member) for m in msgs] == [
        (SIGNAL, "NameOwnerChanged"), (SIGNAL, "NameAcquired"), (METHOD_RETURN, None)]
    assert msgs[2].body() == [PRIMARY_OWNER]


def test_queued_with_do_not_queue_leaves_the_queue(bus):
    # Checked against dbus-daemon: EXISTS, and the caller is no longer queued.
    a, b = connect(bus), connect(bus)
    request(a)
    assert request(b) == IN_QUEUE
    assert request(b, flags=DO_NOT_QUEUE) == EXISTS
    assert queue(a) == [a.unique_name]


def test_requeue_keeps_position_and_updates_flags(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    request(a)
    assert request(b) == IN_QUEUE
    assert request(c) == IN_QUEUE
    assert request(b, flags=ALLOW_REPLACEMENT) == IN_QUEUE
    assert queue(a) == [a.unique_name, b.unique_name, c.unique_name]
    # b's new flags count once it is primary
    release(a)
    assert request(c, flags=REPLACE_EXISTING) == PRIMARY_OWNER
    assert queue(a) == [c.unique_name, b.unique_name]


def test_queued_requester_replacing(bus):
    a, b = connect(bus), connect(bus)
    request(a, flags=ALLOW_REPLACEMENT)
    assert request(b) == IN_QUEUE
    assert request(b, flags=REPLACE_EXISTING) == PRIMARY_OWNER
    assert queue(a) == [b.unique_name, a.unique_name]


# -- invalid requests ---------------------------------------------------------------------


def test_request_name_errors(bus):
    a = connect(bus)
    assert a.bus_error("RequestName", "su", ("foo", 0)) == (
        ERR + "InvalidArgs", 'Requested bus name "foo" is not valid')
    assert a.bus_error("RequestName", "su", (":1.99", 0)) == (
        ERR + "InvalidArgs", "Cannot acquire a service starting with ':' such as \":1.99\"")
    assert a.bus_error("RequestName", "su", (BUS_NAME, 0)) == (
        ERR + "InvalidArgs", f'Connection "{a.unique_name}" is not allowed to own the service '
        f'"org.freedesktop.DBus"because it is reserved for D-Bus\' use only')
    assert a.bus_error("RequestName", "su", ("", 0))[0] == ERR + "InvalidArgs"
    assert a.bus_error("RequestName", "su", ("a." + "b" * 254, 0))[0] == ERR + "InvalidArgs"


def test_unknown_flag_bits_ignored(bus):
    a = connect(bus)
    assert request(a, flags=0xFFFFFFF8) == PRIMARY_OWNER


def test_max_names_per_connection_limits_exceeded():
    bus = make_bus(max_names_per_connection=3)
    a = connect(bus)
    results = []
    for i in range(5):
        r = a.bus_call("RequestName", "su", (f"com.example.N{i}", 0))
        results.append(r.error_name or r.body()[0])
    assert results[0] == PRIMARY_OWNER
    assert results[-1] == ERR + "LimitsExceeded"
    r = a.bus_call("RequestName", "su", ("com.example.N9", 0))
    assert "max_names_per_connection=3" in r.body()[0]


def test_queued_names_count_toward_the_limit():
    bus = make_bus(max_names_per_connection=3)
    a, b = connect(bus), connect(bus)
    for i in range(5):
        request(a, f"com.example.N{i}") if i < 2 else None
    results = [b.bus_call("RequestName", "su", (f"com.example.N{i}", 0)) for i in range(2)]
    results += [b.bus_call("RequestName", "su", (f"com.example.M{i}", 0)) for i in range(3)]
    assert results[-1].error_name == ERR + "LimitsExceeded"


def test_max_names_per_connection_as_dbus_daemon():
    # Checked against dbus-daemon 1.14 with <limit name="max_names_per_connection">2</limit>:
    # the unique name is one of the two, so the second well-known name is refused.
    bus = make_bus(max_names_per_connection=2)
    a = connect(bus)
    assert request(a, "com.a1") == PRIMARY_OWNER
    assert a.bus_error("RequestName", "su", ("com.a2", 0)) == (
        ERR + "LimitsExceeded", f'Connection "{a.unique_name}" is not allowed to own more services '
        "(increase limits in configuration file if required; max_names_per_connection=2)")


# -- ReleaseName -------------------------------------------------------------------------------


def test_release_primary_hands_over_to_the_next_in_queue(bus):
    w = watcher(bus)
    a, b, c = connect(bus), connect(bus), connect(bus)
    request(a)
    request(b)
    request(c)
    for x in (a, b, c, w):
        x.clear()
    assert release(a) == RELEASED
    assert sig_summary(a.received()) == [("NameLost", (NAME,))]
    assert sig_summary(b.received()) == [("NameAcquired", (NAME,))]
    assert c.signals() == []
    assert sig_summary(w.received()) == [("NameOwnerChanged", (NAME, a.unique_name, b.unique_name))]
    assert queue(w) == [b.unique_name, c.unique_name]


def test_release_last_owner_frees_the_name(bus):
    w = watcher(bus)
    a = connect(bus)
    request(a)
    a.clear()
    w.clear()
    assert release(a) == RELEASED
    assert sig_summary(a.received()) == [("NameLost", (NAME,))]
    assert sig_summary(w.received()) == [("NameOwnerChanged", (NAME, a.unique_name, ""))]
    assert w.bus_ok("NameHasOwner", "s", (NAME,)) == [False]
    assert w.bus_error("ListQueuedOwners", "s", (NAME,)) == (
        ERR + "NameHasNoOwner", f"Could not get owners of name '{NAME}': no such name")
    assert NAME not in w.bus_ok("ListNames")[0]


def test_release_while_queued(bus):
    w = watcher(bus)
    a, b = connect(bus), connect(bus)
    request(a)
    request(b)
    w.clear()
    a.clear()
    assert release(b) == RELEASED
    assert b.signals() == [] and a.signals() == [] and w.signals() == []
    assert queue(w) == [a.unique_name]


def test_release_codes(bus):
    a, b = connect(bus), connect(bus)
    assert release(a) == NON_EXISTENT
    request(a)
    assert release(b) == NOT_OWNER
    assert release(a) == RELEASED
    assert release(a) == NON_EXISTENT


def test_release_name_errors(bus):
    a = connect(bus)
    assert a.bus_error("ReleaseName", "s", ("foo",)) == (ERR + "InvalidArgs", 'Given bus name "foo" is not valid')
    assert a.bus_error("ReleaseName", "s", (":1.99",)) == (
        ERR + "InvalidArgs", "Cannot release a service starting with ':' such as \":1.99\"")
    assert a.bus_error("ReleaseName", "s", (BUS_NAME,)) == (
        ERR + "InvalidArgs", "Cannot release the org.freedesktop.DBus service because it is owned by the bus")


# -- disconnect -------------------------------------------------------------------------------


def test_disconnect_hands_over_every_name(bus):
    w = watcher(bus, "type='signal',member='NameOwnerChanged'")
    a, b = connect(bus), connect(bus)
    request(a, "com.example.One")
    request(a, "com.example.Two")
    request(b, "com.example.Two")
    w.clear()
    b.clear()
    bus.disconnect(a.peer)
    changes = [m.body() for m in w.signals("NameOwnerChanged")]
    assert ["com.example.One", a.unique_name, ""] in changes
    assert ["com.example.Two", a.unique_name, b.unique_name] in changes
    # the unique name goes last
    assert changes[-1] == [a.unique_name, a.unique_name, ""]
    assert sig_summary(b.received()) == [("NameAcquired", ("com.example.Two",))]
    assert queue(w, "com.example.Two") == [b.unique_name]


def test_disconnect_of_a_queued_peer(bus):
    w = watcher(bus)
    a, b, c = connect(bus), connect(bus), connect(bus)
    request(a)
    request(b)
    request(c)
    w.clear()
    bus.disconnect(b.peer)
    assert w.signals() == []
    assert queue(w) == [a.unique_name, c.unique_name]
    release(a)
    assert w.bus_ok("GetNameOwner", "s", (NAME,)) == [c.unique_name]


def test_names_can_be_taken_again_after_disconnect(bus):
    a = connect(bus)
    request(a)
    bus.disconnect(a.peer)
    b = connect(bus)
    assert request(b) == PRIMARY_OWNER


# -- ListQueuedOwners ---------------------------------------------------------------------------


def test_list_queued_owners(bus):
    a, b, c = connect(bus), connect(bus), connect(bus)
    request(a)
    request(b)
    request(c, flags=DO_NOT_QUEUE)
    assert queue(a) == [a.unique_name, b.unique_name]
    assert queue(a, a.unique_name) == [a.unique_name]
    assert queue(a, BUS_NAME) == [BUS_NAME]
    assert a.bus_error("ListQueuedOwners", "s", ("a.b",)) == (
        ERR + "NameHasNoOwner", "Could not get owners of name 'a.b': no such name")
    assert a.bus_error("ListQueuedOwners", "s", (":1.99",)) == (
        ERR + "NameHasNoOwner", "Could not get owners of name ':1.99': no such name")


def test_unicast_follows_the_primary_owner(bus):
    a, b, caller = connect(bus), connect(bus), connect(bus)
    request(a)
    request(b)
    a.clear()
    b.clear()
    caller.call(NAME, "One", flags=1)
    release(a)
    a.clear()
    b.clear()
    caller.call(NAME, "Two", flags=1)
    assert [m.member for m in a.received()] == []
    assert [m.member for m in b.received()] == ["Two"]
