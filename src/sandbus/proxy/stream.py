"""One non-blocking unix socket of the filtering proxy, on the asyncio
loop: reads bytes and fds (SCM_RIGHTS) for a wire/framer.Framer, writes
queued bytes with their fds, and stops reading while the socket it feeds,
or its own peer, cannot keep up (so a slow reader cannot make the proxy
buffer without end)."""

import array
import os
import socket
from collections import deque

from ..io.fds import close_fds, fds_from_ancillary

READ_SIZE = 65536
_ANC_SIZE = socket.CMSG_SPACE(253 * 4)
# Queued bytes at which a stream's peer, and the other side of the proxy
# (which feeds it), stop being read.
HIGH_WATER = 4 * 1024 * 1024


class Stream:
    """on_data(bytes, fds) for each read; on_close(reason) once.  `partner`
    is the stream fed by what this one reads (paused while it is full).
    With `own_limit`, it is paused too while more than that is queued for
    its own peer: for a client, to which the proxy also answers itself."""

    def __init__(self, loop, sock, on_data, on_close, own_limit=None):
        sock.setblocking(False)
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.on_data = on_data
        self.on_close = on_close
        self.wqueue = deque()  # bytes, or [bytes, fds] (our own copies)
        self.queued = 0
        self.writing = False
        self.reading = False
        self.closed = False
        self.partner = None
        self.own_limit = own_limit
        self.resume()

    def resume(self) -> None:
        if not self.reading and not self.closed:
            self.loop.add_reader(self.fd, self._readable)
            self.reading = True

    def pause(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _readable(self) -> None:
        try:
            data, anc, _flags, _ = self.sock.recvmsg(READ_SIZE, _ANC_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"read error: {e.strerror}")
            return
        fds = fds_from_ancillary(anc) if anc else []
        if not data:
            close_fds(fds)
            self.close("hung up")
            return
        self.on_data(data, fds)
        if not self._may_read():
            self.pause()

    def _may_read(self) -> bool:
        """Neither what this stream feeds (forwarded) nor, with own_limit,
        its own queue (what the proxy answers it itself: errors, its own
        replies) is full.  A client that does not read what it is sent is
        not read until it does, as the bus treats its own connections
        (io/connection.py): else the proxy's answers to one would grow
        without end."""
        partner = self.partner
        if partner is not None and partner.queued > HIGH_WATER:
            return False
        limit = self.own_limit
        return limit is None or self.queued <= limit

    def send(self, data: bytes, fds=()) -> None:
        """Queue data (and copies of fds: the caller keeps its own)."""
        if self.closed:
            return
        if not fds and not self.wqueue:
            # the common case: the socket takes it all at once
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self.close(f"write error: {e.strerror}")
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
        if fds:
            try:
                copies = [os.dup(fd) for fd in fds]
            except OSError as e:
                self.close(f"cannot pass unix fds: {e.strerror}")
                return
            self.wqueue.append([data, copies])
        else:
            self.wqueue.append(data)
        self.queued += len(data)
        if not self.writing:
            self._flush()

    def _flush(self) -> None:
        q = self.wqueue
        sock = self.sock
        while q:
            item = q[0]
            try:
                if type(item) is list:
                    data, fds = item
                    n = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                    close_fds(fds)
                    item[1] = ()  # they went with the first byte
                else:
                    data = item
                    n = sock.send(data)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.close(f"write error: {e.strerror}")
                return
            self.queued -= n
            if n == len(data):
                q.popleft()
            elif type(item) is list:
                item[0] = memoryview(data)[n:]
            else:
                q[0] = memoryview(data)[n:]
        if q:
            if not self.writing:
                self.loop.add_writer(self.fd, self._flush)
                self.writing = True
            return
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False
        # drained: whoever feeds us, and we ourselves, may be read again
        if not self.reading and self._may_read():
            self.resume()
        other = self.partner
        if other is not None and other.partner is self and not other.reading and other._may_read():
            other.resume()

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self.pause()
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False
        for item in self.wqueue:
            if type(item) is list:
                close_fds(item[1])
        self.wqueue.clear()
        self.sock.close()
        self.on_close(reason)
