"""`sandbus run`'s sub-sandbox portal (launcher/portal.py) driven by the
real flatpak-spawn (Debian's flatpak-xdg-utils) inside a real bwrap
sandbox: a narrower sibling (no network, fewer names), exit status and
SpawnExited, SpawnSignal, narrowing of what the parent lacks, the refusal
of non-sandbox spawns and of callers outside the app's instance, and the
scoped portal name beside a global owner of it."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from itutil import SYSTEM_PYTHON, TIMEOUT, Client, env_for, wait_until
from test_run import NOTIFY, Service, instances, leftovers, needs_sandbus, sandbus_run

FLATPAK_SPAWN = shutil.which("flatpak-spawn") or "/usr/libexec/flatpak-xdg-utils/flatpak-spawn"
PORTAL = "org.freedesktop.portal.Flatpak"
CIFACE = "org.freedesktop.DBus.Containers1"

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    pytest.mark.skipif(not os.access(FLATPAK_SPAWN, os.X_OK), reason="flatpak-spawn (flatpak-xdg-utils) is missing"),
    pytest.mark.timeout(90),
    needs_sandbus,
]

# Whether a TCP connection to the host's loopback works: the network
# namespace is the host's (shared) or a fresh one.
NET_PROBE = ("import socket,sys\ntry:\n socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)\n"
             " print('net up')\nexcept OSError:\n print('net down')\n")

# What the bus tells a connection about itself: the names it sees, its
# instance and that instance's parent (GetInstanceInfo's creator credentials).
BUS_PROBE = f"""
from jeepney import DBusAddress, new_method_call
from jeepney.io.blocking import open_dbus_connection
conn = open_dbus_connection(bus="SESSION")
bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="org.freedesktop.DBus")
c1 = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus", interface="{CIFACE}")
def call(addr, member, sig="", body=()):
    return conn.send_and_get_reply(new_method_call(addr, member, sig, body)).body
print("has-notify", call(bus, "NameHasOwner", "s", ({NOTIFY!r},))[0])
inst = call(c1, "GetConnectionInstance", "s", (conn.unique_name,))[0]
creds = call(c1, "GetInstanceInfo", "o", (inst,))[0]
print("instance", inst, "parent", creds.get("org.freedesktop.DBus.Containers1.Instance", ("", "-"))[1])
"""


@pytest.fixture
def env(bus):
    runtime = tempfile.mkdtemp(prefix="sbrun-")
    home = tempfile.mkdtemp(prefix="sbhome-")
    yield env_for(bus, XDG_RUNTIME_DIR=runtime, HOME=home)
    shutil.rmtree(runtime)
    shutil.rmtree(home)


@pytest.fixture
def notify(bus, tmp_path):
    s = Service(bus, tmp_path, NOTIFY)
    yield s
    s.stop()


@pytest.fixture
def port():
    server = __import__("socket").socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def inside(script: str) -> list:
    """sh -c SCRIPT, with flatpak-spawn as $FS."""
    return ["sh", "-c", f"FS={FLATPAK_SPAWN}; {script}"]


def test_flatpak_spawn_sandbox_no_network_starts_a_narrower_sibling(bus, env, port):
    script = (f"{SYSTEM_PYTHON} -c \"$1\" {port}; "
              f"$FS --sandbox --no-network {SYSTEM_PYTHON} -c \"$1\" {port}; "
              f"$FS --sandbox {SYSTEM_PYTHON} -c \"$1\" {port}; "
              "$FS --sandbox sh -c 'exit 7'; echo \"status $?\"")
    cp = sandbus_run(["--share=network", "--", *inside(script), "sh", NET_PROBE], env, check=0)
    # the parent has the network; the sibling asked for none has none, and
    # the one that did not ask keeps the parent's
    assert cp.stdout.splitlines() == ["net up", "net down", "net up", "status 7"], cp.stderr
    assert instances(bus) == [] and leftovers(env) == []


def test_what_the_parent_lacks_is_not_given(bus, env, port):
    # no --share=network: a sibling asking for the network does not get it
    script = f"$FS --sandbox {SYSTEM_PYTHON} -c \"$1\" {port}"
    cp = sandbus_run(["--", *inside(script), "sh", NET_PROBE], env, check=0)
    assert cp.stdout == "net down\n", cp.stderr


def test_the_siblings_bus_is_a_nested_instance_with_fewer_names(bus, env, notify):
    script = (f"{SYSTEM_PYTHON} -c \"$1\"; "
              f"$FS --sandbox --sandbox-flag=allow-dbus {SYSTEM_PYTHON} -c \"$1\"; "
              "$FS --sandbox sh -c 'echo \"bus:${DBUS_SESSION_BUS_ADDRESS:-none}\"; ls /run/user/*/'")
    cp = sandbus_run([f"--talk-name={NOTIFY}", "--", *inside(script), "sh", BUS_PROBE], env, check=0)
    lines = cp.stdout.splitlines()
    assert lines[0] == "has-notify True", cp.stderr
    parent = lines[1].split()[1]
    assert lines[1] == f"instance {parent} parent -"
    # the sibling's instance is nested in the app's, and NOTIFY is gone
    assert lines[2] == "has-notify False"
    child = lines[3].split()[1]
    assert child != parent and lines[3] == f"instance {child} parent {parent}"
    # without allow-dbus, no bus at all
    assert lines[4:] == ["bus:none"]
    assert instances(bus) == []


def test_exit_by_signal_and_spawn_signal(bus, env):
    # flatpak-spawn forwards the TERM it gets (SpawnSignal); the sibling's
    # death by a signal comes back as 128 + the signal (SpawnExited's status)
    script = ("$FS --sandbox sh -c 'trap \"echo got TERM; exit 9\" TERM; echo up; "
              "while :; do sleep 0.05; done' & FSP=$!; sleep 2; "
              "kill -TERM $FSP; wait $FSP; echo \"status $?\"; "
              "$FS --sandbox sh -c 'kill -KILL $$'; echo \"killed $?\"")
    # the sibling's stdout is ours: flatpak-spawn passes its fds
    cp = sandbus_run(["--", *inside(script)], env)
    assert "up" in cp.stdout and "got TERM" in cp.stdout, (cp.stdout, cp.stderr)
    assert "status 9" in cp.stdout
    assert "killed 137" in cp.stdout


def test_non_sandbox_spawns_are_refused_clearly(bus, env):
    cp = sandbus_run(["--", *inside("$FS true; echo \"status $?\"")], env, check=0)
    assert "status 1" in cp.stdout
    assert "sandbus run spawns only new sandboxes" in cp.stderr


def test_sandbox_expose_only_from_the_sandbox_directory(bus, env):
    app_id = "org.example.Exposer"
    shared = os.path.join(env["HOME"], ".var", "app", app_id, "sandbox")
    os.makedirs(shared)
    with open(os.path.join(shared, "doc"), "w") as f:
        f.write("exposed\n")
    os.symlink("/etc/hostname", os.path.join(shared, "link"))
    script = (f"cat {shared}/doc; "
              f"$FS --sandbox --sandbox-expose-ro=doc sh -c 'cat {shared}/doc; echo x >> {shared}/doc || echo ro'; "
              f"$FS --sandbox sh -c 'cat {shared}/doc || echo hidden'; "
              "$FS --sandbox --sandbox-expose=link true; echo \"link $?\"")
    cp = sandbus_run([f"--app-id={app_id}", "--", *inside(script)], env, check=0)
    out = cp.stdout.splitlines()
    assert out[:3] == ["exposed", "exposed", "ro"], cp.stderr
    assert out[3] == "hidden"
    assert out[4] == "link 1" and "symbolic link" in cp.stderr


def test_the_portal_name_is_scoped_beside_a_global_owner(bus, env, tmp_path):
    # a "real" flatpak-portal owns the name on the bus
    real = Service(bus, tmp_path, PORTAL)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "run", "--", *inside(
            "$FS --sandbox sh -c 'exit 5'; echo \"status $?\"; echo waiting; read x || true")],
            env=env, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "status 5"
            assert proc.stdout.readline().strip() == "waiting"
            ((path, _t, _n, launcher, _c, _l),) = instances(bus)
            with Client(bus.address) as outsider:
                # outside the instance, the name is the real portal's
                owner = outsider.bus("GetNameOwner", "s", PORTAL)[0]
                assert owner != launcher and owner.startswith(":")
                # and the launcher answers nobody outside its sandbox
                with pytest.raises(Exception) as e:
                    outsider.call(launcher, "/org/freedesktop/portal/Flatpak", PORTAL, "Spawn",
                                  "ayaaya{uh}a{ss}ua{sv}", (b"/\0", [b"true\0"], {}, {}, 4, {}))
                assert "AccessDenied" in str(e.value) and "its own sandbox" in str(e.value)
        finally:
            proc.stdin.close()
            proc.wait(timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr.read()
        assert not [r for r in real.records() if r["member"] == "Spawn"]
    finally:
        real.stop()


def test_watch_bus_ends_the_sibling_with_its_caller(bus, env):
    from test_run import _sandboxed_sleepers
    script = ("$FS --sandbox --watch-bus sleep 60 & P=$!; $FS --sandbox sleep 60 & Q=$!; "
              "echo spawned; read x; kill -9 $P $Q; echo killed; read y || true")
    proc = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "run", "--", *inside(script)], env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spawned"
        wait_until(lambda: len(_sandboxed_sleepers()) == 2, TIMEOUT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "killed"
        # the watched one goes with its flatpak-spawn; the other stays
        # until the app exits
        wait_until(lambda: len(_sandboxed_sleepers()) == 1, TIMEOUT)
    finally:
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT)
    wait_until(lambda: _sandboxed_sleepers() == [], TIMEOUT)


# Spawn called by hand from inside: every bad request gets one clear error
# and the portal goes on serving; a good one runs and its exit is signalled.
RAW_PROBE = """
from jeepney import DBusAddress, new_method_call, MessageType, HeaderFields
from jeepney.io.blocking import open_dbus_connection
conn = open_dbus_connection(bus="SESSION")
p = DBusAddress("/org/freedesktop/portal/Flatpak", bus_name="org.freedesktop.portal.Flatpak",
                interface="org.freedesktop.portal.Flatpak")
def spawn(argv, flags, options={}, cwd=b"/\\0", envs={}):
    r = conn.send_and_get_reply(new_method_call(p, "Spawn", "ayaaya{uh}a{ss}ua{sv}",
                                                (cwd, argv, {}, envs, flags, options)))
    if r.header.message_type == MessageType.error:
        return r.header.fields[HeaderFields.error_name].rsplit(".", 1)[1] + ": " + r.body[0]
    return r.body[0]
print(spawn([b"true\\0"], 0))
print(spawn([b"true\\0"], 4 | 1024))
print(spawn([], 4))
print(spawn([b"a\\0b\\0"], 4))
print(spawn([b"true\\0"], 4, {"sandbox-flags": ("s", "x")}))
print(spawn([b"true\\0"], 4, {"sandbox-flags": ("u", 4096)}))
print(spawn([b"true\\0"], 4, {"sandbox-a11y-own-names": ("as", ["x.y.z"])}))
print(spawn([b"true\\0"], 4, {"sandbox-expose": ("as", ["doc"])}))
print(spawn([b"true\\0"], 4, envs={"A=B": "1"}))
r = conn.send_and_get_reply(new_method_call(p, "SpawnSignal", "uub", (12345, 15, False)))
print(r.header.fields[HeaderFields.error_name])
props = DBusAddress("/org/freedesktop/portal/Flatpak", bus_name="org.freedesktop.portal.Flatpak",
                    interface="org.freedesktop.DBus.Properties")
print("version", conn.send_and_get_reply(new_method_call(props, "Get", "ss",
      ("org.freedesktop.portal.Flatpak", "version"))).body[0][1])
pid = spawn([b"sh\\0", b"-c\\0", b"exit 4\\0"], 4)
while True:
    m = conn.receive()
    if m.header.message_type == MessageType.signal and m.header.fields[HeaderFields.member] == "SpawnExited":
        print("exited", m.body[0] == pid, m.body[1] >> 8)
        break
"""


def test_bad_spawn_requests_get_clear_errors(bus, env):
    cp = sandbus_run(["--", SYSTEM_PYTHON, "-c", RAW_PROBE], env, check=0)
    out = cp.stdout.splitlines()
    assert out[0].startswith("NotSupported: sandbus run spawns only new sandboxes"), cp.stderr
    assert out[1] == "InvalidArgs: Unsupported flags enabled: 0x400"
    assert out[2] == "InvalidArgs: No command given"
    assert out[3].startswith("InvalidArgs: cannot pass that command line")
    assert out[4] == "InvalidArgs: option sandbox-flags must have type u, not s"
    assert out[5] == "InvalidArgs: Unsupported sandbox flags enabled: 0x1000"
    assert out[6].startswith("NotSupported: sandbus run does not support the sandbox-a11y-own-names option")
    assert out[7].startswith("InvalidArgs: sandbox-expose: the app has no sandbox directory")
    assert out[8].startswith("InvalidArgs: cannot pass that command line or environment")
    assert out[9] == "org.freedesktop.DBus.Error.UnixProcessIdUnknown"
    assert out[10] == "version 5"
    assert out[11] == "exited True 4"
    assert instances(bus) == [] and leftovers(env) == []



def test_an_app_reaped_before_the_portal_serves_is_just_its_exit_status():
    # The app may exit, and be reaped by the poll that watches bwrap's block
    # fd, before the launcher starts serving: its status, no launcher error.
    from sandbus.launcher.options import parse_run_args
    from sandbus.launcher.run import Launcher
    la = Launcher(parse_run_args(["--", "true"]), shutil.which("bwrap"), "unix:path=/nonexistent")
    la.proc = subprocess.Popen(["sh", "-c", "exit 3"])
    la.proc.wait()
    assert la._wait_exit() == 3


PRELOAD_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void ran(void) {
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) { write(fd, "ran\n", 4); close(fd); }
}
"""


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the preloaded library")
def test_a_callers_ld_preload_never_runs_on_the_host(bus, env, tmp_path):
    # The app writes a library into its sandbox directory and names it in
    # Spawn's env: bwrap runs on the host, so it must not get it (launcher/
    # portal.py starts bwrap with an empty environment); the sibling does.
    app_id = "org.example.Preloader"
    shared = os.path.join(env["HOME"], ".var", "app", app_id, "sandbox")
    os.makedirs(shared)
    marker = tmp_path / "ran-on-the-host"
    src = tmp_path / "evil.c"
    src.write_text(PRELOAD_C)
    lib = os.path.join(shared, "evil.so")
    subprocess.run(["gcc", "-shared", "-fPIC", f"-DMARKER=\"{marker}\"", "-o", lib, str(src)], check=True)
    # the library works: preloaded on the host, it leaves its marker
    subprocess.run(["true"], env=dict(os.environ, LD_PRELOAD=lib), check=True)
    assert marker.read_text() == "ran\n"
    marker.unlink()
    script = f"$FS --sandbox --env=LD_PRELOAD={lib} sh -c 'echo \"preload:$LD_PRELOAD\"'; echo \"status $?\""
    cp = sandbus_run([f"--app-id={app_id}", "--", *inside(script)], env, check=0)
    assert cp.stdout.splitlines() == [f"preload:{lib}", "status 0"], cp.stderr
    assert not marker.exists(), "the caller's LD_PRELOAD ran on the host"


# The app spoofs the bus's NameOwnerChanged for its own name, unicast to
# the portal: a WATCH_BUS sibling of its must live on (SpawnExited comes
# only when SpawnSignal ends it).
SPOOF_PROBE = """
from jeepney import DBusAddress, new_method_call, new_signal, MessageType, HeaderFields
from jeepney.io.blocking import open_dbus_connection
conn = open_dbus_connection(bus="SESSION")
p = DBusAddress("/org/freedesktop/portal/Flatpak", bus_name="org.freedesktop.portal.Flatpak",
                interface="org.freedesktop.portal.Flatpak")
r = conn.send_and_get_reply(new_method_call(p, "Spawn", "ayaaya{uh}a{ss}ua{sv}",
                                            (b"/\\0", [b"sleep\\0", b"60\\0"], {}, {}, 4 | 16, {})))
pid = r.body[0]
sig = new_signal(DBusAddress("/org/freedesktop/DBus", interface="org.freedesktop.DBus"), "NameOwnerChanged",
                 "sss", (conn.unique_name, conn.unique_name, ""))
sig.header.fields[HeaderFields.destination] = "org.freedesktop.portal.Flatpak"
conn.send(sig)
conn.send_and_get_reply(new_method_call(DBusAddress("/", bus_name="org.freedesktop.portal.Flatpak",
                                                    interface="org.freedesktop.DBus.Peer"), "Ping"))
def exited(timeout):
    try:
        while True:
            m = conn.receive(timeout=timeout)
            if m.header.message_type == MessageType.signal and m.header.fields[HeaderFields.member] == "SpawnExited":
                return m.body[1] >> 8  # bwrap's exit code: 128 + the signal
    except TimeoutError:
        return None
print("after spoof", exited(2))
conn.send_and_get_reply(new_method_call(p, "SpawnSignal", "uub", (pid, 15, False)))
print("after SpawnSignal", exited(5))
"""


def test_a_spoofed_name_owner_changed_ends_no_sibling(bus, env):
    cp = sandbus_run(["--", SYSTEM_PYTHON, "-c", SPOOF_PROBE], env, check=0)
    assert cp.stdout.splitlines() == ["after spoof None", "after SpawnSignal 143"], cp.stderr
