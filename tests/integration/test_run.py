"""`sandbus run`: real bwrap, real clients inside (gdbus, jeepney under the
system python, notify-send), a notification-like service outside
(notify_service.py) that identifies the app the way a real one would."""

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tempfile

import pytest

from itutil import IS_DBUS_DAEMON, SYSTEM_PYTHON, TIMEOUT, Client, env_for, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
NOTIFY = "org.freedesktop.Notifications"
OTHER = "com.example.Other"
CIFACE = "org.freedesktop.DBus.Containers1"
GDBUS_NOTIFY = ["gdbus", "call", "--session", "--dest", NOTIFY, "--object-path", "/org/freedesktop/Notifications",
                "--method", "org.freedesktop.Notifications.Notify",
                "app", "0", "", "hello", "from the sandbox", "[]", "{}", "5000"]

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.timeout(60),
]
needs_sandbus = pytest.mark.skipif(IS_DBUS_DAEMON, reason="sandbus run needs Containers1 (sandbus)")


class Service:
    def __init__(self, bus, tmp_path, *names):
        self.log = tmp_path / f"service-{names[0]}.jsonl"
        self.log.touch()
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "notify_service.py"), bus.address,
                                      str(self.log), *names], stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        assert self.proc.stdout.readline().strip() == "ready"

    def records(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def env(bus):
    # Short, so the launcher's socket fits in sun_path there.
    runtime = tempfile.mkdtemp(prefix="sbrun-")
    yield env_for(bus, XDG_RUNTIME_DIR=runtime)
    shutil.rmtree(runtime)


@pytest.fixture
def services(bus, tmp_path):
    notify = Service(bus, tmp_path, NOTIFY)
    other = Service(bus, tmp_path, OTHER)
    yield notify, other
    notify.stop()
    other.stop()


def sandbus_run(args, env, check=None, timeout=TIMEOUT * 2):
    cp = subprocess.run([sys.executable, "-m", "sandbus.cli", "run", *args], env=env, capture_output=True,
                        text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check is not None:
        assert cp.returncode == check, f"exit {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    return cp


def leftovers(env):
    return sorted(os.listdir(env["XDG_RUNTIME_DIR"]))


def instances(bus):
    with Client(bus.address) as c:
        return c.call("org.freedesktop.DBus", "/org/freedesktop/DBus", CIFACE, "ListInstances")[0]


@needs_sandbus
def test_talk_name_is_reachable_and_the_service_identifies_the_app(bus, env, services, tmp_path):
    notify, _ = services
    cp = sandbus_run(["--app-id=org.example.Notifier", f"--talk-name={NOTIFY}", "--",
                      "sh", "-c", 'echo "pid inside: $$"; exec "$@"', "sh", *GDBUS_NOTIFY], env, check=0)
    assert "(uint32 1,)" in cp.stdout
    inside_pid = int(cp.stdout.split("pid inside: ")[1].split()[0])
    (rec,) = [r for r in notify.records() if r["member"] == "Notify"]
    assert rec["body"][3] == "hello"
    path, _creator, ctype, name, metadata = rec["instance"]
    assert ctype == "org.sandbus.Run" and name == "org.example.Notifier"
    assert metadata["AppId"] == ["s", "org.example.Notifier"]
    assert len(metadata["InstanceId"][1]) == 32
    assert metadata["Command"][1][:2] == ["sh", "-c"]
    assert f"--talk-name={NOTIFY}" in metadata["Permissions"][1]
    # The real pid, in the bus's pid namespace, of a process whose own
    # namespace calls it inside_pid: no /proc/PID/root needed.
    pid = rec["credentials"]["ProcessID"][1]
    assert pid != inside_pid
    # the instance is gone once sandbus run has returned
    assert path not in [i[0] for i in instances(bus)]
    assert leftovers(env) == []


@needs_sandbus
def test_the_service_sees_the_real_pid_of_the_sandboxed_process(bus, env, services):
    notify, _ = services
    probe = f"""
import os, sys
from jeepney import DBusAddress, new_method_call
from jeepney.io.blocking import open_dbus_connection
conn = open_dbus_connection(bus="SESSION")
n = DBusAddress("/org/freedesktop/Notifications", bus_name={NOTIFY!r}, interface={NOTIFY!r})
conn.send_and_get_reply(new_method_call(n, "Notify", "susssasa{{sv}}i",
                                        ("probe", 0, "", "pid", "", [], {{}}, 1)))
print("inside", os.getpid(), flush=True)
sys.stdin.read()
"""
    proc = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "run", f"--talk-name={NOTIFY}", "--",
                             SYSTEM_PYTHON, "-c", probe], env=env, stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)
    try:
        inside = int(proc.stdout.readline().split()[1])
        (rec,) = [r for r in notify.records() if r["member"] == "Notify"]
        pid = rec["credentials"]["ProcessID"][1]
        with open(f"/proc/{pid}/status") as f:
            nspid = [int(p) for p in f.read().split("NSpid:")[1].split("\n")[0].split()]
        # our pid namespace's number for it first, the sandbox's last
        assert nspid[0] == pid and nspid[-1] == inside and len(nspid) >= 2
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == SYSTEM_PYTHON.encode()
    finally:
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT)
    assert proc.returncode == 0


@needs_sandbus
def test_other_names_answer_as_missing_and_the_host_bus_is_unreachable(bus, env, services):
    probe = f"""
import os, socket, sys
from jeepney import DBusAddress, new_method_call, MessageType
from jeepney.io.blocking import open_dbus_connection
conn = open_dbus_connection(bus="SESSION")
bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus")
def err(name):
    r = conn.send_and_get_reply(new_method_call(bus, "GetNameOwner", "s", (name,)))
    return r.header.fields.get(4), r.body
hidden, missing = err({OTHER!r}), err("com.example.NoSuchName")
print("GETNAMEOWNER", hidden[0] == missing[0] == "org.freedesktop.DBus.Error.NameHasNoOwner",
      hidden[1][0].replace({OTHER!r}, "X") == missing[1][0].replace("com.example.NoSuchName", "X"))
names = conn.send_and_get_reply(new_method_call(bus, "ListNames")).body[0]
print("LISTNAMES", sorted(n for n in names if not n.startswith(":")))
for path in ({bus.socket_path.as_posix()!r}, "/run/dbus/system_bus_socket"):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        print("HOSTBUS reachable", path)
    except OSError as e:
        print("HOSTBUS unreachable", e.errno)
"""
    cp = sandbus_run([f"--talk-name={NOTIFY}", "--", SYSTEM_PYTHON, "-c", probe], env, check=0)
    assert "GETNAMEOWNER True True" in cp.stdout, cp.stdout + cp.stderr
    assert f"LISTNAMES ['org.freedesktop.DBus', '{NOTIFY}']" in cp.stdout, cp.stdout
    assert cp.stdout.count("HOSTBUS unreachable") == 2, cp.stdout
    # gdbus: the talked-to name works, the other is as missing as a name nobody owns
    cp = sandbus_run([f"--talk-name={NOTIFY}", "--", "gdbus", "call", "--session", "--dest", OTHER,
                      "--object-path", "/", "--method", "org.freedesktop.DBus.Peer.Ping"], env)
    assert cp.returncode != 0
    hidden = cp.stderr.replace(OTHER, "X")
    cp = sandbus_run([f"--talk-name={NOTIFY}", "--", "gdbus", "call", "--session", "--dest",
                      "com.example.NoSuchName", "--object-path", "/",
                      "--method", "org.freedesktop.DBus.Peer.Ping"], env)
    assert cp.returncode != 0 and cp.stderr.replace("com.example.NoSuchName", "X") == hidden


@needs_sandbus
def test_without_the_permission_the_call_is_refused(bus, env, services):
    notify, _ = services
    cp = sandbus_run(["--", *GDBUS_NOTIFY], env)
    assert cp.returncode != 0
    assert "ServiceUnknown" in cp.stderr or "NameHasNoOwner" in cp.stderr, cp.stderr
    assert not [r for r in notify.records() if r["member"] == "Notify"]


@needs_sandbus
@pytest.mark.skipif(shutil.which("notify-send") is None, reason="notify-send (libnotify-bin) is not installed")
def test_notify_send(bus, env, services):
    notify, _ = services
    sandbus_run([f"--talk-name={NOTIFY}", "--", "notify-send", "hello"], env, check=0)
    (rec,) = [r for r in notify.records() if r["member"] == "Notify"]
    assert rec["body"][3] == "hello"
    assert rec["instance"][4]["AppId"] == ["s", "org.sandbus.run.notify_send"]
    cp = sandbus_run(["--", "notify-send", "denied"], env)
    assert cp.returncode != 0
    assert [r["body"][3] for r in notify.records() if r["member"] == "Notify"] == ["hello"]


@needs_sandbus
def test_exit_status_and_instance_removed(bus, env):
    with Client(bus.address) as watcher:
        watcher.add_match(f"type='signal',interface='{CIFACE}',member='InstanceRemoved'")
        cp = sandbus_run(["--", "sh", "-c", "exit 7"], env, check=7)
        sig = watcher.wait_signal("InstanceRemoved", interface=CIFACE)
        assert sig.body[0].startswith("/org/freedesktop/DBus/Containers1/")
    assert instances(bus) == []
    assert leftovers(env) == []
    assert cp.stderr == ""


@needs_sandbus
def test_ctrl_c_reaches_the_app(bus, env, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "run", "--", "sh", "-c",
                             'trap "echo got INT; exit 42" INT; echo started; while :; do sleep 0.1; done'],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            # as from a terminal: scripts/test runs pytest as a background
                            # job, which starts with SIGINT ignored, and a shell cannot trap
                            # a signal ignored on entry (POSIX), so the app would never see it
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 42, err
    assert "got INT" in out
    wait_until(lambda: instances(bus) == [], TIMEOUT)


@needs_sandbus
def test_instance_stops_after_kill_9_of_the_launcher(bus, env):
    with Client(bus.address) as watcher:
        watcher.add_match(f"type='signal',interface='{CIFACE}',member='InstanceRemoved'")
        proc = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "run", "--", "sh", "-c",
                                 "echo started; exec sleep 60"], env=env, stdout=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        assert proc.stdout.readline().strip() == "started"
        (inst,) = instances(bus)
        # "started" is printed just before the shell execs sleep: wait for it
        deadline = time.monotonic() + TIMEOUT
        sleepers = _sandboxed_sleepers()
        while not sleepers and time.monotonic() < deadline:
            time.sleep(0.02)
            sleepers = _sandboxed_sleepers()
        assert sleepers
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sig = watcher.wait_signal("InstanceRemoved", interface=CIFACE)
        assert sig.body[0] == inst[0]
    assert instances(bus) == []
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in sleepers), TIMEOUT)
    # the host name of the socket went as soon as the sandbox had it
    assert leftovers(env) == []


def _sandboxed_sleepers():
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{p}/status") as f:
                nspid = f.read().split("NSpid:")[1].split("\n")[0].split()
        except (OSError, IndexError):
            continue
        if cmd[:2] == [b"sleep", b"60"] and len(nspid) >= 2:
            out.append(int(p))
    return out


@needs_sandbus
def test_learn_round_trip(bus, env, services):
    notify, _ = services
    cp = sandbus_run(["--learn", "--", *GDBUS_NOTIFY], env, check=0)
    assert "(uint32 1,)" in cp.stdout
    line = [x for x in cp.stderr.splitlines() if x.startswith("sandbus run ")]
    assert len(line) == 1, cp.stderr
    argv = shlex.split(line[0])
    assert argv[:2] == ["sandbus", "run"]
    opts = argv[2:argv.index("--")]
    assert any(o.startswith(f"--call={NOTIFY}=org.freedesktop.Notifications.Notify") or
               o == f"--talk-name={NOTIFY}" for o in opts), opts
    # the printed options replay the traffic...
    cp = sandbus_run(argv[2:], env, check=0)
    assert "(uint32 2,)" in cp.stdout
    # ...and deny a call outside it
    cp = sandbus_run([*opts, "--", "gdbus", "call", "--session", "--dest", OTHER, "--object-path", "/",
                      "--method", "org.freedesktop.DBus.Peer.Ping"], env)
    assert cp.returncode != 0
    assert instances(bus) == []


BAD = [
    (["--frobnicate", "--", "true"], "unknown option '--frobnicate'"),
    ([], "no command given"),
    (["--talk-name=not a name", "--", "true"], "--talk-name: 'not a name' is not a well-known bus name"),
    (["--talk-name=:1.5", "--", "true"], "is not a well-known bus name"),
    (["--call=org.example.X", "--", "true"], "--call needs NAME=RULE"),
    (["--call=org.example.X=NoDot", "--", "true"], "must be interface.method or interface.*"),
    (["--app-id=notreverse", "--", "true"], "--app-id: 'notreverse' is not a reverse-DNS application id"),
    (["--share=everything", "--", "true"], "--share: 'everything' is not one of network, ipc"),
    (["--filesystem=relative/path", "--", "true"], "is not host, home or an absolute path"),
    (["--filesystem=/no/such/dir", "--", "true"], "/no/such/dir does not exist"),
    (["--env=NOEQUALS", "--", "true"], "--env needs VAR=VALUE"),
    (["--system-talk-name=org.freedesktop.login1", "--", "true"], "the system bus is not supported yet"),
    (["--socket=system-bus", "--", "true"], "the system bus is not supported yet"),
    (["--talk-name"], "--talk-name needs a value"),
]


@needs_sandbus
@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_input_is_one_clear_line(bus, env, args, message):
    cp = sandbus_run(args, env)
    assert cp.returncode == 2
    assert cp.stderr.count("\n") == 1 and cp.stderr.startswith("sandbus run: "), cp.stderr
    assert message in cp.stderr, cp.stderr
    assert cp.stdout == ""
    assert leftovers(env) == [] and instances(bus) == []


@needs_sandbus
def test_missing_bwrap_and_missing_user_namespaces(bus, env, tmp_path):
    cp = sandbus_run(["--", "true"], dict(env, SANDBUS_BWRAP=str(tmp_path / "no-bwrap")))
    assert cp.returncode == 1
    assert cp.stderr == "sandbus run: bwrap (bubblewrap) is not installed: install the bubblewrap package\n"
    # A bwrap that fails as it does where unprivileged user namespaces are off.
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace, likely because the "
                    "kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n")
    fake.chmod(0o755)
    cp = sandbus_run(["--", "true"], dict(env, SANDBUS_BWRAP=str(fake)))
    assert cp.returncode == 1
    assert cp.stderr.splitlines()[-1].startswith("sandbus run: bwrap could not create the sandbox: "
                                                 "are unprivileged user namespaces enabled?")
    assert leftovers(env) == [] and instances(bus) == []


def test_a_bus_without_containers_is_refused_clearly(bus, env):
    if not IS_DBUS_DAEMON:
        pytest.skip("needs a bus without Containers1 (run with SANDBUS_TEST_DAEMON=dbus-daemon)")
    cp = sandbus_run(["--", "true"], env)
    assert cp.returncode == 1
    assert cp.stderr.startswith("sandbus run: the session bus has no Containers1 interface") or \
        cp.stderr.startswith("sandbus run: the bus refused the container instance"), cp.stderr
    assert leftovers(env) == []


@needs_sandbus
def test_socket_session_bus_is_unfiltered_but_identified(bus, env, services):
    notify, _ = services
    cp = sandbus_run(["--socket=session-bus", "--", "gdbus", "call", "--session", "--dest", OTHER,
                      "--object-path", "/org/freedesktop/Notifications",
                      "--method", "org.freedesktop.Notifications.GetCapabilities"], env, check=0)
    assert "(['body'],)" in cp.stdout
    _other = services[1]
    (rec,) = [r for r in _other.records() if r["member"] == "GetCapabilities"]
    assert rec["instance"][4]["Permissions"] == ["as", ["--socket=session-bus"]]


@needs_sandbus
def test_filesystem_home_and_network_are_private_unless_granted(bus, env, tmp_path):
    shared = tempfile.mkdtemp(prefix="sbrun-share-")
    try:
        with open(os.path.join(shared, "note"), "w") as f:
            f.write("visible")
        look = f"cat {shared}/note; touch {shared}/new && echo wrote; ls -A $HOME | wc -l"
        cp = sandbus_run(["--", "sh", "-c", look], env)
        assert "visible" not in cp.stdout and "wrote" not in cp.stdout
        assert cp.stdout.split()[-1] == "0"  # an empty $HOME
        cp = sandbus_run([f"--filesystem={shared}:ro", "--", "sh", "-c", look], env)
        assert cp.stdout.startswith("visible") and "wrote" not in cp.stdout
        cp = sandbus_run([f"--filesystem={shared}", "--", "sh", "-c", look], env)
        assert "wrote" in cp.stdout and os.path.exists(os.path.join(shared, "new"))
    finally:
        shutil.rmtree(shared)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    probe = ("import socket\ntry:\n socket.create_connection(('127.0.0.1', %d), 2)\n print('net up')\n"
             "except OSError:\n print('net down')\n" % port)
    try:
        assert sandbus_run(["--", SYSTEM_PYTHON, "-c", probe], env, check=0).stdout == "net down\n"
        assert sandbus_run(["--share=network", "--", SYSTEM_PYTHON, "-c", probe], env,
                           check=0).stdout == "net up\n"
    finally:
        server.close()
