"""The bus daemon process: configuration, listeners, the event loop, and
dbus-daemon's process conventions (fork, print-address/pid, pidfile,
systemd readiness, signals)."""

import asyncio
import logging
import os
import secrets
import signal
import socket
import stat
import sys
import time

from .config import ConfigError, Policy, load_config, load_standard
from .config.policy import Creds
from .config.services import ServiceCache
from .containers.manager import ContainerManager
from .core.bus import Bus, BusSettings
from .core.mediation import Mediation
from .core.policy import PolicyEnforcer
from .io.container_sockets import ContainerSockets
from .io.fds import close_fds, dup_fds
from .io.listener import AuthSettings, listen
from .wire.sasl import SUPPORTED_MECHANISMS
from .io.server import Server, install_signal_handlers, new_event_loop
from .core.activation import Activation  # service activation
from .io import socket_activation
from .io.spawner import Spawner
from .io.privileges import PrivilegeError, daemon_user, drop_to
from .io.system_log import JOURNAL_SOCKET, SystemLogHandler  # noqa: F401  (JOURNAL_SOCKET: tests point it elsewhere)

log = logging.getLogger("sandbus.daemon")

MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def read_machine_id() -> str:
    for path in MACHINE_ID_FILES:
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if len(value) == 32 and all(c in "0123456789abcdef" for c in value):
            return value
    # No machine id on this system: stable for this bus's lifetime at least.
    return secrets.token_hex(16)


class DaemonOptions:
    def __init__(self):
        self.bus_type = None  # "session" | "system" | None (config file decides)
        self.config_file = None
        self.address = None
        self.print_address = None  # fd number, or None
        self.print_pid = None
        self.fork = None  # None: the config file decides
        self.nopidfile = False
        self.systemd_activation = False
        self.syslog = None  # True: --syslog, False: --nosyslog, None: <syslog/> decides
        self.syslog_only = False  # --syslog-only: the system log and not stderr
        self.ready_event_fd = None


def load_configuration(opts: DaemonOptions):
    if opts.config_file:
        config = load_config(opts.config_file)
    else:
        config = load_standard(opts.bus_type or "session")
    config.servicedirs = [d for d in config.servicedirs
                          if not d.strict_naming or _ensure_transient_servicedir(d.path)]
    return config


def _ensure_transient_servicedir(path: str) -> bool:
    """$XDG_RUNTIME_DIR/dbus-1/services, where clients drop transient
    .service files, is made when the configuration is read, as dbus-daemon
    does: it and dbus-1 mode 0700, and all three owned by us and writable by
    no one else.  Otherwise it is left out with a warning (a root bus started
    with a user's environment must not write into that user's directory)."""
    services = path
    dbus1 = os.path.dirname(services)
    runtime = os.path.dirname(dbus1)
    for directory, create in ((runtime, False), (dbus1, True), (services, True)):
        try:
            if create:
                try:
                    os.mkdir(directory, 0o700)
                except FileExistsError:
                    pass
            st = os.stat(directory)
        except OSError as e:
            log.warning("Unable to set up transient service directory: %s", e)
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            log.warning("Unable to set up transient service directory: %s is not a directory "
                        "owned by uid %d and writable only by it", directory, os.geteuid())
            return False
    return True


class Daemon:
    def __init__(self, opts: DaemonOptions):
        self.opts = opts
        self.config = load_configuration(opts)
        self.guid = secrets.token_hex(16)
        bus_type = self.config.bus_type or opts.bus_type or "session"
        # <user>: the uid the bus will run as once its sockets are bound; the
        # policy's default connect rule and the driver's "privileged" checks
        # are about that uid, as in dbus-daemon (which asks geteuid() later).
        try:
            self.run_as = daemon_user(self.config.user)
        except PrivilegeError as e:
            raise ConfigError(str(e)) from None
        self.bus_uid = self.run_as.pw_uid if self.run_as is not None else os.getuid()
        self.policy = Policy(self.config, bus_uid=self.bus_uid)
        self.settings = BusSettings(self.guid, read_machine_id(), bus_type=bus_type,
                                    limits=self.config.limits, bus_uid=self.bus_uid, bus_pid=os.getpid())
        self.bus = Bus(self.settings, release_fds=close_fds)
        # The bus's mediators: the containers' access rules, then the XML policy.
        self.containers = ContainerManager(self.bus)
        self.policy_mediator = PolicyEnforcer(self.policy, self.bus)
        self.bus.set_mediation(Mediation([self.containers.access, self.policy_mediator], clock=time.monotonic))
        self.bus.driver.reload_config = self.reload
        self.loop = new_event_loop()
        self.server = Server(self.bus, self.loop, uid_allowed=self._uid_allowed,
                             allow_anonymous=self.config.allow_anonymous)
        self.server.auth_settings = auth_settings(self.config, self.bus_uid)
        self.containers.sockets = ContainerSockets(self.server)
        # service activation: .service files, spawning, --systemd-activation
        self.spawner = Spawner(self.loop)
        self.settings.activation = Activation(self.bus, ServiceCache.loaded(self.config.servicedirs),
                                              self.spawner, systemd_activation=opts.systemd_activation,
                                              environ=os.environ, dup_fds=dup_fds,
                                              servicehelper=self.config.servicehelper)
        self.stop_event = None
        self.pidfile = None
        self._uid_cache = {}

    def _uid_allowed(self, uid: int) -> bool:
        # One user database lookup per uid and configuration, not per connection.
        allowed = self._uid_cache.get(uid)
        if allowed is None:
            if len(self._uid_cache) > 1024:
                self._uid_cache.clear()
            allowed = self._uid_cache[uid] = self._uid_allowed_uncached(uid)
        return allowed

    def _uid_allowed_uncached(self, uid: int) -> bool:
        try:
            import pwd
            gids = tuple(os.getgrouplist(pwd.getpwuid(uid).pw_name, pwd.getpwuid(uid).pw_gid))
        except (KeyError, OSError):
            gids = ()
        return self.policy.allows_connect(Creds(uid=uid, gids=gids))

    def reload(self) -> None:
        """ReloadConfig / SIGHUP: a broken file keeps the old configuration."""
        try:
            config = load_configuration(self.opts)
            policy = Policy(config, bus_uid=self.bus_uid)
        except (ConfigError, OSError) as e:
            log.error("keeping the old configuration: %s", e)
            raise
        self.config = config
        self.policy = policy
        self._uid_cache = {}
        try:
            self.server.auth_settings = auth_settings(config, self.bus_uid)
        except ConfigError as e:
            log.error("keeping the old authentication mechanisms: %s", e)
        self.server.allow_anonymous = config.allow_anonymous
        mediator = PolicyEnforcer(policy, self.bus)
        self.bus.mediation.replace(self.policy_mediator, mediator, self.bus.connections)
        self.policy_mediator = mediator
        self.settings.limits = self.bus.limits = config.limits
        self.server.apply_limits()
        self.settings.activation.servicehelper = config.servicehelper
        self.settings.activation.reload(ServiceCache.loaded(config.servicedirs))  # ActivatableServicesChanged
        log.info("configuration reloaded")

    def bind(self) -> str:
        addresses = [self.opts.address] if self.opts.address else list(self.config.listen)
        # systemd socket activation: passed sockets replace <listen> (and --address=systemd:)
        passed = socket_activation.take_listen_fds()
        if passed and (not self.opts.address or self.opts.address == "systemd:"):
            for listener in socket_activation.listeners_from_fds(passed):
                self.server.add_listener(listener)
            addresses = []
        elif self.opts.address == "systemd:":
            raise ConfigError("--address=systemd: but no sockets were passed (LISTEN_FDS)")
        if not addresses and not self.server.listeners:
            raise ConfigError("no <listen> address in the configuration and no --address given")
        for address in addresses:
            for listener in listen(address):
                self.server.add_listener(listener)
        address = ";".join(lst.address(self.guid) for lst in self.server.listeners
                           if not getattr(lst, "hidden", False))
        self.settings.activation.address = address  # DBUS_STARTER_ADDRESS
        return address

    def run(self) -> int:
        asyncio.set_event_loop(self.loop)
        _raise_fd_limit()
        address = self.bind()
        want_fork = self.opts.fork if self.opts.fork is not None else self.config.fork
        if want_fork:
            self._fork()
        # Whoever reads the address may send SIGTERM at once, and that must be
        # a clean shutdown too; but the loop's handlers only work once it runs.
        # So hold those signals until then: a pending one is delivered the
        # moment they are unblocked, through the loop.
        held = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        self.stop_event = asyncio.Event()
        install_signal_handlers(self.loop, self.stop_event.set, self._sighup)
        self.loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, held)
        self._write_pidfile()
        # After the sockets and the pidfile (root's /run/dbus), before the
        # first client is served.
        if self.run_as is not None:
            self._prepare_container_directory()
            drop_to(self.run_as)
            log.info("now running as %s (uid %d)", self.run_as.pw_name, self.run_as.pw_uid)
        self._announce(address)
        _notify_systemd("READY=1")
        try:
            self.loop.run_until_complete(self.stop_event.wait())
        finally:
            self.shutdown()
        return 0

    def _prepare_container_directory(self) -> None:
        """The system bus's container sockets go under /run/dbus, which only
        root may write: make their directory now, owned by the user the bus
        becomes (io/container_sockets.py insists on that owner)."""
        directory = ContainerSockets.default_directory(self.settings.bus_type)
        if not os.path.isdir(os.path.dirname(directory)):
            return
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.lstat(directory)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == 0:
                os.chown(directory, self.run_as.pw_uid, self.run_as.pw_gid)
        except OSError as e:
            log.warning("container sockets will not be available: %s", e)

    def _sighup(self) -> None:
        try:
            self.reload()
        except Exception:
            pass

    def shutdown(self) -> None:
        self.containers.shutdown()
        self.spawner.close()  # activated services outlive the bus
        self.server.close()
        if self.pidfile:
            try:
                os.unlink(self.pidfile)
            except OSError:
                pass

    def _announce(self, address: str) -> None:
        same_fd = self.opts.print_address == self.opts.print_pid
        if self.opts.print_address is not None:
            _write_fd(self.opts.print_address, address + "\n", close=not same_fd)
        if self.opts.print_pid is not None:
            _write_fd(self.opts.print_pid, f"{os.getpid()}\n")

    def _write_pidfile(self) -> None:
        path = self.config.pidfile
        if path and not self.opts.nopidfile:
            with open(path, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.pidfile = path

    def _fork(self) -> None:
        # The parent returns only once the child is set up, like dbus-daemon.
        r, w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        self._fork_ready = w
        self.loop.call_soon(lambda: (os.write(w, b"x"), os.close(w)))


def auth_settings(config, bus_uid=None) -> AuthSettings:
    """<auth> restricts the mechanisms; naming one sandbus lacks is an
    error at startup, as in dbus-daemon."""
    for mech in config.auth:
        if mech not in SUPPORTED_MECHANISMS:
            raise ConfigError(f'Unsupported auth mechanism "{mech}" in bus config file detected. '
                              f'Supported mechanisms are "{", ".join(SUPPORTED_MECHANISMS)}".')
    return AuthSettings(config.auth or SUPPORTED_MECHANISMS, os.getuid() if bus_uid is None else bus_uid)


def _raise_fd_limit() -> None:
    """Every connection is a descriptor: take what the hard limit allows
    (dbus-daemon asks for 65536 the same way)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit: %s", e)


def _write_fd(fd: int, text: str, close: bool = True) -> None:
    data = text.encode()
    while data:
        n = os.write(fd, data)
        data = data[n:]
    if close and fd > 2:
        # Readers such as dbus-run-session wait for EOF, as dbus-daemon closes it.
        os.close(fd)


def _notify_systemd(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), path)
    except OSError as e:
        log.warning("could not notify systemd: %s", e)


def run(opts: DaemonOptions) -> int:
    try:
        daemon = Daemon(opts)
    except ConfigError as e:
        print(f"sandbus-daemon: Failed to start message bus: {e}", file=sys.stderr)
        return 1
    configure_logging(opts, daemon.config)
    try:
        return daemon.run()
    except (OSError, ConfigError, ValueError, PrivilegeError) as e:
        print(f"sandbus-daemon: Failed to start message bus: {e}", file=sys.stderr)
        return 1


def configure_logging(opts: DaemonOptions, config, root=None) -> None:
    """--syslog / --syslog-only / --nosyslog, else <syslog/>: add the system
    log; --syslog-only drops stderr unless no system log exists."""
    root = root or logging.getLogger()
    want = opts.syslog if opts.syslog is not None else (config.syslog or opts.syslog_only)
    if opts.syslog_only:
        want = True
    if not want:
        return
    handler = SystemLogHandler()
    if not handler.available:
        handler.close()
        return  # stderr it is
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    if opts.syslog_only:
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (
                    sys.stderr, sys.__stderr__):
                root.removeHandler(h)
