"""The system bus as distributions run it: started as root with the stock
/usr/share/dbus-1/system.conf (and its system.d snippets), it binds its
socket, becomes the configured <user> (messagebus) and serves unprivileged
users through that policy.  Needs root and the messagebus user; runs
against dbus-daemon too."""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from itutil import IS_SANDBUS, TIMEOUT, DaemonBus, wait_until

SYSTEM_CONF = Path("/usr/share/dbus-1/system.conf")
LOGIN1_SNIPPET = Path("/usr/share/dbus-1/system.d/org.freedesktop.login1.conf")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="starts the system bus as root"),
    pytest.mark.skipif(not SYSTEM_CONF.exists(), reason="no stock system.conf"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]


def _user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no {name} user")


@pytest.fixture
def system_bus():
    messagebus = _user("messagebus")
    _user("nobody")
    # Outside pytest's 0700 tmp tree, so that nobody can reach the socket;
    # owned by messagebus, so that the bus can still remove its socket after
    # dropping root (the stock /run/dbus case is the same for both daemons).
    workdir = Path(tempfile.mkdtemp(prefix="sandbus-sysbus-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    os.chown(workdir, messagebus.pw_uid, messagebus.pw_gid)
    bus = DaemonBus(workdir, config_file=SYSTEM_CONF, extra_args=["--nopidfile"])
    try:
        yield bus
    finally:
        bus.stop(check=True)
        shutil.rmtree(workdir, ignore_errors=True)


def status_ids(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def send(bus, *args, as_nobody=True):
    argv = ["dbus-send", f"--bus={bus.address}", "--print-reply", *args]
    if as_nobody:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)


DRIVER = ["--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"]


def test_drops_to_the_configured_user(system_bus):
    messagebus = pwd.getpwnam("messagebus")
    # dbus-daemon prints its address before it changes user
    wait_until(lambda: status_ids(system_bus.pid, "Uid") != ["0"] * 4, what="the bus to drop root")
    assert status_ids(system_bus.pid, "Uid") == [str(messagebus.pw_uid)] * 4
    assert status_ids(system_bus.pid, "Gid") == [str(messagebus.pw_gid)] * 4
    assert status_ids(system_bus.pid, "Groups") == []  # none of root's
    # nothing is left of root's capabilities but, in dbus-daemon's case,
    # CAP_AUDIT_WRITE (for its audit log; sandbus keeps none)
    audit_write = 1 << 29
    for field in ("CapEff", "CapPrm"):
        assert int(status_ids(system_bus.pid, field)[0], 16) & ~audit_write == 0
    # and the socket is reachable by everyone: policy decides, not the mode
    assert os.stat(system_bus.socket_path).st_mode & 0o777 == 0o777


def test_nobody_is_served_by_the_stock_policy(system_bus):
    got = send(system_bus, *DRIVER, "org.freedesktop.DBus.GetId")
    assert got.returncode == 0, got.stderr
    bus_id = got.stdout.split('"')[1]
    assert len(bus_id) == 32
    # the bus says who nobody is
    got = send(system_bus, *DRIVER, "org.freedesktop.DBus.GetConnectionUnixUser",
               "string:org.freedesktop.DBus")
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[-1] == str(pwd.getpwnam("messagebus").pw_uid)


def test_nobody_is_refused_what_system_conf_denies(system_bus):
    got = send(system_bus, *DRIVER, "org.freedesktop.DBus.UpdateActivationEnvironment",
               "dict:string:string:FOO,bar")
    assert got.returncode != 0
    assert "org.freedesktop.DBus.Error.AccessDenied" in got.stderr
    # and a method call to a name nobody is not let talk to
    got = send(system_bus, "--dest=org.freedesktop.DBus", "/", "org.freedesktop.DBus.Debug.Stats.GetStats")
    assert "org.freedesktop.DBus.Error.AccessDenied" in got.stderr


@pytest.mark.skipif(not LOGIN1_SNIPPET.exists(), reason="no login1 system.d snippet")
def test_system_d_snippets_are_loaded(system_bus):
    """system.conf denies owning any name; systemd's login1 snippet lets
    root own org.freedesktop.login1: root may, nobody may not."""
    args = [*DRIVER, "org.freedesktop.DBus.RequestName", "string:org.freedesktop.login1", "uint32:4"]
    got = send(system_bus, *args)
    assert "org.freedesktop.DBus.Error.AccessDenied" in got.stderr
    got = send(system_bus, *args, as_nobody=False)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[-1] == "1"  # PRIMARY_OWNER


@pytest.mark.skipif(not IS_SANDBUS, reason="Containers1 (Debian's dbus-daemon is built without it)")
def test_nobody_adds_a_container_after_the_drop(system_bus):
    """Container sockets live under /run/dbus, which only root may write:
    the bus makes their directory before it drops root, and then serves an
    AddServer from an unprivileged user."""
    import sys
    if not Path("/run/dbus").is_dir():
        pytest.skip("no /run/dbus")
    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
            "sandbus.cli", "container", f"--address={system_bus.address}", "add", "--type", "org.example.T",
            "--name", "n1", "--detach"]
    got = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    assert got.returncode == 0, got.stderr
    path, address = got.stdout.split()
    assert path.startswith("/org/freedesktop/DBus/Containers1/")
    sock = Path(address.split("path=", 1)[1].split(",")[0])
    assert sock.parent == Path("/run/dbus/containers")
    assert sock.stat().st_uid == pwd.getpwnam("messagebus").pw_uid
