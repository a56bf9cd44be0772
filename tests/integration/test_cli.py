"""The daemon's command line, signals, and the session runner
(`sandbus session -- CMD`, the equivalent of dbus-run-session)."""

import os
import shutil
import signal
import socket
import subprocess
import xml.etree.ElementTree as ET

import pytest

from itutil import (
    IS_SANDBUS,
    TIMEOUT,
    Client,
    DaemonBus,
    assert_bus_alive,
    daemon_argv,
    run,
    sasl_ping,
    socket_path_of,
    wait_until,
    write_config,
)


def daemon_cmd(*args):
    return daemon_argv() + list(args)


def test_version(tmp_path):
    cp = run(daemon_cmd("--version"))
    assert cp.returncode == 0
    assert cp.stdout.strip(), "no version output"
    assert cp.stdout.splitlines()[0].strip()


@pytest.mark.skipif(not IS_SANDBUS, reason="the build is sandbus's")
def test_version_names_the_build():
    """Both commands say which build runs (compiled or pure Python), and it
    is the one this test process imports; SANDBUS_PURE=1 makes it pure."""
    import sandbus
    build = sandbus.build()
    first = run(daemon_cmd("--version")).stdout.splitlines()[0]
    assert first.startswith(f"sandbus {sandbus.__version__} ") and first.endswith(", " + build)
    assert run([_sandbus_cli(), "--version"]).stdout.strip() == f"sandbus {sandbus.__version__}, {build}"
    pure = run(daemon_cmd("--version"), env=dict(os.environ, SANDBUS_PURE="1")).stdout
    assert pure.splitlines()[0].endswith(", pure Python")


def test_introspect_prints_driver_xml():
    cp = run(daemon_cmd("--introspect"))
    root = ET.fromstring(cp.stdout)
    ifaces = {i.get("name") for i in root.findall("interface")}
    assert "org.freedesktop.DBus" in ifaces
    assert "org.freedesktop.DBus.Introspectable" in ifaces
    methods = {m.get("name") for i in root.findall("interface")
               if i.get("name") == "org.freedesktop.DBus" for m in i.findall("method")}
    assert {"Hello", "RequestName", "AddMatch", "GetNameOwner"} <= methods


def test_unknown_option_fails():
    cp = run(daemon_cmd("--no-such-option"), check=False)
    assert cp.returncode != 0


def test_sigterm_clean_shutdown(tmp_path):
    b = DaemonBus(tmp_path)
    try:
        c = Client(b.address)  # a connected client does not delay shutdown
        assert os.path.exists(b.socket_path)
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=5) == 0, b.stderr_text()
        assert not os.path.exists(b.socket_path)
        c.close()
    finally:
        b.stop(check=False)


def test_sighup_reloads_and_keeps_running(tmp_path):
    b = DaemonBus(tmp_path)
    try:
        with Client(b.address) as c:
            c.bus("RequestName", "su", "com.example.Survives", 0)
            b.proc.send_signal(signal.SIGHUP)
            # still serving, state kept
            assert c.bus("GetNameOwner", "s", "com.example.Survives") == (c.unique_name,)
        assert_bus_alive(b)
    finally:
        b.stop(check=True)


def test_print_pid_to_fd(tmp_path):
    r, w = os.pipe()
    try:
        sock = tmp_path / "bus"
        proc = subprocess.Popen(
            daemon_cmd("--session", "--nofork", f"--address=unix:path={sock}",
                       "--print-address=1", f"--print-pid={w}"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w,),
            stdin=subprocess.DEVNULL)
        os.close(w)
        w = None
        try:
            import select
            ready, _, _ = select.select([r], [], [], TIMEOUT)
            assert ready, "no pid printed"
            pid_line = os.read(r, 100).decode().strip()
            assert pid_line == str(proc.pid)
            addr = proc.stdout.readline().decode().strip()
            assert addr.startswith(f"unix:path={sock},guid=")
            sasl_ping(str(sock))
        finally:
            proc.terminate()
            assert proc.wait(timeout=5) == 0
            proc.stdout.close()
            proc.stderr.close()
    finally:
        os.close(r)
        if w is not None:
            os.close(w)


def test_address_printed_has_guid(bus):
    assert bus.address.startswith(f"unix:path={bus.socket_path},guid=")
    guid = bus.address.split("guid=")[1]
    assert len(guid) == 32 and int(guid, 16) >= 0
    with Client(bus.address) as c:
        assert c.bus("GetId")


def test_unix_dir_address(tmp_path):
    d = tmp_path / "sockdir"
    d.mkdir()
    proc = subprocess.Popen(
        daemon_cmd("--session", "--nofork", f"--address=unix:dir={d}", "--print-address=1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        addr = proc.stdout.readline().decode().strip()
        assert addr.startswith(f"unix:path={d}/"), addr
        path = socket_path_of(addr)
        assert os.path.exists(path)
        with Client(addr) as c:
            assert c.bus("GetId")
        sasl_ping(path)
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        proc.stdout.close()
        proc.stderr.close()
    assert not os.path.exists(path)


def test_config_file_bus(bus_factory):
    b = bus_factory('<limit name="max_names_per_connection">3</limit>')
    with Client(b.address) as c:
        for i in range(2):  # the unique name counts as one
            assert c.bus("RequestName", "su", f"com.example.L{i}", 0) == (1,)
        e = c.bus_error("RequestName", "su", "com.example.L9", 0)
        assert e.name == "org.freedesktop.DBus.Error.LimitsExceeded", e


def test_invalid_config_file_fails(tmp_path):
    conf = write_config(tmp_path / "bad.conf", full="<busconfig><not-closed></busconfig>")
    cp = run(daemon_cmd(f"--config-file={conf}", "--nofork",
                        f"--address=unix:path={tmp_path}/bus", "--print-address=1"),
             check=False)
    assert cp.returncode != 0


# -- session runner --------------------------------------------------------------


def _daemon_path():
    return shutil.which(daemon_argv()[0]) or daemon_argv()[0]


def _sandbus_cli():
    cli = os.environ.get("SANDBUS_TEST_CLI")
    if cli:
        return cli
    return os.path.join(os.path.dirname(_daemon_path()), "sandbus")


RUNNERS = ["dbus-run-session", "sandbus-session"]


def runner_argv(kind):
    if kind == "sandbus-session":
        if not IS_SANDBUS:
            pytest.skip("`sandbus session` only exists when testing sandbus")
        return [_sandbus_cli(), "session", "--"]
    if shutil.which("dbus-run-session") is None:
        pytest.skip("dbus-run-session not installed")
    # dbus-run-session runs the daemon under test
    return ["dbus-run-session", f"--dbus-daemon={_daemon_path()}", "--"]


@pytest.fixture(params=RUNNERS)
def runner(request):
    return runner_argv(request.param)


def _clean_env():
    env = dict(os.environ)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return env


def test_session_runner_sets_address(runner):
    cp = run(runner + ["sh", "-c", 'echo "$DBUS_SESSION_BUS_ADDRESS"'], env=_clean_env())
    addr = cp.stdout.strip()
    assert addr.startswith("unix:"), addr
    assert "guid=" in addr


def test_session_runner_bus_usable(runner):
    cp = run(runner + ["sh", "-c",
                       "dbus-send --session --print-reply --dest=org.freedesktop.DBus "
                       "/org/freedesktop/DBus org.freedesktop.DBus.GetConnectionUnixProcessID "
                       "string:org.freedesktop.DBus && echo ADDR=$DBUS_SESSION_BUS_ADDRESS"],
             env=_clean_env())
    assert "uint32" in cp.stdout
    pid = int(cp.stdout.split("uint32")[1].split()[0])
    addr = cp.stdout.split("ADDR=")[1].strip()
    # after the command exits, the bus goes away
    wait_until(lambda: not _pid_alive(pid), what="session bus to exit")
    with pytest.raises(OSError):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(socket_path_of(addr))
        finally:
            s.close()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is as good as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("code", [0, 3, 42])
def test_session_runner_exit_status(runner, code):
    cp = run(runner + ["sh", "-c", f"exit {code}"], env=_clean_env(), check=False)
    assert cp.returncode == code, cp.stderr


def test_session_runner_with_python_client(runner):
    code = ("import os, jeepney.io.blocking as b; "
            "c = b.open_dbus_connection(os.environ['DBUS_SESSION_BUS_ADDRESS']); "
            "print('UNIQUE', c.unique_name)")
    import sys
    cp = run(runner + [sys.executable, "-c", code], env=_clean_env())
    assert "UNIQUE :1." in cp.stdout


@pytest.mark.skipif(not IS_SANDBUS, reason="dbus-daemon prints its address before it handles SIGTERM")
def test_sigterm_right_after_the_address_is_a_clean_shutdown(tmp_path):
    """A harness may stop the bus the moment it has read the address."""
    for i in range(10):
        sock = tmp_path / f"bus{i}"
        p = subprocess.Popen([*daemon_argv(), "--session", "--nofork", f"--address=unix:path={sock}",
                              "--print-address=1"], stdout=subprocess.PIPE)
        assert p.stdout.readline().startswith(b"unix:path=")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        assert not sock.exists()
        p.stdout.close()
