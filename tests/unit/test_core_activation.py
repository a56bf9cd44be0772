"""Service activation in the sans-I/O core: a fake spawner and fake timers."""

import os

import pytest

from corehelpers import ERR, METHOD_CALL, SIGNAL, FakeSpawner, connect, make_bus
from sandbus.config.services import ServiceCache, ServiceFileError, entry_from_text, parse_desktop_file
from sandbus.core.activation import Activation, parse_exec
from sandbus.core.errors import DBusError


class FakeTimer:
    def __init__(self, timers, delay, fn, args):
        self.timers, self.delay, self.fn, self.args = timers, delay, fn, args
        self.cancelled = False

    def cancel(self):
        self.cancelled = True

    def fire(self):
        self.fn(*self.args)


@pytest.fixture
def setup(tmp_path):
    d = tmp_path / "services"
    d.mkdir()

    def write(name, exec_line="/usr/bin/svc --flag 'a b'", extra="", fname=None):
        (d / (fname or f"{name}.service")).write_text(f"[D-BUS Service]\nName={name}\nExec={exec_line}\n{extra}")

    bus = make_bus(service_start_timeout=5000, max_pending_service_starts=4)
    timers = []
    bus.call_later = lambda delay, fn, *args: timers.append(FakeTimer(timers, delay, fn, args)) or timers[-1]
    spawner = FakeSpawner()
    write("com.example.Svc")
    act = Activation(bus, ServiceCache.loaded([str(d)]), spawner, environ={"PATH": "/bin", "LISTEN_FDS": "1", "HOME": "/h"},
                     address="unix:path=/x,guid=1")
    bus.settings.activation = act

    class S:
        pass
    s = S()
    s.bus, s.timers, s.spawner, s.act, s.write, s.dir = bus, timers, spawner, act, write, d
    return s


def start(client, name="com.example.Svc"):
    return client.driver("StartServiceByName", "su", (name, 0))


# -- parsing -----------------------------------------------------------------------------

def test_parse_desktop_file():
    text = "# comment\n[D-BUS Service]\nName = com.example.A\nExec=/bin/a -x\nUser=nobody\n" \
           "SystemdService=a.service\nAssumedAppArmorLabel=lbl\n[Other]\nX=1\n"
    assert parse_desktop_file(text)["Other"] == {"X": "1"}
    e = entry_from_text(text)
    assert (e.name, e.exec, e.user, e.systemd_service, e.assumed_apparmor_label) == \
        ("com.example.A", "/bin/a -x", "nobody", "a.service", "lbl")


@pytest.mark.parametrize("text", ["[D-BUS Service]\nExec=/bin/a\n", "[D-BUS Service]\nName=com.example.A\n",
                                  "Name=x\n", "[Other]\nName=a.b\nExec=/x\n", "[D-BUS Service]\nName=:1.2\nExec=/x\n",
                                  "[D-BUS Service]\nbroken line\n"])
def test_invalid_service_files(text):
    with pytest.raises(ServiceFileError):
        entry_from_text(text)


def test_parse_exec_quoting():
    assert parse_exec("/bin/a 'b c' \"d \\\"e\\\"\" f\\ g # comment") == ["/bin/a", "b c", 'd "e"', "f g"]
    with pytest.raises(DBusError):
        parse_exec("/bin/a 'unclosed")
    with pytest.raises(DBusError):
        parse_exec("   ")


def test_cache_priority_and_strict_naming(tmp_path):
    from sandbus.config.model import ServiceDir
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x.service").write_text("[D-BUS Service]\nName=com.example.X\nExec=/a\n")
    (b / "com.example.X.service").write_text("[D-BUS Service]\nName=com.example.X\nExec=/b\n")
    (b / "wrong.service").write_text("[D-BUS Service]\nName=com.example.W\nExec=/w\n")
    (b / "notes.txt").write_text("[D-BUS Service]\nName=com.example.T\nExec=/t\n")
    cache = ServiceCache([str(a), ServiceDir(str(b), strict_naming=True)])
    cache.scan()
    assert cache.entries["com.example.X"].exec == "/a"
    assert sorted(cache.names()) == ["com.example.X"]
    # removing the winning file lets the other one through
    os.unlink(a / "x.service")
    assert cache.lookup("com.example.X").exec == "/b"


# -- StartServiceByName ----------------------------------------------------------------------

def test_start_by_name_replies_when_name_appears(setup):
    c = connect(setup.bus)
    serial = start(c)
    assert c.received() == []  # no reply yet
    (child,) = setup.spawner.children
    assert child.argv == ["/usr/bin/svc", "--flag", "a b"]
    assert child.env["DBUS_STARTER_ADDRESS"] == "unix:path=/x,guid=1"
    assert child.env["DBUS_STARTER_BUS_TYPE"] == "session"
    assert child.env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/x,guid=1"
    assert "LISTEN_FDS" not in child.env and child.env["HOME"] == "/h"
    # a second request joins the pending activation: no second process
    serial2 = start(c)
    assert len(setup.spawner.children) == 1
    svc = connect(setup.bus)
    svc.bus_ok("RequestName", "su", ("com.example.Svc", 0))
    assert c.reply_to(serial).body() == [1]
    assert c.reply_to(serial2).body() == [1]
    assert setup.timers[0].cancelled
    assert setup.act.pending == {} and setup.act.n_queued == 0
    assert c.bus_ok("StartServiceByName", "su", ("com.example.Svc", 0)) == [2]


def test_unknown_service(setup):
    c = connect(setup.bus)
    assert c.bus_error("StartServiceByName", "su", ("com.example.None", 0)) == \
        (ERR + "ServiceUnknown", "The name com.example.None was not provided by any .service files")


def test_new_file_found_without_reload(setup):
    c = connect(setup.bus)
    setup.write("com.example.New")
    start(c, "com.example.New")
    assert len(setup.spawner.children) == 1


def test_update_activation_environment_reaches_child(setup):
    c = connect(setup.bus)
    c.bus_ok("UpdateActivationEnvironment", "a{ss}", ({"FOO": "bar", "DBUS_STARTER_BUS_TYPE": "x"},))
    start(c)
    env = setup.spawner.children[0].env
    assert env["FOO"] == "bar" and env["DBUS_STARTER_BUS_TYPE"] == "session"


# -- auto-start ---------------------------------------------------------------------------------

def test_auto_start_delivers_queued_in_order(setup):
    c = connect(setup.bus)
    serials = [c.call("com.example.Svc", "Echo", "s", (str(i),), path="/p", interface="com.example.I")
               for i in range(3)]
    assert c.received() == []
    assert len(setup.spawner.children) == 1
    svc = connect(setup.bus)
    svc.bus_ok("RequestName", "su", ("com.example.Svc", 0))
    calls = [m for m in svc.received() if m.type == METHOD_CALL]
    assert [m.serial for m in calls] == serials
    assert [m.body() for m in calls] == [["0"], ["1"], ["2"]]
    assert all(m.sender == c.unique_name for m in calls)
    svc.reply(calls[1], "s", ("r1",))
    assert c.reply_to(serials[1]).body() == ["r1"]


def test_no_auto_start_flag(setup):
    c = connect(setup.bus)
    serial = c.call("com.example.Svc", "Echo", flags=2)
    r = c.reply_to(serial)
    assert (r.error_name, r.body()) == (ERR + "NameHasNoOwner", ['Name "com.example.Svc" does not exist'])
    assert setup.spawner.children == []


def test_disconnected_caller_is_skipped(setup):
    c = connect(setup.bus)
    c.call("com.example.Svc", "Echo")
    setup.bus.disconnect(c.peer)
    svc = connect(setup.bus)
    svc.bus_ok("RequestName", "su", ("com.example.Svc", 0))
    assert [m for m in svc.received() if m.type == METHOD_CALL] == []


# -- failures ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,value,name,text", [
    ("exited", 3, "Spawn.ChildExited", "Process com.example.Svc exited with status 3"),
    ("signaled", 9, "Spawn.ChildSignaled", "Process com.example.Svc received signal 9"),
    ("exec-failed", "No such file or directory", "Spawn.ExecFailed",
     "Failed to execute program com.example.Svc: No such file or directory"),
])
def test_child_failure(setup, kind, value, name, text):
    c = connect(setup.bus)
    s1 = start(c)
    s2 = c.call("com.example.Svc", "Echo")
    setup.spawner.children[0].on_exit(kind, value)
    for s in (s1, s2):
        r = c.reply_to(s)
        assert (r.error_name, r.body()) == (ERR + name, [text])
    assert setup.act.pending == {} and setup.act.n_queued == 0


def test_exit_zero_waits_for_timeout(setup):
    c = connect(setup.bus)
    s1 = start(c)
    child = setup.spawner.children[0]
    child.on_exit("exited", 0)
    assert c.received() == []
    (timer,) = setup.timers
    assert timer.delay == 5.0
    timer.fire()
    r = c.reply_to(s1)
    assert r.error_name == ERR + "TimedOut"
    assert r.body() == ["Failed to activate service 'com.example.Svc': timed out (service_start_timeout=5000ms)"]


def test_timeout_kills_child(setup):
    c = connect(setup.bus)
    start(c)
    setup.timers[0].fire()
    assert setup.spawner.children[0].killed
    # a later exit report is ignored
    setup.spawner.children[0].on_exit("signaled", 9)
    assert [m.error_name for m in c.received()] == [ERR + "TimedOut"]


def test_max_pending_service_starts(setup):
    c = connect(setup.bus)
    for _ in range(4):
        start(c)
    assert c.bus_error("StartServiceByName", "su", ("com.example.Svc", 0)) == (
        ERR + "LimitsExceeded", "The maximum number of pending activations has been reached, activation of "
        "com.example.Svc failed (max_pending_service_starts=4)")


def test_same_exec_fails_together(setup):
    setup.write("com.example.Other", exec_line="/usr/bin/svc --flag 'a b'")
    c = connect(setup.bus)
    s1 = start(c)
    s2 = start(c, "com.example.Other")
    setup.spawner.children[0].on_exit("exited", 1)
    assert c.reply_to(s1).error_name == ERR + "Spawn.ChildExited"
    assert c.reply_to(s2).body() == ["Process com.example.Svc exited with status 1"]


# -- the system bus's <servicehelper> ---------------------------------------------------------------

HELPER = "/usr/lib/dbus-1.0/dbus-daemon-launch-helper"


def test_servicehelper_runs_the_helper_with_the_name(setup):
    """With <servicehelper>, the bus runs `HELPER NAME` and never the Exec=
    line nor as the User= itself: the setuid helper reads the file again and
    switches user (the bus has dropped root by then)."""
    setup.act.servicehelper = HELPER
    setup.write("com.example.Sys", extra="User=nobody\n")
    c = connect(setup.bus)
    start(c, "com.example.Sys")
    (child,) = setup.spawner.children
    assert child.argv == [HELPER, "com.example.Sys"]
    assert child.user is None


def test_servicehelper_needs_a_user(setup):
    setup.act.servicehelper = HELPER
    c = connect(setup.bus)
    assert c.bus_error("StartServiceByName", "su", ("com.example.Svc", 0)) == (
        ERR + "Spawn.FileInvalid", "Cannot do system-bus activation with no user\n")
    assert setup.spawner.children == [] and setup.act.pending == {}


@pytest.mark.parametrize("status,name,text", [
    (6, "Spawn.ServiceNotFound", "Bus name not found in system service directory"),
    (7, "Spawn.PermissionsInvalid", "The permission of the setuid helper is not correct"),
    (9, "Spawn.ExecFailed", "Cannot launch daemon, file not found or permissions invalid"),
    (1, "Spawn.ChildExited", "Launch helper exited with unknown return code 1"),
])
def test_servicehelper_exit_status_is_translated(setup, status, name, text):
    setup.act.servicehelper = HELPER
    setup.write("com.example.Sys", extra="User=nobody\n")
    c = connect(setup.bus)
    s = start(c, "com.example.Sys")
    setup.spawner.children[0].on_exit("exited", status)
    r = c.reply_to(s)
    assert (r.error_name, r.body()) == (ERR + name, [text])


# -- reload ----------------------------------------------------------------------------------------------

def test_reload_rescans_and_signals(setup):
    c = connect(setup.bus)
    c.bus_ok("AddMatch", "s", ("type='signal',member='ActivatableServicesChanged'",))
    assert "com.example.Later" not in c.bus_ok("ListActivatableNames")[0]
    setup.write("com.example.Later")
    setup.act.reload(ServiceCache.loaded([str(setup.dir)]))
    assert [m.member for m in c.signals()] == ["ActivatableServicesChanged"]
    assert "com.example.Later" in c.bus_ok("ListActivatableNames")[0]


# -- systemd activation ---------------------------------------------------------------------------------------

def test_systemd_request_and_failure(setup):
    setup.act.systemd_activation = True
    setup.write("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd.service\n")
    systemd = connect(setup.bus)
    systemd.bus_ok("RequestName", "su", ("org.freedesktop.systemd1", 0))
    systemd.clear()
    c = connect(setup.bus)
    s1 = start(c, "com.example.Sd")
    assert setup.spawner.children == []
    (req,) = systemd.received()
    assert (req.type, req.interface, req.member, req.destination, req.body()) == (
        SIGNAL, "org.freedesktop.systemd1.Activator", "ActivationRequest", "org.freedesktop.systemd1", ["sd.service"])
    # from anyone but systemd, ignored
    other = connect(setup.bus)
    other.signal("ActivationFailure", "sss", ("sd.service", "org.example.E", "no"),
                 path="/org/freedesktop/DBus", interface="org.freedesktop.systemd1.Activator",
                 destination="org.freedesktop.DBus")
    assert c.received() == []
    systemd.signal("ActivationFailure", "sss", ("sd.service", "org.freedesktop.systemd1.NoSuchUnit", "gone"),
                   path="/org/freedesktop/DBus", interface="org.freedesktop.systemd1.Activator",
                   destination="org.freedesktop.DBus")
    r = c.reply_to(s1)
    assert (r.error_name, r.body()) == ("org.freedesktop.systemd1.NoSuchUnit", ["gone"])


def test_systemd_not_connected_queues_request(setup):
    setup.act.systemd_activation = True
    setup.write("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd.service\n")
    c = connect(setup.bus)
    s1 = start(c, "com.example.Sd")
    assert set(setup.act.pending) == {"com.example.Sd", "org.freedesktop.systemd1"}
    systemd = connect(setup.bus)
    systemd.bus_ok("RequestName", "su", ("org.freedesktop.systemd1", 0))
    reqs = [m for m in systemd.received() if m.member == "ActivationRequest"]
    assert [m.body() for m in reqs] == [["sd.service"]]
    svc = connect(setup.bus)
    svc.bus_ok("RequestName", "su", ("com.example.Sd", 0))
    assert c.reply_to(s1).body() == [1]


def test_unicast_signal_auto_starts(setup):
    """dbus-daemon starts the destination of any message without
    NO_AUTO_START, a unicast signal too, and delivers it once it is there."""
    c = connect(setup.bus)
    c.signal("Ping", "s", ("x",), destination="com.example.Svc")
    assert c.received() == []
    assert len(setup.spawner.children) == 1
    svc = connect(setup.bus)
    svc.bus_ok("RequestName", "su", ("com.example.Svc", 0))
    sigs = [m for m in svc.received() if m.type == SIGNAL and m.member == "Ping"]
    assert [m.body() for m in sigs] == [["x"]]


def test_update_activation_environment_goes_to_systemd(setup):
    """Under --systemd-activation the variables go to systemd as
    Manager.SetEnvironment: queued (to the well-known name) until systemd
    is there, then addressed to its unique name (dbus's /sd-activation/uae)."""
    setup.act.systemd_activation = True
    c = connect(setup.bus)
    c.bus_ok("UpdateActivationEnvironment", "a{ss}", ({},))
    assert "org.freedesktop.systemd1" in setup.act.pending
    systemd = connect(setup.bus)
    systemd.bus_ok("RequestName", "su", ("org.freedesktop.systemd1", 0))
    (queued,) = [m for m in systemd.received() if m.member == "SetEnvironment"]
    assert (queued.interface, queued.path, queued.destination, queued.body(), queued.flags & 1) == (
        "org.freedesktop.systemd1.Manager", "/org/freedesktop/systemd1", "org.freedesktop.systemd1", [[]], 1)
    c.bus_ok("UpdateActivationEnvironment", "a{ss}", ({"A": "1"},))
    (m,) = [m for m in systemd.received() if m.member == "SetEnvironment"]
    assert (m.destination, m.body()) == (systemd.unique_name, [["A=1"]])


def test_update_activation_environment_without_systemd_activation(setup):
    c = connect(setup.bus)
    c.bus_ok("UpdateActivationEnvironment", "a{ss}", ({"A": "1"},))
    assert setup.act.pending == {}


def test_monitors_see_systemds_request_ahead_of_its_cause(setup):
    # dbus-daemon's own transaction for the ActivationRequest (bus/activation.c;
    # tests/integration/test_activation.py checks it live): ahead of the
    # StartServiceByName and of an auto-starting call, also while systemd
    # is not connected; what waited is not shown again when delivered
    setup.act.systemd_activation = True
    setup.write("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd.service\n")
    setup.write("com.example.Sd2", exec_line="/bin/false", extra="SystemdService=sd2.service\n")
    mon = connect(setup.bus)
    mon.bus_ok("BecomeMonitor", "asu", ([], 0), interface="org.freedesktop.DBus.Monitoring")
    mon.clear()
    c = connect(setup.bus)
    c.send(SIGNAL, path="/x", interface="com.example.I", member="Wake", destination="com.example.Sd2")
    systemd = connect(setup.bus)
    systemd.bus_ok("RequestName", "su", ("org.freedesktop.systemd1", 0))
    start(c, "com.example.Sd")
    seen = [m.member for m in mon.received() if m.member in ("ActivationRequest", "Wake", "StartServiceByName")]
    assert seen == ["ActivationRequest", "Wake", "ActivationRequest", "StartServiceByName"]
    svc = connect(setup.bus)
    svc.bus_ok("RequestName", "su", ("com.example.Sd2", 0))
    assert [m.member for m in svc.received()] == ["NameAcquired", "Wake"]
    assert "Wake" not in [m.member for m in mon.received()]
