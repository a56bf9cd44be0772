"""`sandbus install` / `sandbus uninstall` (src/sandbus/install.py) on a
--root tree, the shipped units checked by systemd itself
(`systemd-analyze verify`), and the user unit's ExecStart run the way
systemd runs it: socket-activated (`systemd-socket-activate`) with a
NOTIFY_SOCKET, serving a real client."""

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from itutil import IS_SANDBUS, TIMEOUT, daemon_argv, wait_until

pytestmark = pytest.mark.skipif(not IS_SANDBUS, reason="sandbus's own installer")

USER_DIR = "etc/systemd/user"
SYSTEM_DIR = "etc/systemd/system"


def daemon_path():
    return shutil.which(daemon_argv()[0]) or pytest.skip("sandbus-daemon is not on PATH")


def sandbus(*args, user=None, check=True):
    argv = [sys.executable, "-m", "sandbus.cli", *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def listening(path) -> bool:
    """The socket file exists and accepts: systemd-socket-activate binds
    before it listens.  (This connection is the one that starts the bus.)"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tree(root: Path) -> dict:
    """Every entry under root: symlink targets and file texts."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_text()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture
def root(tmp_path):
    """A distribution's unit directories: dbus-daemon's dbus.service, and
    (as on Debian with dbus-broker) an /etc alias to dbus-broker."""
    r = tmp_path / "root"
    for scope in ("user", "system"):
        lib = r / "usr/lib/systemd" / scope
        lib.mkdir(parents=True)
        (lib / "dbus.service").write_text(
            "[Service]\nExecStart=/usr/bin/dbus-daemon --%s --address=systemd:\n"
            % ("session" if scope == "user" else "system"))
        (lib / "dbus-broker.service").write_text("[Service]\nExecStart=/usr/bin/dbus-broker-launch\n")
    (r / USER_DIR).mkdir(parents=True)
    (r / USER_DIR / "dbus.service").symlink_to("/usr/lib/systemd/user/dbus-broker.service")
    return r


@pytest.mark.parametrize("scope,unit_dir", [("user", USER_DIR), ("system", SYSTEM_DIR)])
def test_dry_run_prints_and_changes_nothing(root, scope, unit_dir):
    before = tree(root)
    out = sandbus("install", f"--{scope}", "--dry-run", "--root", str(root), "--daemon", daemon_path()).stdout
    assert tree(root) == before
    d = root / unit_dir
    assert f"would write    {d}/sandbus.service (ExecStart={daemon_path()} " in out
    assert f"would link     {d}/dbus.service -> sandbus.service" in out
    assert "skip     systemctl daemon-reload (--root" in out
    if scope == "user":
        assert f"would save     {d}/dbus.service (-> /usr/lib/systemd/user/dbus-broker.service) as " \
               f"{d}/dbus.service.before-sandbus" in out
    else:
        assert "save" not in out
        assert "would mkdir" in out


@pytest.mark.parametrize("scope,unit_dir", [("user", USER_DIR), ("system", SYSTEM_DIR)])
def test_install_then_uninstall_restores_the_tree(root, scope, unit_dir):
    before = tree(root)
    out = sandbus("install", f"--{scope}", "--root", str(root), "--daemon", daemon_path()).stdout
    d = root / unit_dir
    assert os.readlink(d / "dbus.service") == "sandbus.service"
    unit = (d / "sandbus.service").read_text()
    flag = "--session" if scope == "user" else "--system"
    assert f"ExecStart={daemon_path()} {flag} --address=systemd: --nofork" in unit
    assert "Type=notify" in unit and "Sockets=dbus.socket" in unit and "Alias=dbus.service" in unit
    assert f"dbus.service is now {d}/sandbus.service (sandbus-daemon)" in out
    assert f"Way back: sandbus uninstall --{scope}" in out

    out = sandbus("uninstall", f"--{scope}", "--root", str(root)).stdout
    after = tree(root)
    # only the directory install had to make may remain
    assert set(after) - set(before) <= {unit_dir}
    assert {k: after.get(k) for k in before} == before
    if scope == "user":
        assert f"restore  {d}/dbus.service (-> /usr/lib/systemd/user/dbus-broker.service)" in out
        assert "(dbus-broker-launch)" in out.splitlines()[-1]
    else:
        lib = root / "usr/lib/systemd/system/dbus.service"
        assert out.splitlines()[-1] == f"dbus.service is now {lib} (dbus-daemon)"


def test_install_and_uninstall_are_idempotent(root):
    args = ("--user", "--root", str(root))
    sandbus("install", *args, "--daemon", daemon_path())
    once = tree(root)
    out = sandbus("install", *args, "--daemon", daemon_path()).stdout
    assert tree(root) == once
    assert "nothing to change" in out and "write" not in out
    sandbus("uninstall", *args)
    twice = tree(root)
    out = sandbus("uninstall", *args).stdout
    assert tree(root) == twice
    assert "nothing to change" in out


def test_foreign_unit_is_not_overwritten(root):
    d = root / SYSTEM_DIR
    d.mkdir(parents=True)
    (d / "sandbus.service").write_text("[Service]\nExecStart=/bin/true\n")
    done = sandbus("install", "--system", "--root", str(root), "--daemon", daemon_path(), check=False)
    assert done.returncode == 1
    assert "was not written by sandbus install" in done.stderr
    assert (d / "sandbus.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert not (d / "dbus.service").exists()
    # and uninstall leaves it too
    out = sandbus("uninstall", "--system", "--root", str(root)).stdout
    assert "not written by sandbus install, left alone" in out
    assert (d / "sandbus.service").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_refuses_without_permission(root):
    # a tree nobody may read but not write, like /etc for a normal user
    shared = Path(tempfile.mkdtemp(prefix="sandbus-install-", dir="/tmp"))
    try:
        os.chmod(shared, 0o755)
        target = shared / "root"
        shutil.copytree(root, target, symlinks=True)
        for p in [target, *target.rglob("*")]:
            if not p.is_symlink():
                os.chmod(p, 0o755 if p.is_dir() else 0o644)
        before = tree(target)
        done = sandbus("install", "--system", "--root", str(target), "--daemon", daemon_path(),
                       user="nobody", check=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert done.stderr.strip() == (f"sandbus install: cannot write {target}/{SYSTEM_DIR}: permission denied "
                                       "(run it as root); nothing changed")
        assert tree(target) == before
    finally:
        shutil.rmtree(shared)


def test_scope_is_required():
    done = sandbus("install", check=False)
    assert done.returncode == 2
    assert "one of the arguments --user --system is required" in done.stderr


# -- the units, as systemd sees them -----------------------------------------------

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


@needs_analyze
@pytest.mark.parametrize("scope,unit_dir", [("user", USER_DIR), ("system", SYSTEM_DIR)])
def test_units_pass_systemd_analyze_verify(root, tmp_path, scope, unit_dir):
    sandbus("install", f"--{scope}", "--root", str(root), "--daemon", daemon_path())
    unit = root / unit_dir / "sandbus.service"
    argv = ["systemd-analyze"] + (["--user"] if scope == "user" else []) + ["verify", str(unit)]
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sandbus.service" not in done.stderr, done.stderr   # no complaint about our unit
    # and the check can fail: a unit whose ExecStart is missing does
    bad = tmp_path / "bad" / "sandbus.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace(daemon_path(), "/nonexistent/sandbus-daemon"))
    done = subprocess.run(argv[:-1] + [str(bad)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0 and "/nonexistent/sandbus-daemon" in done.stderr


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
def test_user_unit_execstart_socket_activated(root, tmp_path):
    """The ExecStart= of the installed user unit, started by
    systemd-socket-activate on the first connection to the socket (as
    dbus.socket does), tells NOTIFY_SOCKET READY=1 and serves that client."""
    sandbus("install", "--user", "--root", str(root), "--daemon", daemon_path())
    unit = (root / USER_DIR / "sandbus.service").read_text()
    (exec_start,) = [line[len("ExecStart="):] for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert "--address=systemd:" in argv and "--nofork" in argv

    sock_path = tmp_path / "bus"
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(TIMEOUT)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), NOTIFY_SOCKET=str(tmp_path / "notify"))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(sock_path),
                             "-E", "PYTHONPATH", "-E", "XDG_RUNTIME_DIR", "-E", "NOTIFY_SOCKET",
                             "-E", "SANDBUS_PURE", *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: listening(sock_path) or proc.poll() is not None, what="the socket")
        assert proc.poll() is None, proc.stdout.read()
        done = subprocess.run(["dbus-send", f"--bus=unix:path={sock_path}", "--print-reply",
                               "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus.GetNameOwner", "string:org.freedesktop.DBus"],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert 'string "org.freedesktop.DBus"' in done.stdout
        assert notify.recv(4096) == b"READY=1"
        # the same process (systemd-socket-activate execs the unit's command)
        assert b"\0--address=systemd:\0" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    finally:
        notify.close()
        proc.terminate()
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stdout.read()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")
def test_user_install_by_a_user_goes_to_their_config(tmp_path):
    """Without root and --root: that user's ~/.config/systemd/user, which
    systemd reads before /etc/systemd/user, so only their logins change."""
    home = Path(tempfile.mkdtemp(prefix="sandbus-home-", dir="/tmp"))
    try:
        os.chown(home, 65534, 65534)
        env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m",
                "sandbus.cli"]
        done = subprocess.run(argv + ["install", "--user", "--daemon", daemon_path()],
                              capture_output=True, text=True, timeout=TIMEOUT, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        d = home / ".config/systemd/user"
        assert os.readlink(d / "dbus.service") == "sandbus.service"
        assert (d / "sandbus.service").stat().st_uid == 65534
        assert f"dbus.service is now {d}/sandbus.service (sandbus-daemon)" in done.stdout
        reload_line = next(line for line in done.stdout.splitlines() if "daemon-reload" in line)
        assert "systemctl --user daemon-reload" in reload_line
        done = subprocess.run(argv + ["uninstall", "--user"], capture_output=True, text=True, timeout=TIMEOUT,
                              env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(os.listdir(d)) == []
    finally:
        shutil.rmtree(home)


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate")
@pytest.mark.skipif(os.geteuid() != 0, reason="the system unit starts as root")
def test_system_unit_execstart_socket_activated(root):
    """The installed system unit's ExecStart=, as systemd runs it: as root,
    with the socket passed in; it becomes messagebus, then says READY=1
    (to a socket anyone may write, as /run/systemd/notify), and a client
    running as nobody is served through the stock system.conf."""
    import pwd
    if not Path("/usr/share/dbus-1/system.conf").exists():
        pytest.skip("no stock system.conf")
    messagebus = pwd.getpwnam("messagebus")
    sandbus("install", "--system", "--root", str(root), "--daemon", daemon_path())
    unit = (root / SYSTEM_DIR / "sandbus.service").read_text()
    (exec_start,) = [line[len("ExecStart="):] for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start)
    assert argv[1] == "--system"
    shared = Path(tempfile.mkdtemp(prefix="sandbus-sysunit-", dir="/tmp"))
    os.chmod(shared, 0o755)
    sock_path = shared / "system_bus_socket"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(shared / "notify"))
    os.chmod(shared / "notify", 0o777)
    notify.settimeout(TIMEOUT)
    env = dict(os.environ, NOTIFY_SOCKET=str(shared / "notify"))
    proc = subprocess.Popen(["systemd-socket-activate", "-l", str(sock_path), "-E", "PYTHONPATH",
                             "-E", "NOTIFY_SOCKET", "-E", "SANDBUS_PURE", *argv],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: listening(sock_path) or proc.poll() is not None, what="the socket")
        assert proc.poll() is None, proc.stdout.read()
        os.chmod(sock_path, 0o666)   # systemd's SocketMode= default; systemd-socket-activate has none
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               "dbus-send", f"--bus=unix:path={sock_path}", "--print-reply",
                               "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus.GetConnectionUnixUser", "string:org.freedesktop.DBus"],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-1] == str(messagebus.pw_uid)
        assert notify.recv(4096) == b"READY=1"
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert f"Uid:\t{messagebus.pw_uid}\t{messagebus.pw_uid}" in status
    finally:
        notify.close()
        proc.terminate()
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(shared, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout.read()
