"""File descriptors the io layer lends to the bus core: how the core lets
go of the ones a message carried, and takes copies it may keep; and the
fds a socket read brought."""

import array
import os
import socket


def close_fds(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def dup_fds(fds) -> list:
    copies = []
    try:
        for fd in fds:
            copies.append(os.dup(fd))
    except OSError:
        close_fds(copies)
        raise
    return copies


def fds_from_ancillary(anc) -> list:
    """The fds of recvmsg's ancillary data (SCM_RIGHTS)."""
    fds = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[: len(payload) // 4 * 4])
            fds.extend(a)
    return fds
