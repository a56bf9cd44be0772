"""Service activation against a real daemon: .service files, StartServiceByName,
auto-start with queued messages, failures and timeouts, the activation
environment, ReloadConfig, --systemd-activation, and systemd socket
activation (LISTEN_FDS).

Each test runs on sandbus and, where installed, on dbus-daemon 1.14 (the
reference), so every assertion is dbus-daemon's behaviour."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time

import pytest

import itutil
from itutil import (
    BUS_NAME,
    TIMEOUT,
    Client,
    DaemonBus,
    DBusErrorReply,
    MessageType,
    error_name,
    write_config,
)
from jeepney import DBusAddress, HeaderFields, new_method_call, new_signal

SERVICE_SCRIPT = os.path.join(os.path.dirname(__file__), "activation_service.py")
DAEMONS = ["sandbus-daemon"] + (["dbus-daemon"] if shutil.which("dbus-daemon") else [])
ERR = "org.freedesktop.DBus.Error."
IFACE = "com.example.Test"


@pytest.fixture(params=DAEMONS)
def daemon(request, monkeypatch):
    if request.param == "sandbus-daemon" and itutil.IS_DBUS_DAEMON:
        pytest.skip("SANDBUS_TEST_DAEMON is dbus-daemon")
    if request.param == "sandbus-daemon":
        monkeypatch.setattr(itutil, "DAEMON", itutil.DAEMON)
    else:
        monkeypatch.setattr(itutil, "DAEMON", "dbus-daemon")
    return request.param


class Env:
    """A service directory plus buses started on it."""

    def __init__(self, tmp_path, daemon):
        self.tmp = tmp_path
        self.daemon = daemon
        self.servicedir = tmp_path / "services"
        self.servicedir.mkdir()
        self.buses = []

    def service(self, name, *args, exec_line=None, extra=""):
        exec_line = exec_line or " ".join([sys.executable, SERVICE_SCRIPT, name, *args])
        (self.servicedir / f"{name}.service").write_text(
            f"[D-BUS Service]\nName={name}\nExec={exec_line}\n{extra}")

    def bus(self, limits=None, args=()):
        extra = f"<servicedir>{self.servicedir}</servicedir>\n"
        for k, v in (limits or {}).items():
            extra += f'<limit name="{k}">{v}</limit>\n'
        workdir = self.tmp / f"bus{len(self.buses)}"
        workdir.mkdir()
        conf = write_config(workdir / "bus.conf", extra)
        b = DaemonBus(workdir, config_file=conf, extra_args=args)
        self.buses.append(b)
        return b

    def close(self):
        for b in self.buses:
            b.stop(check=True)


@pytest.fixture
def env(tmp_path, daemon):
    e = Env(tmp_path, daemon)
    try:
        yield e
    finally:
        e.close()


def svc_call(client, name, member, signature=None, body=(), flags=0, timeout=TIMEOUT):
    return client.call(name, "/", IFACE, member, signature, body, flags=flags, timeout=timeout)


def start_error(client, name, timeout=TIMEOUT) -> DBusErrorReply:
    try:
        r = client.bus("StartServiceByName", "su", name, 0, timeout=timeout)
    except DBusErrorReply as e:
        return e
    raise AssertionError(f"StartServiceByName({name}) unexpectedly succeeded: {r}")


def quit_service(client, name):
    try:
        svc_call(client, name, "Quit", flags=2)
    except DBusErrorReply:
        pass


def test_start_service_by_name(env):
    env.service("com.example.Ok")
    b = env.bus()
    with Client(b.address) as c:
        assert c.bus("StartServiceByName", "su", "com.example.Ok", 0) == (1,)
        assert c.bus("NameHasOwner", "s", "com.example.Ok") == (True,)
        assert c.bus("StartServiceByName", "su", "com.example.Ok", 0) == (2,)
        assert svc_call(c, "com.example.Ok", "Echo", "s", ("hi",)) == ("hi",)
        quit_service(c, "com.example.Ok")


def test_service_unknown(env):
    b = env.bus()
    with Client(b.address) as c:
        e = start_error(c, "com.example.Missing")
        assert e.name == ERR + "ServiceUnknown"
        assert e.text == "The name com.example.Missing was not provided by any .service files"


def test_auto_start_queues_messages_in_order(env):
    env.service("com.example.Auto")
    b = env.bus()
    with Client(b.address) as c:
        addr = DBusAddress("/", bus_name="com.example.Auto", interface=IFACE)
        serials = [c.send(new_method_call(addr, "Echo", "s", (str(i),))) for i in range(3)]
        replies = []
        while len(replies) < 3:
            m = c.wait_for(lambda m: m.header.message_type in (MessageType.method_return, MessageType.error))
            replies.append(m)
        assert [m.header.fields[HeaderFields.reply_serial] for m in replies] == serials
        assert [m.body[0] for m in replies] == ["0", "1", "2"]
        assert svc_call(c, "com.example.Auto", "Calls") == (["Echo", "Echo", "Echo", "Calls"],)
        quit_service(c, "com.example.Auto")


def test_no_auto_start(env):
    env.service("com.example.Auto")
    b = env.bus()
    with Client(b.address) as c:
        with pytest.raises(DBusErrorReply) as ei:
            svc_call(c, "com.example.Auto", "Echo", "s", ("x",), flags=2)
        assert ei.value.name == ERR + "NameHasNoOwner"
        assert ei.value.text == 'Name "com.example.Auto" does not exist'
        assert c.bus("NameHasOwner", "s", "com.example.Auto") == (False,)


def test_child_exits_with_failure(env):
    env.service("com.example.Fail", "--exit", "3")
    b = env.bus()
    with Client(b.address) as c:
        e = start_error(c, "com.example.Fail")
        assert e.name == ERR + "Spawn.ChildExited"
        assert e.text == "Process com.example.Fail exited with status 3"
        # auto-start gets the same error
        with pytest.raises(DBusErrorReply) as ei:
            svc_call(c, "com.example.Fail", "Echo", "s", ("x",))
        assert ei.value.name == ERR + "Spawn.ChildExited"


def test_child_signaled_and_exec_failed(env):
    env.service("com.example.Sig", "--signal")
    env.service("com.example.Nope", exec_line='/nonexistent/program "a b" c')
    b = env.bus()
    with Client(b.address) as c:
        e = start_error(c, "com.example.Sig")
        assert (e.name, e.text) == (ERR + "Spawn.ChildSignaled", "Process com.example.Sig received signal 15")
        e = start_error(c, "com.example.Nope")
        assert (e.name, e.text) == (ERR + "Spawn.ExecFailed",
                                    "Failed to execute program com.example.Nope: No such file or directory")


def test_start_timeout(env):
    # exit status 0 is not a failure (the service may have daemonized): only the timeout ends it
    env.service("com.example.Zero", "--exit", "0")
    env.service("com.example.Slow", "--sleep", "20")
    b = env.bus(limits={"service_start_timeout": 700})
    with Client(b.address) as c:
        for name in ("com.example.Zero", "com.example.Slow"):
            e = start_error(c, name)
            assert e.name == ERR + "TimedOut"
            assert e.text == f"Failed to activate service '{name}': timed out (service_start_timeout=700ms)"


def test_max_pending_service_starts(env):
    env.service("com.example.Slow", "--sleep", "20")
    b = env.bus(limits={"service_start_timeout": 1500, "max_pending_service_starts": 1})
    with Client(b.address) as c:
        first = c.send(new_method_call(DBusAddress("/org/freedesktop/DBus", bus_name=BUS_NAME,
                                                   interface=BUS_NAME), "StartServiceByName", "su",
                                       ("com.example.Slow", 0)))
        e = start_error(c, "com.example.Slow")
        assert e.name == ERR + "LimitsExceeded"
        assert e.text == ("The maximum number of pending activations has been reached, activation of "
                          "com.example.Slow failed (max_pending_service_starts=1)")
        m = c.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == first)
        assert error_name(m) == ERR + "TimedOut"


def test_activation_environment(env):
    env.service("com.example.Env")
    b = env.bus()
    with Client(b.address) as c:
        assert c.bus("UpdateActivationEnvironment", "a{ss}",
                     {"SANDBUS_ACT_TEST": "hello", "DBUS_STARTER_BUS_TYPE": "overridden"}) == ()
        assert c.bus("StartServiceByName", "su", "com.example.Env", 0) == (1,)

        def getenv(var):
            return svc_call(c, "com.example.Env", "Env", "s", (var,))[0]

        assert getenv("SANDBUS_ACT_TEST") == "hello"
        assert getenv("DBUS_STARTER_BUS_TYPE") == "session"
        assert getenv("DBUS_STARTER_ADDRESS") == b.address
        assert getenv("DBUS_SESSION_BUS_ADDRESS") == b.address
        assert getenv("LISTEN_FDS") == "<unset>"
        quit_service(c, "com.example.Env")


def test_list_activatable_names_and_reload(env):
    env.service("com.example.One")
    b = env.bus()
    with Client(b.address) as c:
        names = c.bus("ListActivatableNames")[0]
        assert "org.freedesktop.DBus" in names and "com.example.One" in names
        assert "com.example.Two" not in names
        c.add_match("type='signal',interface='org.freedesktop.DBus',member='ActivatableServicesChanged'")
        env.service("com.example.Two")
        assert c.bus("ReloadConfig") == ()
        c.wait_signal("ActivatableServicesChanged")
        assert "com.example.Two" in c.bus("ListActivatableNames")[0]
        assert c.bus("StartServiceByName", "su", "com.example.Two", 0) == (1,)
        quit_service(c, "com.example.Two")


def test_new_service_file_found_on_activation_without_reload(env):
    b = env.bus()
    with Client(b.address) as c:
        env.service("com.example.Late")
        assert c.bus("StartServiceByName", "su", "com.example.Late", 0) == (1,)
        quit_service(c, "com.example.Late")


# -- --systemd-activation -------------------------------------------------------------

def _receive_unicast_signal(systemd: Client, member):
    return systemd.wait_for(lambda m: m.header.message_type == MessageType.signal
                            and m.header.fields.get(HeaderFields.member) == member, what=member)


def test_systemd_activation_request_and_failure(env):
    env.service("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd-example.service\n")
    b = env.bus(args=("--systemd-activation",))
    with Client(b.address) as systemd, Client(b.address) as c:
        assert systemd.bus("RequestName", "su", "org.freedesktop.systemd1", 4) == (1,)
        serial = c.send(new_method_call(DBusAddress("/org/freedesktop/DBus", bus_name=BUS_NAME,
                                                    interface=BUS_NAME), "StartServiceByName", "su",
                                        ("com.example.Sd", 0)))
        req = _receive_unicast_signal(systemd, "ActivationRequest")
        h = req.header.fields
        assert h[HeaderFields.path] == "/org/freedesktop/DBus"
        assert h[HeaderFields.interface] == "org.freedesktop.systemd1.Activator"
        assert h[HeaderFields.sender] == "org.freedesktop.DBus"
        assert h[HeaderFields.destination] == "org.freedesktop.systemd1"
        assert req.body == ("sd-example.service",)
        fail = new_signal(DBusAddress("/org/freedesktop/DBus", bus_name=BUS_NAME,
                                      interface="org.freedesktop.systemd1.Activator"),
                          "ActivationFailure", "sss",
                          ("sd-example.service", "org.freedesktop.systemd1.NoSuchUnit", "Unit sd-example.service not found."))
        fail.header.fields[HeaderFields.destination] = BUS_NAME  # as systemd sends it
        systemd.send(fail)
        m = c.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == serial)
        assert error_name(m) == "org.freedesktop.systemd1.NoSuchUnit"
        assert m.body == ("Unit sd-example.service not found.",)


def test_monitor_sees_the_activation_request_before_what_caused_it(env):
    """dbus-daemon sends systemd's ActivationRequest in a transaction of its
    own, before the one that carries the message that caused it: monitors
    see the request first, for StartServiceByName and for an auto-start
    alike, and the message that waited is not shown again when delivered
    (dbus's /monitor/activation)."""
    env.service("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd-example.service\n")
    b = env.bus(args=("--systemd-activation",))
    mon = Client(b.address)
    mon.call(BUS_NAME, "/org/freedesktop/DBus", "org.freedesktop.DBus.Monitoring", "BecomeMonitor", "asu", ([], 0))
    with Client(b.address) as systemd, Client(b.address) as c:
        assert systemd.bus("RequestName", "su", "org.freedesktop.systemd1", 4) == (1,)
        c.send(new_method_call(DBusAddress("/org/freedesktop/DBus", bus_name=BUS_NAME, interface=BUS_NAME),
                               "StartServiceByName", "su", ("com.example.Sd", 0)))
        c.send(new_method_call(DBusAddress("/", bus_name="com.example.Sd", interface=IFACE), "Echo", "s", ("q",)))
        seen = []
        mon.wait_for(lambda m: seen.append(m) or m.header.fields.get(HeaderFields.member) == "Echo")
        ours = [m.header.fields.get(HeaderFields.member) for m in seen
                if m.header.fields.get(HeaderFields.member) in ("ActivationRequest", "StartServiceByName", "Echo")]
        # the second request joins the pending activation: no second ActivationRequest
        assert ours == ["ActivationRequest", "StartServiceByName", "Echo"], ours
        with Client(b.address) as svc:
            assert svc.bus("RequestName", "su", "com.example.Sd", 4) == (1,)
            call = svc.wait_for(lambda m: m.header.message_type == MessageType.method_call)
            assert call.body == ("q",)
            svc.bus("GetId")
            seen = []
            mon.wait_for(lambda m: seen.append(m) or (m.header.fields.get(HeaderFields.member) == "GetId"
                                                      and m.header.fields.get(HeaderFields.sender) == svc.unique_name))
            assert "Echo" not in [m.header.fields.get(HeaderFields.member) for m in seen]
    mon.close()


def test_systemd_activation_success_and_waiting_for_systemd(env):
    env.service("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd-example.service\n")
    b = env.bus(args=("--systemd-activation",))
    with Client(b.address) as c:
        # systemd is not connected yet: the request waits for it
        addr = DBusAddress("/", bus_name="com.example.Sd", interface=IFACE)
        serial = c.send(new_method_call(addr, "Echo", "s", ("queued",)))
        c.drain()
        with Client(b.address) as systemd:
            assert systemd.bus("RequestName", "su", "org.freedesktop.systemd1", 4) == (1,)
            req = _receive_unicast_signal(systemd, "ActivationRequest")
            assert req.body == ("sd-example.service",)
            # "systemd" starts the unit: here it takes the name itself
            with Client(b.address) as svc:
                assert svc.bus("RequestName", "su", "com.example.Sd", 4) == (1,)
                call = svc.wait_for(lambda m: m.header.message_type == MessageType.method_call)
                assert call.body == ("queued",)
                from jeepney import new_method_return
                svc.send(new_method_return(call, "s", ("answered",)))
                m = c.wait_for(lambda m: m.header.fields.get(HeaderFields.reply_serial) == serial)
                assert m.body == ("answered",)


# -- systemd socket activation (LISTEN_FDS) ----------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing")
def test_socket_activation(tmp_path, daemon):
    path = str(tmp_path / "sock")
    argv = ["systemd-socket-activate", "-l", path, daemon, "--session", "--nofork", "--print-address=1"]
    if daemon == "dbus-daemon":
        argv.append("--address=systemd:")  # dbus-daemon uses passed sockets only for this address
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        # systemd-socket-activate execs the daemon on the first connection
        deadline = time.monotonic() + TIMEOUT
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "socket not created"
            time.sleep(0.02)
        with Client(f"unix:path={path}") as c:
            assert c.bus("GetId")[0]
            assert c.unique_name.startswith(":")
        r, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert r, "no address printed"
        line = proc.stdout.readline().decode().strip()
        assert line.startswith(f"unix:path={path},guid=")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_transient_service_directory_is_made_at_start(tmp_path):
    """With <standard_session_servicedirs/>, the bus makes
    $XDG_RUNTIME_DIR/dbus-1/services (mode 0700) when it starts, as
    dbus-daemon does, so clients can drop transient .service files there
    (dbus's /sd-activation/transient-services/later)."""
    import stat
    import subprocess

    from itutil import daemon_argv

    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    conf = tmp_path / "bus.conf"
    conf.write_text(f"<busconfig><type>session</type><listen>unix:tmpdir={tmp_path}</listen>"
                    "<standard_session_servicedirs/>"
                    "<policy context='default'><allow send_destination='*'/><allow own='*'/></policy>"
                    "</busconfig>")
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    proc = subprocess.Popen(daemon_argv() + [f"--config-file={conf}", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        assert proc.stdout.readline().strip()
        services = runtime / "dbus-1" / "services"
        assert services.is_dir()
        assert stat.S_IMODE(services.stat().st_mode) & 0o077 == 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_unicast_signal_auto_starts(env):
    """A unicast signal to an activatable name starts it (dbus-daemon looks
    only at NO_AUTO_START) and is delivered once it is there
    (dbus's /sd-activation/activation)."""
    env.service("com.example.Sd", exec_line="/bin/false", extra="SystemdService=sd-example.service\n")
    b = env.bus(args=("--systemd-activation",))
    with Client(b.address) as systemd, Client(b.address) as c:
        assert systemd.bus("RequestName", "su", "org.freedesktop.systemd1", 4) == (1,)
        sig = new_signal(DBusAddress("/foo", interface="com.example.Hello"), "Wake")
        sig.header.fields[HeaderFields.destination] = "com.example.Sd"
        c.send(sig)
        req = _receive_unicast_signal(systemd, "ActivationRequest")
        assert req.body == ("sd-example.service",)
        with Client(b.address) as svc:
            assert svc.bus("RequestName", "su", "com.example.Sd", 4) == (1,)
            got = _receive_unicast_signal(svc, "Wake")
            assert got.header.fields[HeaderFields.sender] == c.unique_name


def test_update_activation_environment_goes_to_systemd(env):
    """Under --systemd-activation UpdateActivationEnvironment is passed on
    to systemd as Manager.SetEnvironment (dbus's /sd-activation/uae)."""
    b = env.bus(args=("--systemd-activation",))
    with Client(b.address) as systemd, Client(b.address) as c:
        assert systemd.bus("RequestName", "su", "org.freedesktop.systemd1", 4) == (1,)
        c.bus("UpdateActivationEnvironment", "a{ss}", {"FOO": "bar"})
        m = systemd.wait_for(lambda m: m.header.fields.get(HeaderFields.member) == "SetEnvironment")
        h = m.header.fields
        assert (h[HeaderFields.path], h[HeaderFields.interface], h[HeaderFields.destination]) == (
            "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", systemd.unique_name)
        assert m.body == (["FOO=bar"],)
