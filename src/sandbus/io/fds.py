"""File descriptors the io layer lends to the bus core: how the core lets
go of the ones a message carried, and takes copies it may keep."""

import os


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
