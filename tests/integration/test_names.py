"""Well-known name ownership, queueing and the name signals."""

import pytest

from itutil import (
    ALLOW_REPLACEMENT,
    ALREADY_OWNER,
    BUS_NAME,
    DO_NOT_QUEUE,
    EXISTS,
    IN_QUEUE,
    NON_EXISTENT,
    NOT_OWNER,
    PRIMARY_OWNER,
    RELEASED,
    REPLACE_EXISTING,
    Client,
    DBusErrorReply,
    is_signal,
    run,
    run_dbus_python,
    wait_until,
)

NAME = "com.example.Queue"
ERR = "org.freedesktop.DBus.Error."


def rn(c, flags=0, name=NAME):
    return c.bus("RequestName", "su", name, flags)[0]


def rel(c, name=NAME):
    return c.bus("ReleaseName", "s", name)[0]


def queue(c, name=NAME):
    return c.bus("ListQueuedOwners", "s", name)[0]


def owner(c, name=NAME):
    return c.bus("GetNameOwner", "s", name)[0]


@pytest.fixture
def clients(bus):
    cs = [Client(bus.address) for _ in range(3)]
    watcher = Client(bus.address)
    watcher.add_match(f"type='signal',sender='{BUS_NAME}',member='NameOwnerChanged',arg0='{NAME}'")
    for c in cs:
        c.drain()
    yield cs, watcher
    for c in cs + [watcher]:
        c.close()


def noc(watcher):
    """Next NameOwnerChanged for NAME: (old, new)."""
    m = watcher.wait_signal("NameOwnerChanged", sender=BUS_NAME, body0=NAME)
    return m.body[1], m.body[2]


def lost(c, name=NAME):
    return c.wait_signal("NameLost", sender=BUS_NAME, body0=name)


def acquired(c, name=NAME):
    return c.wait_signal("NameAcquired", sender=BUS_NAME, body0=name)


def test_primary_owner_and_already_owner(clients):
    (a, b, _), w = clients
    assert rn(a) == PRIMARY_OWNER
    m = acquired(a)
    assert m.header.fields[6] == a.unique_name  # unicast to the new owner
    assert noc(w) == ("", a.unique_name)
    assert rn(a) == ALREADY_OWNER
    assert owner(b) == a.unique_name
    assert queue(b) == [a.unique_name]
    # no second NameAcquired for ALREADY_OWNER
    a.assert_no(lambda m: is_signal(m, "NameAcquired", body0=NAME))


def test_in_queue_and_exists(clients):
    (a, b, c), w = clients
    assert rn(a) == PRIMARY_OWNER
    assert rn(b) == IN_QUEUE
    assert rn(c, DO_NOT_QUEUE) == EXISTS
    assert queue(a) == [a.unique_name, b.unique_name]
    # queued: no NameAcquired for b; re-requesting while queued says IN_QUEUE
    assert rn(b) == IN_QUEUE
    assert queue(a) == [a.unique_name, b.unique_name]
    b.assert_no(lambda m: is_signal(m, "NameAcquired", body0=NAME))


def test_replace_existing_with_allow_replacement(clients):
    (a, b, _), w = clients
    assert rn(a, ALLOW_REPLACEMENT) == PRIMARY_OWNER
    assert noc(w) == ("", a.unique_name)
    assert rn(b, REPLACE_EXISTING) == PRIMARY_OWNER
    lost(a)
    acquired(b)
    assert noc(w) == (a.unique_name, b.unique_name)
    # the old owner did not ask for DO_NOT_QUEUE, so it waits in the queue
    assert queue(b) == [b.unique_name, a.unique_name]


def test_replace_existing_old_owner_do_not_queue_drops_out(clients):
    (a, b, _), w = clients
    assert rn(a, ALLOW_REPLACEMENT | DO_NOT_QUEUE) == PRIMARY_OWNER
    assert rn(b, REPLACE_EXISTING) == PRIMARY_OWNER
    lost(a)
    assert queue(b) == [b.unique_name]


def test_replace_existing_without_allow_replacement(clients):
    (a, b, c), w = clients
    assert rn(a) == PRIMARY_OWNER
    assert rn(b, REPLACE_EXISTING) == IN_QUEUE
    assert rn(c, REPLACE_EXISTING | DO_NOT_QUEUE) == EXISTS
    assert owner(c) == a.unique_name
    assert queue(c) == [a.unique_name, b.unique_name]
    a.assert_no(lambda m: is_signal(m, "NameLost", body0=NAME))


def test_owner_can_change_flags_by_requesting_again(clients):
    (a, b, _), w = clients
    assert rn(a) == PRIMARY_OWNER
    assert rn(a, ALLOW_REPLACEMENT) == ALREADY_OWNER
    assert rn(b, REPLACE_EXISTING) == PRIMARY_OWNER
    lost(a)
    assert owner(a) == b.unique_name


def test_queued_do_not_queue_request_leaves_queue(clients):
    (a, b, _), w = clients
    assert rn(a) == PRIMARY_OWNER
    assert rn(b) == IN_QUEUE
    assert rn(b, DO_NOT_QUEUE) == EXISTS
    assert queue(a) == [a.unique_name]


def test_release_name_codes(clients):
    (a, b, c), w = clients
    assert rel(a) == NON_EXISTENT
    assert rn(a) == PRIMARY_OWNER
    assert rel(b) == NOT_OWNER
    assert rn(b) == IN_QUEUE
    # releasing while queued removes from the queue
    assert rel(b) == RELEASED
    assert queue(a) == [a.unique_name]
    assert rel(a) == RELEASED
    lost(a)
    assert noc(w) == ("", a.unique_name)
    assert noc(w) == (a.unique_name, "")
    assert c.bus("NameHasOwner", "s", NAME) == (False,)
    assert rel(a) == NON_EXISTENT


def test_release_passes_name_to_queue(clients):
    (a, b, c), w = clients
    assert rn(a) == PRIMARY_OWNER
    assert rn(b) == IN_QUEUE
    assert rn(c) == IN_QUEUE
    assert noc(w) == ("", a.unique_name)
    assert rel(a) == RELEASED
    lost(a)
    acquired(b)
    assert noc(w) == (a.unique_name, b.unique_name)
    assert queue(c) == [b.unique_name, c.unique_name]


def test_owner_disconnect_passes_name_to_queue(bus, clients):
    (_, b, c), w = clients
    a = Client(bus.address)
    assert rn(a) == PRIMARY_OWNER
    assert rn(b) == IN_QUEUE
    assert rn(c) == IN_QUEUE
    assert noc(w) == ("", a.unique_name)
    a_name = a.unique_name
    a.close()
    acquired(b)
    assert noc(w) == (a_name, b.unique_name)
    assert owner(c) == b.unique_name
    assert queue(c) == [b.unique_name, c.unique_name]
    b.close()
    acquired(c)
    assert noc(w) == (b.unique_name, c.unique_name)


def test_queued_disconnect_leaves_queue(bus, clients):
    (a, _, c), w = clients
    b = Client(bus.address)
    assert rn(a) == PRIMARY_OWNER
    assert rn(b) == IN_QUEUE
    assert rn(c) == IN_QUEUE
    b.close()
    wait_until(lambda: queue(a) == [a.unique_name, c.unique_name],
               what="b to leave the queue")


def test_name_owner_changed_on_disconnect(bus):
    with Client(bus.address) as w:
        w.add_match("type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'")
        c = Client(bus.address)
        u = c.unique_name
        assert rn(c, 0, "com.example.A") == PRIMARY_OWNER
        assert rn(c, 0, "com.example.B") == PRIMARY_OWNER
        c.close()
        got = set()
        while len(got) < 3:
            m = w.wait_signal("NameOwnerChanged")
            if m.body[1] == u:
                assert m.body[2] == ""
                got.add(m.body[0])
        assert got == {"com.example.A", "com.example.B", u}
        assert w.bus("NameHasOwner", "s", "com.example.A") == (False,)


def test_name_lost_only_to_owner(clients):
    (a, b, c), w = clients
    assert rn(a, ALLOW_REPLACEMENT) == PRIMARY_OWNER
    assert rn(b, REPLACE_EXISTING) == PRIMARY_OWNER
    lost(a)
    c.assert_no(lambda m: is_signal(m, "NameLost") or is_signal(m, "NameAcquired", body0=NAME))


@pytest.mark.parametrize("name", [":1.5", "org.freedesktop.DBus", "bad", "a..b",
                                  "1abc.def", "a" * 256 + ".b"])
def test_request_invalid_names(clients, name):
    (a, _, _), _w = clients
    e = a.bus_error("RequestName", "su", name, 0)
    assert e.name == ERR + "InvalidArgs", e


@pytest.mark.parametrize("name", [":1.5", "org.freedesktop.DBus", "bad"])
def test_release_invalid_names(clients, name):
    (a, _, _), _w = clients
    e = a.bus_error("ReleaseName", "s", name)
    assert e.name == ERR + "InvalidArgs", e


def test_list_queued_owners_errors(clients):
    (a, _, _), _w = clients
    assert a.bus_error("ListQueuedOwners", "s", "com.example.Missing").name == ERR + "NameHasNoOwner"
    assert queue(a, BUS_NAME) == [BUS_NAME]
    assert queue(a, a.unique_name) == [a.unique_name]


def test_names_with_hyphen_and_underscore(clients):
    (a, _, _), _w = clients
    for n in ("com.example.with-hyphen", "com.example._under", "a.b"):
        assert rn(a, 0, n) == PRIMARY_OWNER
        assert owner(a, n) == a.unique_name


def test_many_names_one_connection(clients):
    (a, b, _), _w = clients
    names = [f"com.example.Many.N{i}" for i in range(50)]
    for n in names:
        assert rn(a, 0, n) == PRIMARY_OWNER
    (listed,) = b.bus("ListNames")
    assert set(names) <= set(listed)


def test_dbus_python_owner_exit_releases(bus, clients):
    """A name owned by a separate process goes away when the process exits."""
    (_, _, _), w = clients
    run_code = (
        "n = conn.request_name('com.example.Queue', 4)\n"
        "print(n, conn.get_unique_name())\n"
    )
    out = run_dbus_python(bus, run_code).stdout.split()
    assert out[0] == "1"
    uniq = out[1]
    assert noc(w) == ("", uniq)
    assert noc(w) == (uniq, "")


def test_gdbus_and_busctl_see_owner(bus, clients):
    (a, _, _), _w = clients
    assert rn(a) == PRIMARY_OWNER
    out = run(["gdbus", "call", "--session", "--dest", BUS_NAME, "--object-path",
               "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.ListQueuedOwners",
               NAME], bus).stdout
    assert a.unique_name in out
    out = run(["dbus-send", "--session", "--print-reply", "--dest=" + BUS_NAME,
               "/org/freedesktop/DBus", "org.freedesktop.DBus.GetNameOwner",
               "string:" + NAME], bus).stdout
    assert f'string "{a.unique_name}"' in out


# -- property: the bus-name grammar ------------------------------------------------

import re as _re  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_ELEMENT = _re.compile(r"^[A-Za-z_-][A-Za-z0-9_-]*$")


def valid_well_known_name(name: str) -> bool:
    """D-Bus specification, "Bus names" (well-known names only)."""
    if not name or len(name) > 255 or name.startswith(":"):
        return False
    parts = name.split(".")
    return len(parts) >= 2 and all(_ELEMENT.match(p) for p in parts)


@pytest.fixture(scope="module")
def prop_client(module_bus):
    with Client(module_bus.address) as c:
        yield c


_name_chars = st.sampled_from(list("abcXYZ019_-.") + [":", " ", "é", "/", "\u2603"])
_names = st.one_of(
    st.text(_name_chars, min_size=0, max_size=24),
    st.builds(lambda a, b: f"{a}.{b}", st.text(_name_chars, min_size=1, max_size=8),
              st.text(_name_chars, min_size=1, max_size=8)),
    st.integers(250, 260).map(lambda n: ("a." + "b" * n)[:n]),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names)
def test_request_name_validity_property(prop_client, name):
    c = prop_client
    if name == "org.freedesktop.DBus":
        return
    try:
        code = rn(c, 0, name)
    except DBusErrorReply as e:
        assert e.name == ERR + "InvalidArgs", (name, e)
        assert not valid_well_known_name(name), f"valid name {name!r} rejected: {e}"
        return
    assert valid_well_known_name(name), f"invalid name {name!r} accepted"
    assert code in (PRIMARY_OWNER, ALREADY_OWNER)
    assert rel(c, name) == RELEASED
