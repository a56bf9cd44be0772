"""systemd socket activation (sd_listen_fds(3)): listening sockets passed as
fds 3.. with LISTEN_FDS/LISTEN_PID, used instead of binding <listen>
addresses (dbus-daemon does this for the address ``systemd:``)."""

import os
import socket

from .listener import Listener

SD_LISTEN_FDS_START = 3


def take_listen_fds(environ=None) -> list:
    """The passed fds, if they are meant for this process; the LISTEN_*
    variables are removed either way (children must not see them)."""
    env = os.environ if environ is None else environ
    pid = env.pop("LISTEN_PID", None)
    count = env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return []
    try:
        if int(pid) != os.getpid():
            return []
        n = int(count)
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + max(n, 0)))


def listeners_from_fds(fds) -> list:
    """A Listener for each passed listening AF_UNIX stream socket."""
    result = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        try:
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or \
                    not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                raise OSError(f"fd {fd} passed by systemd is not a listening unix stream socket")
            os.set_inheritable(fd, False)
            sock.setblocking(False)
            name = sock.getsockname()
        except OSError:
            sock.detach()
            for lst in result:
                lst.close()
            raise
        if isinstance(name, bytes):  # abstract
            name = name.decode("utf-8", "surrogateescape")
        if name.startswith("\0"):
            params = ("unix", {"abstract": name[1:]})
            path = None
        else:
            params = ("unix", {"path": name})
            path = name
        # systemd owns the socket file: never unlink it
        result.append(Listener(sock, params, path=path, owned=False))
    return result
