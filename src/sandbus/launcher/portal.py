"""The sub-sandbox portal of `sandbus run`: Flatpak's
org.freedesktop.portal.Flatpak Spawn, SpawnSignal and SpawnExited, served
by the launcher to its own app alone.

The app reaches the launcher under the portal's well-known name because
the launcher's container instance scopes that name to the launcher's
connection (AddServer's ScopedNames, docs/containers.md): a real
flatpak-portal may own it on the bus, and everyone else keeps reaching
that one.  A call is answered only if the bus says (GetConnectionInstance)
that its sender is in the launcher's own instance.  flatpak-spawn needs
nothing else from the sandbox: no /.flatpak-info (it reads $FLATPAK_ID
only, to resolve --sandbox-expose-path, which is refused here anyway).

Spawn starts a sibling bubblewrap sandbox, never anything wider than the
app's: its network, devices, display and sound sockets are those asked for
and held by the app, its only files are the exposed ones from the app's
sandbox directory (~/.var/app/APP_ID/sandbox, bound into the app's sandbox
too), and its bus (sandbox-flags allow-dbus) is an instance nested in the
app's (AddServer's Parent) allowed only the portals and the app's own
names, which the bus checks to be within the app's rules.  Only SANDBOX
spawns are done: without it Flatpak starts another copy of the installed
app with all its permissions, and a sandbus run app is a command line,
not an installed app."""

import fcntl
import os
import signal
import stat

from ..io.client import BUS_NAME, BUS_PATH, BusError, ClientError
from ..wire.marshal import Variant
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, NO_REPLY_EXPECTED, SIGNAL, build_message
from .options import RunOptions
from .sandbox import commands_under, env_args, sandbox_args

# bwrap itself starts with nothing from the app (see Spawn below).
BWRAP_ENVIRONMENT: dict = {}

PORTAL_NAME = "org.freedesktop.portal.Flatpak"
PORTAL_PATH = "/org/freedesktop/portal/Flatpak"
PORTAL_IFACE = "org.freedesktop.portal.Flatpak"
CIFACE = "org.freedesktop.DBus.Containers1"
PROPS = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
# Version 5: options, SpawnStarted (4), unset-env (5); not the fd options
# of 6 (usr-fd, app-fd), which flatpak-spawn then refuses itself.
VERSION = 5
SUPPORTS = 0  # no EXPOSE_PIDS / SHARE_PIDS: the pid namespaces are not shared

CLEAR_ENV, LATEST_VERSION, SANDBOX, NO_NETWORK, WATCH_BUS, EXPOSE_PIDS, NOTIFY_START, SHARE_PIDS, EMPTY_APP = \
    1, 2, 4, 8, 16, 32, 64, 128, 256
# LATEST_VERSION and EMPTY_APP are accepted and change nothing: a sandbus
# run app has one version and no /app.
KNOWN_FLAGS = 511
SHARE_DISPLAY, SHARE_SOUND, SHARE_GPU, ALLOW_DBUS, ALLOW_A11Y, SHARE_INPUT, SHARE_USB, SHARE_KVM, SHARE_SHM, \
    SHARE_DEVICES = 1, 2, 4, 8, 16, 32, 64, 128, 256, 512
KNOWN_SANDBOX_FLAGS = 1023
# Callers whose instance the portal remembers: a bound, so that a stream of
# short-lived connections calling it cannot grow the launcher without end.
# Forgetting the oldest costs one more GetConnectionInstance, no more.
MAX_INSTANCES = 512
# Options that would pass the sibling a file the launcher cannot vet by
# name; refused rather than ignored, so that nothing is silently missing.
REFUSED_OPTIONS = ("sandbox-expose-fd", "sandbox-expose-fd-ro", "usr-fd", "app-fd", "sandbox-a11y-own-names")
# Fds of ours in a sibling's bwrap are moved this high, so that the
# caller's fd numbers (below it) cannot collide with them.
FD_BASE = 512

ERR_INVALID = "org.freedesktop.DBus.Error.InvalidArgs"
ERR_NOT_SUPPORTED = "org.freedesktop.DBus.Error.NotSupported"
ERR_ACCESS = "org.freedesktop.DBus.Error.AccessDenied"
ERR_FAILED = "org.freedesktop.DBus.Error.Failed"
ERR_PID = "org.freedesktop.DBus.Error.UnixProcessIdUnknown"
ERR_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"

INTROSPECTION = f"""<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="{PORTAL_IFACE}">
    <property name="version" type="u" access="read"/>
    <property name="supports" type="u" access="read"/>
    <method name="Spawn">
      <arg type="ay" name="cwd_path" direction="in"/><arg type="aay" name="argv" direction="in"/>
      <arg type="a{{uh}}" name="fds" direction="in"/><arg type="a{{ss}}" name="envs" direction="in"/>
      <arg type="u" name="flags" direction="in"/><arg type="a{{sv}}" name="options" direction="in"/>
      <arg type="u" name="pid" direction="out"/>
    </method>
    <method name="SpawnSignal">
      <arg type="u" name="pid" direction="in"/><arg type="u" name="signal" direction="in"/>
      <arg type="b" name="to_process_group" direction="in"/>
    </method>
    <signal name="SpawnStarted"><arg type="u" name="pid"/><arg type="u" name="relpid"/></signal>
    <signal name="SpawnExited"><arg type="u" name="pid"/><arg type="u" name="exit_status"/></signal>
  </interface>
</node>
"""


class PortalError(Exception):
    def __init__(self, name: str, text: str):
        super().__init__(text)
        self.name = name
        self.text = text


def _text(b) -> str:
    return bytes(b).rstrip(b"\0").decode("utf-8", "surrogateescape")


def _high(fd: int) -> int:
    """A close-on-exec copy of fd at FD_BASE or above (the original stays)."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, FD_BASE)


def _kill_pid(pid) -> None:
    try:
        os.kill(pid, signal.SIGKILL)  # --die-with-parent takes the sandbox with it
    except ProcessLookupError:
        pass


def _kill_and_reap(pid) -> None:
    _kill_pid(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


class Sibling:
    """One sandbox started by Spawn."""

    def __init__(self, pid: int, caller: str, flags: int):
        self.pid = pid  # bwrap's, in the launcher's pid namespace: what Spawn returns
        self.caller = caller
        self.flags = flags
        self.pidfd = os.pidfd_open(pid)
        self.inner_pid = None  # bwrap's init, for SpawnSignal
        self.instance = None  # its nested instance, when it has a bus


def narrowed_options(parent: RunOptions, flags: int, sandbox_flags: int, argv) -> RunOptions:
    """What a sibling may have: what was asked for and the parent has."""
    child = RunOptions()
    child.app_id = parent.app_id
    child.command = list(argv)
    if not flags & NO_NETWORK and "network" in parent.share:
        child.share.add("network")
    if sandbox_flags & SHARE_SHM and "ipc" in parent.share:
        child.share.add("ipc")
    if sandbox_flags & SHARE_DISPLAY:
        child.sockets |= parent.sockets & {"wayland", "x11"}
    if sandbox_flags & SHARE_SOUND:
        child.sockets |= parent.sockets & {"pulseaudio"}
    if sandbox_flags & SHARE_GPU and parent.devices & {"dri", "all"}:
        child.devices.add("dri")
    if sandbox_flags & SHARE_DEVICES and "all" in parent.devices:
        child.devices.add("all")
    # input, USB and KVM alone are not given: the parent has them only as
    # part of all of /dev, which is wider than what was asked
    return child


class SpawnPortal:
    def __init__(self, launcher):
        self.launcher = launcher
        self.client = launcher.client
        self.children = {}  # bwrap pid -> Sibling
        self.instances = {}  # unique name -> its instance path, or "" (asked once: names are not reused)
        self.watched = set()  # callers whose departure we watch (WATCH_BUS)

    # -- messages --------------------------------------------------------------

    def dispatch(self, m) -> None:
        """One message off the launcher's connection."""
        if m.type == SIGNAL:
            # only the bus's own: any peer may send a signal by that name
            # (unicast to us), and one would end WATCH_BUS siblings
            if m.interface == BUS_NAME and m.member == "NameOwnerChanged" and m.sender == BUS_NAME:
                self._name_owner_changed(m)
            return
        if m.type != METHOD_CALL:
            return
        try:
            values = self._call(m)
            if m.flags & NO_REPLY_EXPECTED:
                return
            sig, body = values
            self._send(METHOD_RETURN, reply_serial=m.serial, destination=m.sender, signature=sig, body=body)
        except (PortalError, OSError) as e:
            if isinstance(e, OSError):
                # whatever the system refused, the app gets an answer and
                # the launcher goes on serving it
                e = PortalError(ERR_FAILED, f"{m.member} failed: {e}")
            if not m.flags & NO_REPLY_EXPECTED:
                self._send(ERROR, reply_serial=m.serial, destination=m.sender, error_name=e.name,
                           signature="s", body=(e.text,))
        finally:
            for fd in m.fds:
                os.close(fd)

    def _send(self, mtype, **kw) -> None:
        try:
            self.client.send(build_message(mtype, self.client.next_serial(), flags=NO_REPLY_EXPECTED, **kw))
        except (ClientError, OSError):
            pass  # the bus is gone; the launcher notices on its next read

    def _call(self, m):
        self._check_caller(m.sender)
        key = (m.interface, m.member)
        if m.path == PORTAL_PATH:
            if key == (PORTAL_IFACE, "Spawn") or (m.interface is None and m.member == "Spawn"):
                return "u", (self.spawn(m),)
            if key == (PORTAL_IFACE, "SpawnSignal") or (m.interface is None and m.member == "SpawnSignal"):
                self.spawn_signal(m)
                return "", ()
            if key == (PROPS, "Get"):
                iface, prop = self._args(m, "ss")
                props = self._properties(iface)
                if prop not in props:
                    raise PortalError("org.freedesktop.DBus.Error.UnknownProperty", f"No property {prop}")
                return "v", (props[prop],)
            if key == (PROPS, "GetAll"):
                (iface,) = self._args(m, "s")
                return "a{sv}", (self._properties(iface),)
        if key == (INTROSPECTABLE, "Introspect"):
            return "s", (INTROSPECTION if m.path == PORTAL_PATH else "<node/>",)
        if m.interface == "org.freedesktop.DBus.Peer" and m.member == "Ping":
            return "", ()
        raise PortalError(ERR_METHOD, f"{m.interface}.{m.member} on {m.path} is not served here "
                          f"(sandbus run serves {PORTAL_IFACE}.Spawn and SpawnSignal on {PORTAL_PATH})")

    @staticmethod
    def _args(m, sig):
        if m.signature != sig:
            raise PortalError(ERR_INVALID, f"{m.member} takes ({sig}), not ({m.signature})")
        return m.body()

    @staticmethod
    def _properties(iface) -> dict:
        if iface != PORTAL_IFACE:
            raise PortalError("org.freedesktop.DBus.Error.UnknownInterface", f"No interface {iface}")
        return {"version": Variant("u", VERSION), "supports": Variant("u", SUPPORTS)}

    def _check_caller(self, sender) -> None:
        """Only the app's own instance: the bus says who is in it."""
        path = self.instances.get(sender)
        if path is None:
            try:
                path = self.client.call(BUS_NAME, BUS_PATH, CIFACE, "GetConnectionInstance", "s", (sender,))[0]
            except BusError:
                path = ""
            except (ClientError, OSError):
                raise PortalError(ERR_FAILED, "the bus did not answer") from None
            instances = self.instances
            if len(instances) >= MAX_INSTANCES:
                del instances[next(iter(instances))]  # the oldest asked
            instances[sender] = path
        if path != self.launcher.path:
            raise PortalError(ERR_ACCESS, f"{PORTAL_IFACE} of this sandbus run answers only the connections "
                              f"of its own sandbox ({self.launcher.path})")

    # -- Spawn -----------------------------------------------------------------

    def spawn(self, m) -> int:
        cwd, argv, fd_map, envs, flags, options = self._args(m, "ayaaya{uh}a{ss}ua{sv}")
        if flags & ~KNOWN_FLAGS:
            raise PortalError(ERR_INVALID, f"Unsupported flags enabled: 0x{flags & ~KNOWN_FLAGS:x}")
        if not flags & SANDBOX:
            raise PortalError(ERR_NOT_SUPPORTED, "sandbus run spawns only new sandboxes (the SANDBOX flag, "
                              "flatpak-spawn --sandbox): without it Flatpak starts another copy of the app with "
                              "all its permissions, and a sandbus run app has no installed app to copy")
        if flags & (EXPOSE_PIDS | SHARE_PIDS):
            raise PortalError(ERR_NOT_SUPPORTED, "sandbus run does not share pid namespaces between sandboxes")
        argv = [_text(a) for a in argv]
        if not argv or not argv[0]:
            raise PortalError(ERR_INVALID, "No command given")
        for key in REFUSED_OPTIONS:
            if key in options:
                raise PortalError(ERR_NOT_SUPPORTED, f"sandbus run does not support the {key} option "
                                  "(expose files by name from the sandbox directory: sandbox-expose)")
        sandbox_flags = self._option(options, "sandbox-flags", "u", 0)
        if sandbox_flags & ~KNOWN_SANDBOX_FLAGS:
            raise PortalError(ERR_INVALID, f"Unsupported sandbox flags enabled: "
                              f"0x{sandbox_flags & ~KNOWN_SANDBOX_FLAGS:x}")
        exposes = [(n, False) for n in self._option(options, "sandbox-expose", "as", [])]
        exposes += [(n, True) for n in self._option(options, "sandbox-expose-ro", "as", [])]
        unset = self._option(options, "unset-env", "as", [])
        targets = {}
        for target, handle in fd_map.items():
            if handle >= len(m.fds):
                raise PortalError(ERR_INVALID, f"fd {target} refers to a file descriptor that was not passed")
            if target >= FD_BASE:
                raise PortalError(ERR_INVALID, f"fd {target}: at most {FD_BASE - 1}")
            targets[target] = m.fds[handle]
        child = narrowed_options(self.launcher.opts, flags, sandbox_flags, argv)
        sib = self._start(m.sender, child, flags, sandbox_flags, _text(cwd), exposes, targets, envs, unset)
        if flags & WATCH_BUS and m.sender not in self.watched:
            self.watched.add(m.sender)
            try:
                self.client.add_match(f"type='signal',sender='{BUS_NAME}',interface='{BUS_NAME}',"
                                      f"member='NameOwnerChanged',arg0='{m.sender}'")
            except (BusError, ClientError, OSError):
                pass
        if flags & NOTIFY_START:
            self._signal(sib.caller, "SpawnStarted", "uu", (sib.pid, 0))
        return sib.pid

    @staticmethod
    def _option(options, key, sig, default):
        v = options.get(key)
        if v is None:
            return default
        if v.signature != sig:
            raise PortalError(ERR_INVALID, f"option {key} must have type {sig}, not {v.signature}")
        return v.value

    def _environment(self, flags, envs, unset, env_out) -> dict:
        """The app's own environment (unless CLEAR_ENV), the sandbox's
        (HOME, PATH, XDG_RUNTIME_DIR, the bus), then what the caller set."""
        env = {} if flags & CLEAR_ENV else dict(os.environ, **self.launcher.opts.env)
        for k, v in env_out.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        env.update(envs)
        for k in unset:
            env.pop(k, None)
        return env

    def _cwd(self, cwd: str, exposed) -> str:
        """cwd where the sibling has it (its home, /usr, an exposed
        directory), else its home: bwrap refuses a missing one."""
        home = self.launcher.home
        for root in ["/usr", *exposed]:
            if cwd == root or cwd.startswith(root + "/"):
                return cwd
        return cwd if cwd in (home, "/") else home

    def _sandbox_dir_fd(self):
        # only the directory the app has (run.py binds it if it existed
        # when the app started): one made later is not the app's to expose
        if self.launcher.shared_dir is None:
            raise PortalError(ERR_INVALID, f"sandbox-expose: the app has no sandbox directory "
                              f"({self.launcher.sandbox_dir} did not exist when sandbus run started)")
        return os.open(self.launcher.shared_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)

    def _exposed(self, exposes):
        """(fd, path, read-only) for each exposed name: opened without
        following a symlink, so that the app cannot point the sibling at a
        file it does not have itself."""
        out = []
        if not exposes:
            return out
        dir_fd = self._sandbox_dir_fd()
        try:
            for name, ro in exposes:
                if not name or "/" in name or name in (".", ".."):
                    raise PortalError(ERR_INVALID, f"sandbox-expose: {name!r} is not a file name in the "
                                      "sandbox directory (no paths)")
                try:
                    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # nothing to expose
                out.append((fd, os.path.join(self.launcher.shared_dir, name), ro))
                if stat.S_ISLNK(os.fstat(fd).st_mode):
                    raise PortalError(ERR_INVALID, f"sandbox-expose: {name!r} is a symbolic link")
        except BaseException:
            for fd, _, _ in out:
                os.close(fd)
            raise
        finally:
            os.close(dir_fd)
        return out

    def _start(self, caller, child, flags, sandbox_flags, cwd, exposes, targets, envs, unset) -> Sibling:
        la = self.launcher
        pid = None
        opened = []  # our fds, closed before returning
        high = []
        tmpdir = None
        try:
            exposed = self._exposed(exposes)
            opened += [fd for fd, _, _ in exposed]
            env_out = dict(child.env)
            bus = bool(sandbox_flags & ALLOW_DBUS)
            host_socket = None
            if bus:
                tmpdir, host_socket, lfd = la.listening_socket()
                opened.append(lfd)
            args = sandbox_args(child, uid=la.uid, runtime_socket=host_socket, home=la.home, env_out=env_out)
            if args[-2] == "--chdir":
                del args[-2:]  # ours follows
            for fd, path, ro in exposed:
                h = _high(fd)
                high.append(h)
                args += ["--ro-bind-fd" if ro else "--bind-fd", str(h), path]
            args += ["--chdir", self._cwd(cwd, [p for _, p, _ in exposed])]
            env = self._environment(flags, envs, unset, env_out)
            bad = [k for k in env if not k or "=" in k]
            if bad:
                raise PortalError(ERR_INVALID, f"cannot pass that command line or environment: invalid variable name {bad[0]!r}")
            info_r, info_w = os.pipe()
            opened += [info_r, info_w]
            h_info = _high(info_w)
            high.append(h_info)
            extra = ["--info-fd", str(h_info)]
            if bus:
                stop_r, stop_w = os.pipe()
                ready_r, ready_w = os.pipe()
                block_r, block_w = os.pipe()
                opened += [stop_r, stop_w, ready_r, ready_w, block_r, block_w]
                h_stop, h_block = _high(stop_w), _high(block_r)
                high += [h_stop, h_block]
                extra += ["--block-fd", str(h_block)]
            # The sibling's variables reach it through bwrap's own options,
            # never bwrap's environment: bwrap runs on the host before it
            # makes any namespace, so LD_PRELOAD and the like from the
            # caller would run the caller's code outside every sandbox.
            extra += ["--clearenv", *env_args(env)]
            argv = [la.bwrap, *args, *extra, "--", *child.command]
            srcs = {t: _high(fd) for t, fd in targets.items()}
            high += list(srcs.values())
            actions = [(os.POSIX_SPAWN_DUP2, src, t) for t, src in srcs.items()]
            # ours keep their (high) numbers across exec: dup2 onto itself
            # clears close-on-exec
            actions += [(os.POSIX_SPAWN_DUP2, h, h) for h in high if h not in srcs.values()]
            try:
                pid = os.posix_spawn(la.bwrap, argv, BWRAP_ENVIRONMENT, file_actions=actions, setpgroup=0)
            except ValueError as e:  # a NUL byte in an argument, "=" in a variable's name...
                raise PortalError(ERR_INVALID, f"cannot pass that command line or environment: {e}") from None
            except OSError as e:
                raise PortalError(ERR_FAILED, f"cannot run {la.bwrap}: {e}") from None
            for h in high:
                os.close(h)
            high = []
            os.close(info_w)
            opened.remove(info_w)
            try:
                sib = Sibling(pid, caller, flags)
            except OSError as e:
                # Without its pidfd bwrap would run unfollowed and unreaped:
                # end it now.
                _kill_and_reap(pid)
                raise PortalError(ERR_FAILED, f"cannot follow {la.bwrap}: {e}") from None
            self.children[pid] = sib
            info = la.read_info(info_r)
            if info is None:
                raise PortalError(ERR_FAILED, "bwrap could not create the sandbox")
            sib.inner_pid = info.get("child-pid")
            if bus:
                for fd in (stop_w, block_r):
                    os.close(fd)
                    opened.remove(fd)
                sib.instance = self._nested_instance(child, lfd, ready_r, stop_r)
                os.close(ready_w)
                opened.remove(ready_w)
                os.write(block_w, b"1")
                la.wait_block_read(block_w, lambda: self._exited(pid))
            return sib
        except BaseException:
            # a sibling half set up is no sibling
            if pid in self.children:
                self._kill(self.children.pop(pid))
            raise
        finally:
            for fd in opened + high:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if tmpdir is not None:
                la.remove_socket_dir(tmpdir)

    def _exited(self, pid) -> bool:
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _nested_instance(self, child, lfd, ready_r, stop_r) -> str:
        la = self.launcher
        metadata = {
            "AppId": Variant("s", child.app_id),
            "InstanceId": Variant("s", la.instance_id),
            "Command": Variant("as", list(child.command)),
            "SpawnedBy": Variant("o", la.path),
        }
        named = {"Socket": Variant("h", 0), "ReadyNotification": Variant("h", 1), "StopOnNotify": Variant("h", 2),
                 "Parent": Variant("o", la.path), "Allow": Variant("a(usos)", child.allow_rules())}
        try:
            return self.client.call(BUS_NAME, BUS_PATH, CIFACE, "AddServer", "ssa{sv}a{sv}",
                                    ("org.sandbus.Run.Spawn", child.app_id, metadata, named),
                                    fds=[lfd, ready_r, stop_r])[0]
        except BusError as e:
            raise PortalError(ERR_ACCESS if e.name == ERR_ACCESS else ERR_FAILED,
                              f"the bus refused the sandbox's instance: {e.text}") from None
        except (ClientError, OSError) as e:
            raise PortalError(ERR_FAILED, f"the bus did not answer: {e}") from None

    # -- SpawnSignal, exits ----------------------------------------------------

    def spawn_signal(self, m) -> None:
        pid, signum, group = self._args(m, "uub")
        sib = self.children.get(pid)
        if sib is None or sib.caller != m.sender:
            raise PortalError(ERR_PID, "No such pid")
        if not 0 < signum < signal.NSIG:
            raise PortalError(ERR_INVALID, f"{signum} is not a signal")
        for p in self._commands(sib):
            try:
                if group:
                    os.killpg(p, signum)  # --new-session: the command leads its group
                else:
                    os.kill(p, signum)
            except (ProcessLookupError, PermissionError):
                pass

    @staticmethod
    def _commands(sib):
        return commands_under(sib.inner_pid) or [sib.pid]

    def pidfds(self) -> dict:
        return {sib.pidfd: sib for sib in self.children.values()}

    def reap(self, sib) -> None:
        try:
            _, status = os.waitpid(sib.pid, 0)
        except ChildProcessError:
            status = 0
        self.children.pop(sib.pid, None)
        os.close(sib.pidfd)
        self._signal(sib.caller, "SpawnExited", "uu", (sib.pid, status & 0xFFFFFFFF))

    def _signal(self, dest, member, sig, body) -> None:
        # unicast: the portal's signals are for their caller (as Flatpak's)
        self._send(SIGNAL, path=PORTAL_PATH, interface=PORTAL_IFACE, member=member, destination=dest,
                   signature=sig, body=body)

    def _name_owner_changed(self, m) -> None:
        try:
            name, _old, new = m.body()
        except ValueError:
            return
        if new or name not in self.watched:
            return
        self.watched.discard(name)
        for sib in list(self.children.values()):
            if sib.caller == name and sib.flags & WATCH_BUS:
                self._kill(sib, reap=False)

    def _kill(self, sib, reap=True) -> None:
        if reap:
            _kill_and_reap(sib.pid)
            os.close(sib.pidfd)
        else:
            _kill_pid(sib.pid)

    def stop_all(self) -> None:
        """The app has exited: its siblings go with it."""
        for sib in list(self.children.values()):
            self._kill(sib)
        self.children.clear()
