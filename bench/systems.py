"""The bus systems under test.

Each system starts a bus on a private unix socket in a temporary
directory, exposes

  * ``service_address`` - where the echo service and the signal emitter
    connect (always the bus itself),
  * ``client_address``  - where the load clients connect (the bus, or a
    proxy / container socket in front of it),
  * ``broker_pids``     - the processes whose CPU time and RSS are measured,

and stops everything it started. A system that cannot run here raises
``Unavailable`` with a note saying why; the runner then skips it.
"""

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import procstat, wire
from .conn import BusError, Conn
from .names import TALK_NAMES

START_TIMEOUT = 10.0


class Unavailable(Exception):
    """The system cannot be run on this machine (reason in the message)."""


def _read_line(proc, timeout):
    """First stdout line of ``proc`` within ``timeout`` seconds, else ''."""
    deadline = time.monotonic() + timeout
    line = b""
    fd = proc.stdout.fileno()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 4096)
        if not chunk:
            return ""
        line += chunk
    return line.decode().strip()


def _wait_connectable(address, timeout, proc=None):
    """Retry connect + Hello until it works; return the last error or None."""
    deadline = time.monotonic() + timeout
    err = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return "exited with status %s" % proc.returncode
        try:
            Conn(address, timeout=max(0.5, deadline - time.monotonic())).close()
            return None
        except (OSError, ConnectionError, BusError) as e:
            err = str(e)
            time.sleep(0.05)
    return "not reachable within %.0f s (%s)" % (timeout, err)


def _stop_process(proc, timeout=5.0):
    """SIGTERM the process group we created for ``proc``; SIGKILL if stuck."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _stderr_tail(path, n=400):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""


class System:
    name = "?"
    description = ""

    def __init__(self):
        self.tmpdir = None
        self.procs = []
        self.service_address = None
        self.client_address = None
        self.broker_pids = []

    def start(self):
        self.tmpdir = tempfile.mkdtemp(prefix="sandbus-bench-")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self):
        raise NotImplementedError

    def stop(self):
        for proc in reversed(self.procs):
            _stop_process(proc)
        self.procs = []
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def path(self, name):
        return os.path.join(self.tmpdir, name)

    def spawn(self, argv, log_name, **kw):
        log = open(self.path(log_name), "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log,
                                start_new_session=True, **kw)
        log.close()
        self.procs.append(proc)
        return proc

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _DaemonLike(System):
    """A bus launched with dbus-daemon's command line."""
    executable = "dbus-daemon"

    def bus_args(self):
        return ["--session"]

    def command(self):
        """The argv that runs the daemon, before its options."""
        exe = shutil.which(self.executable)
        if not exe:
            raise Unavailable("%s is not on PATH" % self.executable)
        return [exe]

    def env(self):
        """The daemon's environment (None: this one's)."""
        return None

    def _start(self):
        proc = self.spawn([*self.command(), *self.bus_args(), "--nofork",
                           "--address=unix:path=%s" % self.path("bus"),
                           "--print-address=1"], "daemon.log",
                          stdout=subprocess.PIPE, env=self.env())
        address = _read_line(proc, START_TIMEOUT)
        if not address:
            raise Unavailable("%s printed no address within %.0f s: %s" % (
                self.executable, START_TIMEOUT, _stderr_tail(self.path("daemon.log"))))
        err = _wait_connectable(address, START_TIMEOUT, proc)
        if err:
            raise Unavailable("%s: %s" % (self.executable, err))
        self.service_address = self.client_address = address
        self.broker_pids = [proc.pid]


class DbusDaemon(_DaemonLike):
    name = "dbus-daemon"
    description = "reference dbus-daemon (the baseline)"
    executable = "dbus-daemon"


class Sandbus(_DaemonLike):
    name = "sandbus"
    description = "sandbus-daemon with dbus-daemon's command line, pure Python (SANDBUS_PURE=1)"
    executable = "sandbus-daemon"

    def env(self):
        # the pure-Python row even where the installed build is compiled
        return dict(os.environ, SANDBUS_PURE="1")


BROKER_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_incoming_unix_fds">250000000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_match_rules_per_connection">100000</limit>
</busconfig>
"""


class DbusBroker(System):
    name = "dbus-broker"
    description = "dbus-broker via dbus-broker-launch under systemd-socket-activate"

    def _start(self):
        for tool in ("dbus-broker", "dbus-broker-launch", "systemd-socket-activate"):
            if not shutil.which(tool):
                raise Unavailable("%s is not on PATH" % tool)
        sock = self.path("bus")
        conf = self.path("broker.conf")
        with open(conf, "w") as f:
            f.write(BROKER_CONFIG)
        address = "unix:path=" + sock
        argv = ["systemd-socket-activate", "-E", "DBUS_SESSION_BUS_ADDRESS",
                "-l", sock, "dbus-broker-launch", "--scope", "user",
                "--config-file", conf]
        if not os.path.exists("/run/systemd/journal/socket"):
            if not shutil.which("unshare"):
                raise Unavailable("no journal socket and no unshare(1) to fake one")
            argv = ["unshare", "-m", "--propagation", "private",
                    sys.executable, "-m", "bench.journal_stub"] + argv
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address,
                   PYTHONPATH=_bench_pythonpath())
        proc = self.spawn(argv, "broker.log", env=env, stdout=subprocess.DEVNULL)
        # systemd-socket-activate binds at once but execs the launcher only
        # on the first connection, so wait for the socket, then connect.
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Unavailable("dbus-broker socket never appeared: %s"
                                  % _stderr_tail(self.path("broker.log")))
            time.sleep(0.02)
        err = _wait_connectable(address, max(0.5, deadline - time.monotonic()), proc)
        if err:
            raise Unavailable("dbus-broker: %s: %s" % (err, _stderr_tail(self.path("broker.log"))))
        pids = [p for p in procstat.descendants(proc.pid) if procstat.comm(p) == "dbus-broker"]
        if not pids:
            raise Unavailable("dbus-broker process not found under the launcher")
        self.service_address = self.client_address = address
        self.broker_pids = pids


def _bench_pythonpath():
    """PYTHONPATH that makes ``python -m bench.*`` work from any cwd."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = os.environ.get("PYTHONPATH")
    return root + (os.pathsep + old if old else "")


class XdgDbusProxy(DbusDaemon):
    name = "xdg-dbus-proxy"
    description = "dbus-daemon with xdg-dbus-proxy --filter in front of the client"

    def _start(self):
        if not shutil.which("xdg-dbus-proxy"):
            raise Unavailable("xdg-dbus-proxy is not on PATH")
        super()._start()
        proxy_sock = self.path("proxy")
        argv = ["xdg-dbus-proxy", self.service_address, proxy_sock, "--filter"]
        argv += ["--talk=%s" % n for n in TALK_NAMES]
        proc = self.spawn(argv, "proxy.log", stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(proxy_sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise Unavailable("xdg-dbus-proxy did not listen: %s"
                                  % _stderr_tail(self.path("proxy.log")))
            time.sleep(0.02)
        address = "unix:path=" + proxy_sock
        err = _wait_connectable(address, max(0.5, deadline - time.monotonic()), proc)
        if err:
            raise Unavailable("xdg-dbus-proxy: " + err)
        self.client_address = address
        self.broker_pids = self.broker_pids + [proc.pid]


# Containers1 access-rule flags (docs/containers.md)
OBJECT_PATH_IS_SUBTREE = 1
CALL_METHODS = 4
RECEIVE_BROADCASTS = 8
SEND_UNIX_FDS = 16
CONTAINER_RULES = 100


def container_rules(n=CONTAINER_RULES):
    """``n`` Allow rules: the ones the workloads need plus filler rules for
    names nobody owns, so the bus has a realistic rule set to search."""
    talk = OBJECT_PATH_IS_SUBTREE | CALL_METHODS | RECEIVE_BROADCASTS | SEND_UNIX_FDS
    rules = [(talk, name, "/", "") for name in TALK_NAMES]
    i = 0
    while len(rules) < n:
        rules.append((OBJECT_PATH_IS_SUBTREE | CALL_METHODS,
                      "org.example.Filler%d" % i, "/org/example/Filler%d" % i, ""))
        i += 1
    return rules


CONTAINED_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/session.conf</include>
  <limit name="max_connections_per_container">100000</limit>
  <!-- scaling_rules installs 100k rules through the instance -->
  <limit name="max_container_match_rules">1000000</limit>
</busconfig>
"""


class SandbusContained(Sandbus):
    name = "sandbus-contained"
    description = ("sandbus; clients connect to a mediated Containers1 instance "
                   "with %d Allow rules" % CONTAINER_RULES)

    def bus_args(self):
        # The stock session bus, except that one instance may take every
        # client of a workload (the default allows 16 connections) and
        # every rule of scaling_rules (the instance quota allows 50,000).
        conf = self.path("bus.conf")
        with open(conf, "w") as f:
            f.write(CONTAINED_CONFIG)
        return ["--config-file=%s" % conf]

    def _start(self):
        super()._start()
        self.manager = Conn(self.service_address)     # keeps the instance alive
        args = ("org.sandbus.Bench", "bench", {},
                {"Allow": ("a(usos)", container_rules())})
        try:
            _path, _socket_path, address = self.manager.call(wire.bus_call(
                "AddServer", "ssa{sv}a{sv}", args,
                interface="org.freedesktop.DBus.Containers1"))
        except BusError as e:
            if e.name.endswith((".UnknownMethod", ".UnknownInterface")):
                raise Unavailable("sandbus has no Containers1.AddServer yet (%s)" % e.name)
            raise Unavailable("AddServer failed: %s" % e)
        err = _wait_connectable(address, START_TIMEOUT)
        if err:
            raise Unavailable("container socket: " + err)
        self.client_address = address

    def stop(self):
        if getattr(self, "manager", None):
            self.manager.close()
            self.manager = None
        super().stop()


class SandbusCompiled(Sandbus):
    name = "sandbus-compiled"
    description = ("sandbus as pip installs it with a C compiler: the hot modules "
                   "compiled by Cython from the same .py (setup.py, src/sandbus/**/*.pxd)")

    def command(self):
        from . import compiled
        try:
            tree = compiled.build()
        except compiled.BuildError as e:
            raise Unavailable(str(e))
        return compiled.daemon_argv(tree)

    def env(self):
        from . import compiled
        return compiled.daemon_env()


def _start_sandbus_dbus_proxy(system, upstream):
    """sandbus-dbus-proxy as Flatpak starts it (--fd, one --filter group
    that talks to the workloads' names); its socket's address."""
    sock = system.path("flatpak-proxy")
    r, w = os.pipe()
    argv = [sys.executable, "-m", "sandbus.proxy", "--fd=%d" % w, upstream, sock, "--filter"]
    argv += ["--talk=%s" % n for n in TALK_NAMES]
    proc = system.spawn(argv, "flatpak-proxy.log", pass_fds=(w,), stdout=subprocess.DEVNULL)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], START_TIMEOUT)
        got = os.read(r, 1) if ready else b""
    finally:
        system.sync_fd = r  # held open while the system runs: closing it stops the proxy
    if got != b"x":
        raise Unavailable("sandbus-dbus-proxy was not ready: %s" % _stderr_tail(system.path("flatpak-proxy.log")))
    return proc, "unix:path=" + sock


class FlatpakNative(SandbusContained):
    name = "flatpak-native"
    description = ("sandbus; clients connect to the org.flatpak instance sandbus-dbus-proxy "
                   "makes for --filter --talk (no proxy in between)")

    def _start(self):
        Sandbus._start(self)
        proc, self.client_address = _start_sandbus_dbus_proxy(self, self.service_address)
        # the clients' connections are the bus's; the proxy process only holds the instance
        self.broker_pids = self.broker_pids + [proc.pid]

    def stop(self):
        if getattr(self, "sync_fd", None) is not None:
            os.close(self.sync_fd)
            self.sync_fd = None
        super().stop()


class FlatpakProxy(DbusDaemon):
    name = "flatpak-proxy"
    description = ("dbus-daemon; clients connect through sandbus-dbus-proxy, whose own filtering "
                   "proxy serves a bus without Containers1")

    def _start(self):
        super()._start()
        proc, self.client_address = _start_sandbus_dbus_proxy(self, self.service_address)
        self.broker_pids = self.broker_pids + [proc.pid]

    def stop(self):
        if getattr(self, "sync_fd", None) is not None:
            os.close(self.sync_fd)
            self.sync_fd = None
        super().stop()


ALL = [DbusDaemon, Sandbus, DbusBroker, XdgDbusProxy, SandbusContained, SandbusCompiled, FlatpakNative,
       FlatpakProxy]
BY_NAME = {cls.name: cls for cls in ALL}
BASELINE = DbusDaemon.name
