"""`sandbus run [OPTIONS] -- COMMAND [ARGS]`: COMMAND in a bubblewrap sandbox
whose only bus is its own Containers1 instance on the session bus.

The launcher binds and listens on the socket the sandbox sees as
$XDG_RUNTIME_DIR/bus and hands it to the bus (AddServer's Socket), so the
bus never makes a socket of its own for the app.  The host name of that
socket exists only while bwrap sets the sandbox up: it is removed as soon
as bwrap has bind-mounted it.  Two pipes tie the instance to the sandbox:
ReadyNotification (the bus starts accepting once we are ready) and
StopOnNotify, whose write end only the sandbox's processes hold, so the bus
stops the instance when the last of them exits, even if the launcher was
killed."""

import array
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time

from ..io.client import BUS_NAME, BUS_PATH, BusError, Client, ClientError
from ..wire.marshal import Variant
from ..wire.message import SIGNAL
from .options import PORTAL_ARGS, USAGE, UsageError, learned_run_args, parse_run_args
from .portal import PORTAL_NAME, SpawnPortal
from .sandbox import commands_under, env_args, sandbox_args

IFACE = "org.freedesktop.DBus.Containers1"
CONTAINER_TYPE = "org.sandbus.Run"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
NO_USERNS = ("bwrap could not create the sandbox: are unprivileged user namespaces enabled? "
             "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, "
             "kernel.apparmor_restrict_unprivileged_userns=0)")


class RunError(Exception):
    pass


def _say(text: str) -> None:
    print(f"sandbus run: {text}", file=sys.stderr, flush=True)


def run_main(argv) -> int:
    try:
        opts = parse_run_args(list(argv))
    except UsageError as e:
        _say(str(e))
        return 2
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    bwrap = os.environ.get("SANDBUS_BWRAP") or shutil.which("bwrap")
    if not bwrap or not os.access(bwrap, os.X_OK):
        _say("bwrap (bubblewrap) is not installed: install the bubblewrap package")
        return 1
    address = opts.address or os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if not address:
        _say("no session bus: DBUS_SESSION_BUS_ADDRESS is not set (or give --address)")
        return 1
    launcher = Launcher(opts, bwrap, address)
    try:
        return launcher.run()
    except RunError as e:
        _say(str(e))
        return 1
    except OSError as e:
        _say(f"{e}")
        return 1
    except KeyboardInterrupt:  # before the app ran (after, Ctrl-C goes to it)
        return 130
    finally:
        launcher.cleanup()


class Launcher:
    def __init__(self, opts, bwrap: str, address: str):
        self.opts = opts
        self.bwrap = bwrap
        self.address = address
        self.client = None
        self.tmpdir = None
        self.proc = None
        self.fds = []  # our copies, closed at cleanup
        self.path = None  # the instance
        self.sandbox_pid = None
        self.instance_id = os.urandom(16).hex()
        self.uid = os.getuid()
        home = os.path.expanduser("~")
        self.home = home if os.path.isabs(home) else "/home/app"
        # what the app may expose to the sandboxes it spawns (launcher/portal.py)
        self.sandbox_dir = os.path.join(os.path.expanduser("~"), ".var", "app", opts.app_id, "sandbox")
        self.shared_dir = None  # sandbox_dir, when the app has it
        self.portal = None

    def _pipe(self):
        r, w = os.pipe()
        self.fds += [r, w]
        return r, w

    def _close(self, fd) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            os.close(fd)

    def run(self) -> int:
        opts = self.opts
        try:
            self.client = Client(self.address)
        except (ClientError, OSError) as e:
            raise RunError(f"cannot use the session bus: {e}") from None
        uid = self.uid
        self.tmpdir, host_socket, lfd = self.listening_socket()
        self.fds.append(lfd)
        stop_r, stop_w = self._pipe()
        ready_r, ready_w = self._pipe()
        block_r, block_w = self._pipe()
        info_r, info_w = self._pipe()

        env = {}
        # only if the user made it: $HOME inside stays empty otherwise
        if os.path.isdir(self.sandbox_dir) and not os.path.islink(self.sandbox_dir):
            self.shared_dir = self.sandbox_dir
        args = sandbox_args(opts, uid=uid, runtime_socket=host_socket, home=self.home, env_out=env,
                            sandbox_dir=self.shared_dir)
        argv = [self.bwrap, *args, *env_args(env), "--info-fd", str(info_w), "--block-fd", str(block_r),
                "--", *opts.command]
        try:
            # Its own process group: a terminal's Ctrl-C reaches only us,
            # and we pass it to the app (bwrap itself would just die of it).
            self.proc = subprocess.Popen(argv, pass_fds=(stop_w, info_w, block_r), process_group=0)
        except OSError as e:
            raise RunError(f"cannot run {self.bwrap}: {e}") from None
        # From here on only the sandbox holds these.
        for fd in (stop_w, info_w, block_r):
            self._close(fd)
        info = self.read_info(info_r)
        if info is None:
            self.proc.wait()
            self.proc = None
            raise RunError(NO_USERNS)
        self.sandbox_pid = info.get("child-pid")

        c = self.client
        c.add_match(f"type='signal',sender='{BUS_NAME}',interface='{IFACE}',member='InstanceRemoved'")
        metadata = {
            "AppId": Variant("s", opts.app_id),
            "InstanceId": Variant("s", self.instance_id),
            "Command": Variant("as", list(opts.command)),
            "Permissions": Variant("as", opts.permission_args()),
        }
        # the app sees this launcher as the Flatpak portal (launcher/portal.py)
        named = {"Socket": Variant("h", 0), "ReadyNotification": Variant("h", 1),
                 "StopOnNotify": Variant("h", 2), "ScopedNames": Variant("as", [PORTAL_NAME])}
        if not opts.unfiltered():
            named["Allow"] = Variant("a(usos)", opts.allow_rules())
        if opts.learn:
            named["Learn"] = Variant("b", True)
        try:
            self.path = c.call(BUS_NAME, BUS_PATH, IFACE, "AddServer", "ssa{sv}a{sv}",
                               (CONTAINER_TYPE, opts.app_id, metadata, named),
                               fds=[lfd, ready_r, stop_r])[0]
        except BusError as e:
            if e.name == "org.freedesktop.DBus.Error.UnknownMethod":
                raise RunError(f"the session bus has no Containers1 interface (is it sandbus?): {e.text}") \
                    from None
            raise RunError(f"the bus refused the container instance: {e}") from None
        for fd in (lfd, ready_r, stop_r):
            self._close(fd)
        self._close(ready_w)  # hung up == ready: the bus starts accepting
        status = self._release_and_wait(block_w)
        if opts.learn:
            self._print_learned()
        self._wait_removed()
        return status

    def listening_socket(self):
        """(directory, socket path, listening fd): a fresh socket for a
        sandbox's bus, bound on the host only until bwrap has mounted it."""
        base = os.environ.get("XDG_RUNTIME_DIR")
        # sun_path holds 108 bytes: a deep runtime directory cannot take it.
        if not base or not os.access(base, os.W_OK) or len(os.fsencode(base)) > 80:
            base = None
        tmpdir = tempfile.mkdtemp(prefix="sandbus-run-", dir=base)
        host_socket = os.path.join(tmpdir, "bus")
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listening.bind(host_socket)
            listening.listen(128)
        except OSError:
            listening.close()
            self.remove_socket_dir(tmpdir)
            raise
        return tmpdir, host_socket, listening.detach()

    @staticmethod
    def remove_socket_dir(tmpdir: str) -> None:
        try:
            os.unlink(os.path.join(tmpdir, "bus"))
        except FileNotFoundError:
            pass
        os.rmdir(tmpdir)

    def read_info(self, fd):
        """bwrap's --info-fd JSON, which it writes once the namespaces exist;
        None if it exited first (it could not make them)."""
        data = b""
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
            try:
                return json.loads(data)
            except ValueError:
                continue
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    @staticmethod
    def wait_block_read(block_w: int, exited) -> None:
        """bwrap reads the block fd after every mount, just before exec:
        once our byte is gone the socket is mounted inside and its host
        name can go (or bwrap has exited)."""
        pending = array.array("i", [1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not exited():
            fcntl.ioctl(block_w, termios.FIONREAD, pending)
            if pending[0] == 0:
                break
            time.sleep(0.0005)

    def _remove_tmpdir(self) -> None:
        if self.tmpdir is None:
            return
        self.remove_socket_dir(self.tmpdir)
        self.tmpdir = None

    def _forward(self, signum, frame) -> None:
        """The command is pid 2 under bwrap's init, which passes no signals
        on: send it to init's children, so Ctrl-C reaches the app."""
        targets = commands_under(self.sandbox_pid)
        if not targets and self.proc is not None:
            targets = [self.proc.pid]
        for p in targets:
            try:
                os.kill(p, signum)
            except ProcessLookupError:
                pass

    def _release_and_wait(self, block_w: int) -> int:
        """Let bwrap exec the command, serve the portal until it exits; its
        exit status.  Signals are forwarded from before the app can run: one
        that came while the launcher was still tidying up after the release
        would otherwise end the launcher (Ctrl-C: KeyboardInterrupt, 130)
        and never reach the app."""
        old = {s: signal.signal(s, self._forward) for s in FORWARDED}
        try:
            os.write(block_w, b"1")  # bwrap goes on to exec the command
            self.wait_block_read(block_w, lambda: self.proc.poll() is not None)
            self._close(block_w)
            self._remove_tmpdir()
            self.portal = SpawnPortal(self)
            return self._wait_exit()
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _wait_exit(self) -> int:
        """Serve the portal until the app exits; its exit status."""
        app_fd = None
        try:
            try:
                app_fd = os.pidfd_open(self.proc.pid)
            except ProcessLookupError:
                pass  # reaped already (it exited while bwrap's block fd was watched)
            if app_fd is not None and self.proc.returncode is None:
                self._serve(app_fd)
            rc = self.proc.wait()
        finally:
            if app_fd is not None:
                os.close(app_fd)
            if self.portal is not None:
                self.portal.stop_all()
        self.proc = None
        return rc if rc >= 0 else 128 - rc

    def _serve(self, app_fd: int) -> None:
        c = self.client
        portal = self.portal
        kept = []  # InstanceRemoved signals, for _wait_removed
        try:
            self._serve_loop(app_fd, c, portal, kept)
        finally:
            c.backlog.extendleft(reversed(kept))

    def _serve_loop(self, app_fd, c, portal, kept) -> None:
        bus_ok = True
        while True:
            while bus_ok and c.backlog:
                m = c.backlog.popleft()
                if m.type == SIGNAL and m.interface == IFACE and m.member == "InstanceRemoved":
                    kept.append(m)
                else:
                    portal.dispatch(m)
            siblings = portal.pidfds()
            ready, _, _ = select.select([app_fd, *siblings, *([c.sock] if bus_ok else [])], [], [])
            for fd in ready:
                if fd in siblings:
                    portal.reap(siblings[fd])
            if app_fd in ready:
                return
            if bus_ok and c.sock in ready:
                try:
                    c._fill(None)
                except (ClientError, OSError):
                    bus_ok = False  # the app goes on; nothing left to serve

    def _print_learned(self) -> None:
        try:
            _rules, fargs = self.client.call(BUS_NAME, BUS_PATH, IFACE, "GetLearnedRules", "o", (self.path,))
        except (BusError, ClientError) as e:
            _say(f"--learn: could not read the learned rules: {e}")
            return
        opts = self.opts
        given = opts.permission_args() + [f"--own-name={n}" for n in opts.implied_own()] + list(PORTAL_ARGS)
        needed = opts.permission_args() + learned_run_args(fargs, given)
        if opts.app_id != _default(opts):
            needed.insert(0, f"--app-id={opts.app_id}")
        import shlex  # only --learn prints a command line
        line = shlex.join(["sandbus", "run", *needed, "--", *opts.command])
        print(f"sandbus run: --learn: these options allow what this run did:\n{line}",
              file=sys.stderr, flush=True)

    def _wait_removed(self) -> None:
        """Return only once the bus has let the instance go, so a caller that
        sees us exit sees it gone too (the signal may already be waiting)."""
        path = self.path

        def removed(m):
            return m.type == SIGNAL and m.interface == IFACE and m.member == "InstanceRemoved" \
                and list(m.body())[:1] == [path]
        try:
            self.client.wait_for(removed, 5.0)
        except (ClientError, OSError):
            pass

    def _instance_alive(self) -> bool:
        try:
            self.client.call(BUS_NAME, BUS_PATH, IFACE, "GetInstanceInfo", "o", (self.path,))
            return True
        except BusError:
            return False

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        for fd in list(self.fds):
            self._close(fd)
        if self.tmpdir is not None:
            try:
                self._remove_tmpdir()
            except OSError:
                pass
        if self.client is not None:
            if self.path is not None and self._stop_needed():
                try:
                    self.client.call(BUS_NAME, BUS_PATH, IFACE, "StopInstance", "o", (self.path,))
                except (BusError, ClientError, OSError):
                    pass
            self.client.close()
            self.client = None

    def _stop_needed(self) -> bool:
        try:
            return self._instance_alive()
        except (ClientError, OSError):
            return False


def _default(opts) -> str:
    from .options import default_app_id
    return default_app_id(opts.command[0])
