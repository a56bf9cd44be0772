"""Service activation, sans I/O: .service files, pending activations and
the messages queued for them, timeouts, systemd hand-off, and dbus-daemon
1.14's error names and texts (bus/activation.c).

The io layer supplies a *spawner*: ``spawner.spawn(log_name, argv, env,
user, on_exit) -> handle`` where ``handle.kill()`` kills the child and
``on_exit(kind, value)`` is called later (never from inside ``spawn``) with
``("exited", status)``, ``("signaled", signo)``, ``("exec-failed", strerror)``
or ``("setup-failed", text)``.  Timers come from ``bus.call_later``.

The daemon supplies the service entries too (*services*: ``lookup(name)``
and ``names()``, config/services.py), and the environment children start
with: this module reads no file and asks the system nothing.
"""

from __future__ import annotations

import logging
import shlex

from ..wire.message import METHOD_CALL, NO_REPLY_EXPECTED, SIGNAL, Message, build_message
from . import errors
from .errors import DBusError

log = logging.getLogger("sandbus.activation")

SYSTEMD_NAME = "org.freedesktop.systemd1"
SYSTEMD_ACTIVATOR = "org.freedesktop.systemd1.Activator"
DRIVER_NAME = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"

SPAWN = errors.PREFIX + "Spawn."
SPAWN_EXEC_FAILED = SPAWN + "ExecFailed"
SPAWN_FORK_FAILED = SPAWN + "ForkFailed"
SPAWN_CHILD_EXITED = SPAWN + "ChildExited"
SPAWN_CHILD_SIGNALED = SPAWN + "ChildSignaled"
SPAWN_SETUP_FAILED = SPAWN + "SetupFailed"
SPAWN_CONFIG_INVALID = SPAWN + "ConfigInvalid"
SPAWN_SERVICE_INVALID = SPAWN + "ServiceNotValid"
SPAWN_PERMISSIONS_INVALID = SPAWN + "PermissionsInvalid"
SPAWN_FILE_INVALID = SPAWN + "FileInvalid"
TIMED_OUT = errors.PREFIX + "TimedOut"

START_REPLY_SUCCESS = 1

# What the setuid <servicehelper> (dbus-daemon-launch-helper) means by its
# exit status, as dbus-daemon 1.14 translates it (bus/activation.c).
HELPER_EXIT_ERRORS = {
    2: (errors.NO_MEMORY, "Launcher could not run (out of memory)"),
    3: (SPAWN_CONFIG_INVALID, "Invalid configuration (missing or empty <user>?)"),
    4: (SPAWN_SETUP_FAILED, "Failed to setup environment correctly"),
    5: (SPAWN_SERVICE_INVALID, "Bus name is not valid or missing"),
    6: (errors.SPAWN_SERVICE_NOT_FOUND, "Bus name not found in system service directory"),
    7: (SPAWN_PERMISSIONS_INVALID, "The permission of the setuid helper is not correct"),
    8: (SPAWN_PERMISSIONS_INVALID, "The service file is incorrect or does not have all required attributes"),
    9: (SPAWN_EXEC_FAILED, "Cannot launch daemon, file not found or permissions invalid"),
    10: (errors.INVALID_ARGS, "Invalid arguments to command line"),
    11: (SPAWN_CHILD_SIGNALED, "Launched child was signaled, it probably crashed"),
}


def helper_exit_error(status: int):
    return HELPER_EXIT_ERRORS.get(status, (SPAWN_CHILD_EXITED,
                                           f"Launch helper exited with unknown return code {status}"))

# Set for the dbus-daemon itself (by systemd), not for the services it starts.
_NOT_INHERITED = ("JOURNAL_STREAM", "LISTEN_FDNAMES", "LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET", "INVOCATION_ID")


def parse_exec(command: str) -> list:
    """Split an Exec= line as dbus-daemon's _dbus_shell_parse_argv does
    (POSIX shell quoting, backslash escapes, # comments)."""
    try:
        argv = shlex.split(command, comments=True, posix=True)
    except ValueError as e:
        raise DBusError(errors.INVALID_ARGS, f"Failed to parse command line '{command}': {e}")
    if not argv:
        raise DBusError(errors.INVALID_ARGS, "Text was empty (or contained only whitespace)")
    return argv



# -- pending activations -----------------------------------------------------------

class _Queued:
    __slots__ = ("conn", "msg", "auto")

    def __init__(self, conn, msg, auto):
        self.conn = conn  # None: a message from the bus itself (ActivationRequest)
        self.msg = msg
        self.auto = auto


class PendingActivation:
    def __init__(self, name, entry):
        self.name = name
        self.exec = entry.exec if entry is not None else None
        self.systemd_service = entry.systemd_service if entry is not None else None
        self.queue = []
        self.timer = None
        self.child = None


class Activation:
    def __init__(self, bus, services, spawner=None, *, systemd_activation: bool = False,
                 environ=None, address: str = "", dup_fds=None, servicehelper: str = None):
        self.bus = bus
        # The system bus starts services only through the setuid helper
        # (<servicehelper>), which reads the .service file again itself and
        # becomes its User=; the bus, no longer root, could not.
        self.servicehelper = servicehelper
        self.spawner = spawner
        self.systemd_activation = systemd_activation
        self.address = address
        env = dict(environ or {})
        for key in _NOT_INHERITED:
            env.pop(key, None)
        self.environment = env
        self.cache = services
        # Queued messages outlive the read that brought their fds: the io
        # layer gives the queue copies of its own.
        self.dup_fds = dup_fds or list
        self.pending = {}  # name -> PendingActivation
        self.n_queued = 0  # dbus-daemon's n_pending_activations: queued requests

    # -- the driver's interface -------------------------------------------------

    def can_activate(self, name: str) -> bool:
        if self.systemd_activation and name == SYSTEMD_NAME:
            return True
        return self.cache.lookup(name) is not None

    def names(self):
        return self.cache.names()

    def activate_for_message(self, sender, msg) -> None:
        """Auto-start: queue msg (a copy, with our own fds) until its
        destination appears; raises DBusError when it cannot even start
        (the caller answers, core/driver.py)."""
        self._activate(sender, msg, msg.destination, auto=True)

    def check_limit(self, name: str) -> None:
        limit = self.bus.limits.max_pending_service_starts
        if self.n_queued >= limit:
            raise DBusError(errors.LIMITS_EXCEEDED,
                            f"The maximum number of pending activations has been reached, activation of "
                            f"{name} failed (max_pending_service_starts={limit})")

    def start_by_name(self, peer, msg, name) -> None:
        """StartServiceByName: the reply (1 = STARTED) is sent once the name
        appears; failures raise DBusError now or are sent later."""
        self._activate(peer, msg, name, auto=False)

    def reload(self, services) -> None:
        """ReloadConfig / SIGHUP: new entries; pending activations survive."""
        self.cache = services
        self.bus.emit_signal("ActivatableServicesChanged", "", ())

    # -- the bus's hooks -------------------------------------------------------------

    def name_owned(self, name: str, owner) -> None:
        """name got a primary owner: answer StartServiceByName callers, then
        deliver the queued messages in order (bus/activation.c:
        bus_activation_service_created + send_pending_auto_activation_messages)."""
        pending = self.pending.pop(name, None)
        if pending is None:
            return
        self._finish(pending)
        log.info("Successfully activated service '%s'", name)
        bus = self.bus
        for q in pending.queue:
            if q.conn is not None and not q.auto and not q.conn.closed:
                bus.driver.send_reply(q.conn, q.msg.serial, "u", (START_REPLY_SUCCESS,))
        for q in pending.queue:
            if not q.auto:
                continue
            # monitors saw each when it was queued: dbus-daemon resumes
            # dispatching where it left off, without a second capture
            try:
                if q.conn is None:
                    if not owner.closed:
                        bus.send_bus_message(owner, q.msg.data, capture=False)
                elif not q.conn.closed:
                    target = owner
                    if q.conn.restricted:
                        # as Bus.route: a name may resolve to another peer
                        # for its sender (core/mediation.py)
                        target = bus.mediation.owner(q.conn, q.msg.destination, owner)
                    if target is None:
                        bus.driver.deliver_to_missing(q.conn, q.msg)
                    else:
                        bus.unicast(q.conn, target, q.msg, False)
            finally:
                if q.msg.fds:
                    bus.release_fds(q.msg.fds)
                    q.msg.fds = []

    def systemd_failure(self, peer, msg) -> None:
        """org.freedesktop.systemd1.Activator.ActivationFailure(unit, error, text)
        sent to the bus by the owner of org.freedesktop.systemd1."""
        bus = self.bus
        if not bus.driver.is_privileged(peer) or peer.container is not None:
            return
        if bus.registry.owner(SYSTEMD_NAME) is not peer:
            log.warning("Ignoring ActivationFailure message from non-systemd connection %s", peer.unique_name)
            return
        if msg.signature != "sss":
            return
        try:
            unit, name, text = msg.body()
        except Exception:
            return
        log.info("Activation via systemd failed for unit '%s': %s", unit, text)
        for pending in list(self.pending.values()):
            if pending.systemd_service == unit:
                self._fail(pending, name, text)

    # -- internals -----------------------------------------------------------------

    def _activate(self, conn, msg, name: str, auto: bool) -> None:
        bus = self.bus
        self.check_limit(name)
        if self.systemd_activation and name == SYSTEMD_NAME:
            entry = None  # systemd connects by itself eventually
        else:
            entry = self.cache.lookup(name)
            if entry is None:
                raise errors.service_unknown(name)
        if auto:
            msg = self._own_copy(msg)
        queued = _Queued(conn, msg, auto)
        pending = self.pending.get(name)
        if pending is not None:
            pending.queue.append(queued)
            self.n_queued += 1
            return
        pending = PendingActivation(name, entry)
        pending.queue.append(queued)
        self.n_queued += 1
        self.pending[name] = pending
        if bus.call_later is not None:
            pending.timer = bus.call_later(bus.limits.service_start_timeout / 1000.0, self._timed_out, pending)
        try:
            self._start(pending, entry, conn)
        except DBusError:
            self._drop(pending)
            raise

    def _start(self, pending, entry, conn) -> None:
        if self.systemd_activation:
            if entry is None:
                log.info("waiting for systemd to connect")
                return
            if entry.systemd_service:
                self._request_systemd(pending, entry, conn)
                return
        user = entry.user
        if self.servicehelper:
            if not entry.user:
                raise DBusError(SPAWN_FILE_INVALID, "Cannot do system-bus activation with no user\n")
            argv, user = [self.servicehelper, pending.name], None
        else:
            argv = parse_exec(entry.exec)
        if self.spawner is None:
            raise DBusError(SPAWN_FORK_FAILED, "Failed to fork (no process spawner)")
        log.info("Activating service name='%s' requested by '%s'", pending.name,
                 conn.unique_name if conn is not None else "(bus)")
        try:
            pending.child = self.spawner.spawn(pending.name, argv, self.child_environment(), user,
                                               lambda kind, value: self._child_exited(pending, kind, value))
        except OSError as e:
            raise DBusError(SPAWN_FORK_FAILED, f"Failed to fork ({e.strerror or e})")

    def child_environment(self) -> dict:
        env = dict(self.environment)
        env.update(self.bus.driver.activation_environment)
        env["DBUS_STARTER_ADDRESS"] = self.address
        bus_type = self.bus.settings.bus_type
        if bus_type:
            env["DBUS_STARTER_BUS_TYPE"] = bus_type
            if bus_type == "session":
                env["DBUS_SESSION_BUS_ADDRESS"] = self.address
            elif bus_type == "system":
                env["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        return env

    def _request_systemd(self, pending, entry, conn) -> None:
        bus = self.bus
        data = build_message(SIGNAL, bus.next_serial(), flags=NO_REPLY_EXPECTED, path=DRIVER_PATH,
                             interface=SYSTEMD_ACTIVATOR, member="ActivationRequest",
                             destination=SYSTEMD_NAME, sender=DRIVER_NAME, signature="s",
                             body=(entry.systemd_service,))
        log.info("Activating via systemd: service name='%s' unit='%s'", pending.name, entry.systemd_service)
        self._to_systemd(data)

    def forward_environment(self, env: dict) -> None:
        """UpdateActivationEnvironment under --systemd-activation: systemd
        starts the services, so it gets the variables too, as
        org.freedesktop.systemd1.Manager.SetEnvironment (bus/driver.c)."""
        if not self.systemd_activation:
            return
        bus = self.bus
        # addressed to systemd's unique name when it is there, as dbus-daemon
        # (bus_driver_send_or_activate); to the well-known one while queued
        systemd = bus.registry.owner(SYSTEMD_NAME)
        data = build_message(METHOD_CALL, bus.next_serial(), flags=NO_REPLY_EXPECTED,
                             path="/org/freedesktop/systemd1", interface="org.freedesktop.systemd1.Manager",
                             member="SetEnvironment",
                             destination=systemd.unique_name if systemd is not None else SYSTEMD_NAME,
                             sender=DRIVER_NAME,
                             signature="as", body=([f"{k}={v}" for k, v in env.items()],))
        self._to_systemd(data)

    def _to_systemd(self, data: bytes) -> None:
        """A bus message for systemd: now, or once systemd has connected."""
        # Monitors see it in a transaction of its own, ahead of the message
        # that caused it (bus/activation.c), even while systemd is not there
        # yet ("log early and often").
        bus = self.bus
        systemd = bus.registry.owner(SYSTEMD_NAME)
        if systemd is not None:
            if bus.monitors:
                bus.monitors.copy_now(bus.driver_peer, Message(data), systemd)
            bus.send_bus_message(systemd, data, capture=False)
            return
        log.info("Activating systemd to hand-off")
        msg = Message(data)
        self._activate(None, msg, SYSTEMD_NAME, auto=True)
        if bus.monitors:
            bus.monitors.copy_now(bus.driver_peer, msg, None)

    def _child_exited(self, pending, kind: str, value) -> None:
        pending.child = None
        if self.pending.get(pending.name) is not pending:
            return  # already owned its name, failed or timed out
        if kind == "exited":
            if value == 0:
                return  # it may have daemonized: wait for the name or the timeout
            if self.servicehelper:
                name, text = helper_exit_error(value)
            else:
                name, text = SPAWN_CHILD_EXITED, f"Process {pending.name} exited with status {value}"
        elif kind == "signaled":
            name, text = SPAWN_CHILD_SIGNALED, f"Process {pending.name} received signal {value}"
        elif kind == "exec-failed":
            name, text = SPAWN_EXEC_FAILED, f"Failed to execute program {pending.name}: {value}"
        else:
            name, text = SPAWN_SETUP_FAILED, str(value)
        log.info("Activated service '%s' failed: %s", pending.name, text)
        # as dbus-daemon: every pending activation with the same Exec fails too
        for other in list(self.pending.values()):
            if other is not pending and other.exec is not None and other.exec == pending.exec:
                self._fail(other, name, text)
        self._fail(pending, name, text)

    def _timed_out(self, pending) -> None:
        pending.timer = None
        if self.pending.get(pending.name) is not pending:
            return
        if pending.child is not None:
            try:
                pending.child.kill()
            except OSError:
                pass
        timeout = self.bus.limits.service_start_timeout
        text = f"Failed to activate service '{pending.name}': timed out (service_start_timeout={timeout}ms)"
        log.warning("%s", text)
        self._fail(pending, TIMED_OUT, text)

    def _fail(self, pending, name: str, text: str) -> None:
        if self.pending.get(pending.name) is pending:
            del self.pending[pending.name]
        self._finish(pending)
        bus = self.bus
        for q in pending.queue:
            if q.conn is not None and not q.conn.closed:
                bus.send_error_to(q.conn, q.msg.serial, name, text)
            if q.msg.fds:
                bus.release_fds(q.msg.fds)
                q.msg.fds = []

    def _drop(self, pending) -> None:
        """Undo a pending activation that could not even be started (its
        caller gets the error directly)."""
        if self.pending.get(pending.name) is pending:
            del self.pending[pending.name]
        self._finish(pending)
        for q in pending.queue:
            if q.msg.fds:
                self.bus.release_fds(q.msg.fds)
                q.msg.fds = []

    def _own_copy(self, msg):
        """The bus closes a message's fds once routing returns: keep duplicates."""
        if msg.fds or not isinstance(msg.data, bytes):
            copy = Message(bytes(msg.data))
            copy.fds = self.dup_fds(msg.fds) if msg.fds else []
            return copy
        return msg

    def _finish(self, pending) -> None:
        self.n_queued -= len(pending.queue)
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None


__all__ = ["Activation", "parse_exec"]
