"""What the kernel says about the process at the other end of an AF_UNIX
socket, read once at connect time (never from /proc, which races)."""

import array
import errno
import socket
import struct

from ..core.peer import Credentials

SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
SO_PEERSEC = getattr(socket, "SO_PEERSEC", 31)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)

_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket, want_pidfd: bool = False) -> Credentials:
    if sock.family != socket.AF_UNIX:
        return Credentials()
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _UCRED.size))
    return Credentials(
        uid=uid,
        pid=pid if pid > 0 else None,
        gids=_peer_groups(sock, gid),
        security_label=_peer_label(sock),
        pidfd=_peer_pidfd(sock) if want_pidfd else None,
    )


def _peer_groups(sock, primary_gid):
    size = 64
    while size <= 65536:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size * 4)
        except OSError as e:
            if e.errno == errno.ERANGE:
                size *= 4
                continue
            return (primary_gid,)  # old kernel: only the primary group is known
        gids = array.array("I")
        gids.frombytes(raw[: len(raw) // 4 * 4])
        return tuple(sorted(set(gids) | {primary_gid}))
    return (primary_gid,)


def _peer_label(sock):
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERSEC, 4096)
    except OSError:
        return None
    raw = raw.rstrip(b"\0")
    # "unconfined" alone carries no information; dbus-daemon omits it too
    return raw or None


def peer_pidfd(sock):
    """A new pidfd for the process that connected (the socket keeps a reference
    to it from connect time, so asking later is not racy); None if unsupported."""
    return _peer_pidfd(sock)


def _peer_pidfd(sock):
    try:
        return sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None
