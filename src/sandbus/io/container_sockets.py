"""Sockets for container instances, made on behalf of the containers layer:
new listening sockets in the containers directory, adopted fd-passed ones,
and watches on notification pipes."""

import fcntl
import os
import secrets
import socket
import stat

from .listener import Listener, bind_unix_path


class ContainerSockets:
    def __init__(self, server):
        self.server = server

    @staticmethod
    def default_directory(bus_type: str) -> str:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and bus_type != "system":
            return os.path.join(runtime, "dbus-1", "containers")
        return "/run/dbus/containers"

    def create(self, directory: str) -> Listener:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        st = os.lstat(directory)
        # Someone else's directory would let them swap our sockets; root may
        # use one the distribution made for the system bus (messagebus-owned).
        if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022 or \
                (st.st_uid != os.getuid() and os.getuid() != 0):
            raise OSError(f"{directory} must be a directory owned by the bus user and writable only by it")
        path = os.path.join(directory, "dbus-" + secrets.token_hex(10))
        listener = bind_unix_path(path)
        # Anyone may connect at the filesystem level; the bus itself only
        # lets the creator's uid authenticate.
        os.chmod(path, 0o666)
        return listener

    def adopt(self, fd: int) -> Listener:
        """A socket the container manager bound itself (e.g. inside a sandbox)."""
        own = os.dup(fd)
        try:
            sock = socket.socket(fileno=own)
        except OSError as e:
            os.close(own)  # not a socket at all: no fd may stay behind
            raise ValueError(f"Socket must be an AF_UNIX stream socket ({e.strerror})") from None
        try:
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError("Socket must be an AF_UNIX stream socket")
            if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise ValueError("Socket must already be listening")
        except ValueError:
            sock.close()
            raise
        except OSError as e:
            sock.close()
            raise ValueError(f"Socket is not usable: {e}")
        sock.setblocking(False)
        name = sock.getsockname()
        params = {"path": name} if isinstance(name, str) and name else {"abstract": "(passed)"}
        return Listener(sock, ("unix", params), path=None, owned=False)

    @staticmethod
    def check_notification_fd(fd: int, what: str) -> None:
        """ReadyNotification / StopOnNotify: something the loop can watch for
        readable/hang-up, i.e. the read end of a pipe or FIFO, or a socket.
        A regular file or a write end would be accepted by AddServer and then
        fail in the loop (epoll refuses regular files), so refuse them here."""
        try:
            st = os.fstat(fd)
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError as e:
            raise ValueError(f"{what} is not usable: {e}") from None
        if stat.S_ISSOCK(st.st_mode):
            return
        if not stat.S_ISFIFO(st.st_mode):
            raise ValueError(f"{what} must be the read end of a pipe or FIFO, or a socket")
        if mode not in (os.O_RDONLY, os.O_RDWR):
            raise ValueError(f"{what} must be the read end of a pipe, not its write end")

    def start(self, listener: Listener) -> None:
        self.server.add_listener(listener)

    def stop(self, listener: Listener) -> None:
        if listener in self.server.listeners:
            self.server.remove_listener(listener)
        else:
            listener.close()

    def watch(self, fd: int, callback, once: bool = True):
        """Call callback when fd polls readable or hung up; returns cancel()."""
        loop = self.server.loop
        own = os.dup(fd)
        state = {"active": True}

        def cancel():
            if state["active"]:
                state["active"] = False
                loop.remove_reader(own)
                os.close(own)

        def fire():
            if once:
                cancel()
            callback()

        try:
            loop.add_reader(own, fire)
        except (OSError, ValueError):
            os.close(own)
            raise
        return cancel
