"""`sandbus-dbus-proxy`: a drop-in for xdg-dbus-proxy
(`FLATPAK_DBUSPROXY=$(command -v sandbus-dbus-proxy) flatpak run APP`).

Every group whose bus has Containers1 becomes a container instance
(proxy/native.py).  Groups on buses without it (dbus-daemon, dbus-broker,
the a11y bus) get our own filtering proxy (proxy/backend.py), all of them
on one asyncio loop in this process.

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


class ProxyError(Exception):
    pass


def _say(text: str) -> None:
    sys.stderr.write(f"{cmdline.PROG}: {text}\n")
    sys.stderr.flush()


class Proxy:
    def __init__(self, args):
        self.args = args
        self.native = []
        self.proxied = []  # groups for the proxy back end
        self.listening = []  # proxied groups' sockets, until the loop serves them
        self.backends = []
        self.loop = None
        self.status = 0

    def start(self) -> None:
        app_id, metadata = None, None
        for group in self.args.groups:
            client = connect(group.address)
            if not has_native_support(client):
                client.close()  # the bus is reachable: that is all a proxied group needs of it now
                self.proxied.append(group)
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
        if self.proxied:
            self._start_backends(app_id)

    def _start_backends(self, app_id) -> None:
        from .listening import Listening
        if app_id is None:
            try:
                app_id = flatpak_info.load()[0]  # only to name the app in log lines
            except flatpak_info.FlatpakInfoError:
                app_id = None
        self.app_id = app_id
        for group in self.proxied:
            self.listening.append(Listening(group))

    def _run_backends(self) -> None:
        import asyncio  # after x: Flatpak is not kept waiting for it
        from .backend import ProxyGroup
        if any(g.log for g in self.proxied):
            import logging
            logging.basicConfig(format=f"{cmdline.PROG}: %(message)s", level=logging.INFO)
        self.loop = asyncio.new_event_loop()
        for listening in self.listening:
            backend = ProxyGroup(self.loop, listening, self.app_id)
            self.backends.append(backend)
            backend.start()
        self.listening = []

    def wait(self, sync_fd) -> int:
        """Until sync_fd hangs up (0), or a bus connection closes (1)."""
        if self.listening:
            self._run_backends()
            return self._wait_loop(sync_fd)
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
                if self._native_event(by_fd[fd]):
                    return 1

    def _native_event(self, n) -> bool:
        """A native group's manager connection is readable: True if the bus is gone."""
        try:
            close_fds(n.client.read_message(timeout=5).fds)
        except (ClientError, OSError) as e:  # the bus went away: so did the app's connections
            _say(f"lost the bus at {n.group.address}: {e}")
            n.path = None
            return True
        return False

    def _wait_loop(self, sync_fd) -> int:
        loop = self.loop

        def done(status):
            self.status = status
            loop.stop()

        if sync_fd is not None:
            # the write end of a pipe is never readable: the loop reports
            # its hang-up (EPOLLERR) as readable
            loop.add_reader(sync_fd, done, 0)
        for n in self.native:
            loop.add_reader(n.client.fileno(), lambda n=n: self._native_event(n) and done(1))
        import gc
        # What start-up made lives as long as we do: out of the collector's
        # way.  Each message makes a few short-lived objects, freed by
        # their reference counts; collections of the young ones can be rarer.
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        loop.run_forever()
        if sync_fd is not None:
            loop.remove_reader(sync_fd)
        for n in self.native:
            loop.remove_reader(n.client.fileno())
        return self.status

    def stop(self) -> None:
        for n in self.native:
            n.stop()
            n.close()
        self.native = []
        # a proxied group is served (backends) or, if the loop never ran,
        # only listening: either way its socket and its path go
        for part in self.backends + self.listening:
            part.close()
            try:
                os.unlink(part.group.path)
            except OSError:
                pass
        self.backends = []
        self.listening = []
        if self.loop is not None:
            self.loop.close()
            self.loop = None


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
