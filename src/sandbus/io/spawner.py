"""Starting activated services: fork/exec with the activation environment,
optionally as the service file's User= (only when the bus runs as root),
reaping every child, and reporting its exit to the core
(``sandbus.core.activation``)."""

import logging
import os
import resource
import signal
import subprocess

log = logging.getLogger("sandbus.spawner")


class Child:
    """A started service process."""

    def __init__(self, spawner, proc, on_exit):
        self.spawner = spawner
        self.proc = proc
        self.pid = proc.pid if proc is not None else None
        self.on_exit = on_exit
        self.pidfd = None
        self.done = proc is None

    def kill(self) -> None:
        if not self.done and self.proc is not None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except OSError:
                pass


class Spawner:
    def __init__(self, loop):
        self.loop = loop
        self.children = set()
        self._poll_handle = None
        # the daemon raises its own fd limit; services get the one it started with
        self.initial_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)

    def spawn(self, log_name: str, argv, env: dict, user, on_exit) -> Child:
        kwargs = {}
        if user and os.geteuid() == 0:
            try:
                import pwd
                pw = pwd.getpwnam(user)
            except KeyError:
                child = Child(self, None, on_exit)
                self.loop.call_soon(on_exit, "setup-failed", f"Could not find user '{user}' for service {log_name}")
                return child
            if pw.pw_uid != 0:
                kwargs.update(user=pw.pw_uid, group=pw.pw_gid,
                              extra_groups=os.getgrouplist(pw.pw_name, pw.pw_gid))
        initial = self.initial_nofile
        if resource.getrlimit(resource.RLIMIT_NOFILE) != initial:
            kwargs["preexec_fn"] = lambda: _restore_nofile(initial)
        executable = argv[0] if "/" in argv[0] else "./" + argv[0]  # execve: no PATH search
        try:
            proc = subprocess.Popen(argv, executable=executable, env=env, stdin=subprocess.DEVNULL,
                                    close_fds=True, restore_signals=True, **kwargs)
        except (OSError, subprocess.SubprocessError) as e:
            # dbus-daemon learns of an exec failure from its babysitter, later
            text = getattr(e, "strerror", None) or str(e)
            child = Child(self, None, on_exit)
            self.loop.call_soon(on_exit, "exec-failed", text)
            return child
        child = Child(self, proc, on_exit)
        self.children.add(child)
        try:
            child.pidfd = os.pidfd_open(proc.pid)
            self.loop.add_reader(child.pidfd, self._reap, child)
        except (AttributeError, OSError):
            child.pidfd = None
            self._schedule_poll()
        log.debug("started %s (pid %d): %r", log_name, proc.pid, argv)
        return child

    def _schedule_poll(self) -> None:
        if self._poll_handle is None:
            self._poll_handle = self.loop.call_later(0.05, self._poll)

    def _poll(self) -> None:
        self._poll_handle = None
        for child in list(self.children):
            if child.pidfd is None:
                self._reap(child)
        if any(c.pidfd is None for c in self.children):
            self._schedule_poll()

    def _reap(self, child: Child) -> None:
        status = child.proc.poll()
        if status is None:
            return
        child.done = True
        self.children.discard(child)
        if child.pidfd is not None:
            self.loop.remove_reader(child.pidfd)
            os.close(child.pidfd)
            child.pidfd = None
        if status < 0:
            child.on_exit("signaled", -status)
        else:
            child.on_exit("exited", status)

    def close(self) -> None:
        """Stop watching (activated services outlive the bus, as with dbus-daemon)."""
        for child in list(self.children):
            if child.pidfd is not None:
                try:
                    self.loop.remove_reader(child.pidfd)
                except (ValueError, OSError):
                    pass
                os.close(child.pidfd)
                child.pidfd = None
        self.children.clear()
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None


def _restore_nofile(limit) -> None:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)
    except (ValueError, OSError):
        pass
