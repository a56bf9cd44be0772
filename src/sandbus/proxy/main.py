"""`sandbus-dbus-proxy`: a drop-in for xdg-dbus-proxy
(`FLATPAK_DBUSPROXY=$(command -v sandbus-dbus-proxy) flatpak run APP`).

Every group whose bus has Containers1 becomes a container instance
(proxy/native.py).  Groups on buses without it (dbus-daemon, dbus-broker,
the a11y bus) are handed to the real xdg-dbus-proxy, one child process for
all of them, until sandbus has a filtering proxy of its own.

The protocol with Flatpak: one byte `x` on --fd once every socket
listens; exit when --fd hangs up or errs (the app's sandbox is gone).  On
any failure: one line on stderr, exit 1, and --fd is closed without `x`
(Flatpak then says "Failed to sync with dbus proxy")."""

import os
import select
import signal
import sys

from ..io.client import ClientError
from ..io.fds import close_fds
from . import cmdline, flatpak_info
from .native import GroupError, NativeGroup, connect, has_native_support

# xdg-dbus-proxy for buses without Containers1 (tests point it elsewhere).
DELEGATE_VARIABLE = "SANDBUS_XDG_DBUS_PROXY"


class ProxyError(Exception):
    pass


def _say(text: str) -> None:
    sys.stderr.write(f"{cmdline.PROG}: {text}\n")
    sys.stderr.flush()


def _find_delegate():
    import shutil  # here: Flatpak waits for our start-up, and most runs need no delegate
    path = os.environ.get(DELEGATE_VARIABLE) or shutil.which("xdg-dbus-proxy")
    if not path:
        return None
    try:
        if os.path.samefile(path, sys.argv[0]):
            return None  # installed as xdg-dbus-proxy itself
    except OSError:
        pass
    return path


class Delegate:
    """The real xdg-dbus-proxy for the groups we cannot serve natively: it
    says it is ready through a pipe of ours, and exits when we do (our end
    of that pipe closes)."""

    def __init__(self, groups):
        self.groups = groups
        self.proc = None
        self.ready_r = None

    def start(self) -> None:
        import subprocess
        binary = _find_delegate()
        if binary is None:
            names = ", ".join(g.address for g in self.groups)
            raise ProxyError(f"{names}: the bus has no Containers1 (is it sandbus?), and xdg-dbus-proxy, "
                             "which would proxy it, is not installed")
        r, w = os.pipe()
        argv = [binary, f"--fd={w}"]
        for g in self.groups:
            argv += g.argv()
        try:
            # stdin stays ours: in Flatpak's proxy sandbox /dev is read-only,
            # so /dev/null cannot be opened for it
            self.proc = subprocess.Popen(argv, pass_fds=(w,))
        except OSError as e:
            os.close(r)
            raise ProxyError(f"cannot run {binary}: {e.strerror}") from None
        finally:
            os.close(w)
        self.ready_r = r
        got = os.read(r, 1)
        if got != b"x":
            rc = self.proc.wait()
            raise ProxyError(f"{binary} failed (exit status {rc}) for "
                             + ", ".join(g.address for g in self.groups))

    def stop(self) -> None:
        import subprocess
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.ready_r is not None:
            os.close(self.ready_r)
            self.ready_r = None


class Proxy:
    def __init__(self, args):
        self.args = args
        self.native = []
        self.delegate = None

    def start(self) -> None:
        app_id, metadata = None, None
        delegated = []
        for group in self.args.groups:
            client = connect(group.address)
            if not has_native_support(client):
                client.close()
                delegated.append(group)
                continue
            if app_id is None:
                try:
                    app_id, metadata = flatpak_info.load()
                except flatpak_info.FlatpakInfoError as e:
                    client.close()
                    raise ProxyError(str(e)) from None
            native = NativeGroup(group, client)
            self.native.append(native)
            native.start(app_id, metadata)
        if delegated:
            self.delegate = Delegate(delegated)
            self.delegate.start()

    def wait(self, sync_fd) -> int:
        """Until sync_fd hangs up (0), or a bus connection closes (1)."""
        poller = select.poll()
        if sync_fd is not None:
            poller.register(sync_fd, 0)  # POLLHUP and POLLERR are always reported
        by_fd = {}
        for n in self.native:
            by_fd[n.client.fileno()] = n
            poller.register(n.client.fileno(), select.POLLIN)
        while True:
            for fd, _events in poller.poll():
                if fd == sync_fd:
                    return 0
                n = by_fd[fd]
                try:
                    close_fds(n.client.read_message(timeout=5).fds)
                except (ClientError, OSError) as e:  # the bus went away: so did the app's connections
                    _say(f"lost the bus at {n.group.address}: {e}")
                    n.path = None
                    return 1

    def stop(self) -> None:
        for n in self.native:
            n.stop()
            n.close()
        self.native = []
        if self.delegate is not None:
            self.delegate.stop()
            self.delegate = None


def _terminate(signum, frame):
    raise SystemExit(0)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = cmdline.parse(argv)
    except cmdline.Exit as e:
        sys.stdout.write(e.text)
        return 0
    except cmdline.CmdlineError as e:
        _say(str(e))
        return 1
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, _terminate)
    proxy = Proxy(args)
    try:
        try:
            proxy.start()
        except (GroupError, ProxyError) as e:
            _say(str(e))
            return 1
        if args.sync_fd is not None:
            try:
                os.write(args.sync_fd, b"x")
            except OSError as e:
                _say(f"cannot write to --fd={args.sync_fd}: {e.strerror}")
                return 1
        return proxy.wait(args.sync_fd)
    finally:
        proxy.stop()
