"""One client connection: SASL, then framing of messages into the bus core,
and batched, fd-carrying writes back out.  It is the core's 'sink'."""

import array
import logging
import os
import socket
from collections import deque

from ..wire.framer import Framer, FramingError, MessageTooLarge
from ..wire.message import ProtocolError
from .listener import make_sasl
from .credentials import peer_credentials, peer_pidfd
from .fds import close_fds, fds_from_ancillary

log = logging.getLogger("sandbus.io")

READ_SIZE = 64 * 1024
MAX_FDS_PER_READ = 253  # the kernel's SCM_MAX_FD
_ANC_SIZE = socket.CMSG_SPACE(MAX_FDS_PER_READ * 4)
_WRITE_CHUNK = 1024 * 1024
# a plain int: socket.MSG_CTRUNC is an IntFlag, and int & IntFlag runs
# enum's Python-level __rand__ on every read
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_MAX_IOV = 1024  # the kernel's UIO_MAXIOV: sendmsg refuses more buffers
# Write out what routing queued after this many messages of one read, not
# only at its end: the receivers start on the first ones while we route the
# rest.  64 calls in flight: 0.88x dbus-daemon's calls/s when the whole read
# was routed first; 1.25x after every 16; 1.5-1.7x after every 32; 1.18x
# after every 48 (bench inflight, 3 runs each, 2 cores).
FLUSH_EVERY = 32
# At most this many messages of one connection are routed per event-loop
# turn; the rest stays in its framer (in order, fds with it) and is routed
# on the next turn, when every other ready connection had its turn too.
# Unbounded, a flooder's pipelined calls (one read: hundreds of messages,
# and eight reads per turn) kept every other client waiting behind them
# (victim p99 ~300 ms in bench/flood.py).
MESSAGES_PER_TURN = 32


class Connection:
    __slots__ = (
        "server", "sock", "fd", "listener", "sasl", "peer", "creds", "framer", "wqueue",
        "queued_bytes", "closed", "auth_timer", "reading", "writing", "dirty",
        "queued_fds", "fd_timer", "budget", "backlog",
    )

    def __init__(self, server, sock: socket.socket, listener):
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.listener = listener
        self.creds = peer_credentials(sock)
        self.sasl = make_sasl(server, self, listener)  # per listener: mechanisms, fds
        self.peer = None
        # SASL lines, then messages with their fds; it also holds the fds
        # that arrived ahead of their message.
        self.framer = Framer(sasl="server", max_message_size=server.max_message_size)
        self.queued_fds = 0
        self.fd_timer = None
        self.wqueue = deque()  # bytes or memoryview; [data, fds] for a message with fds
        self.queued_bytes = 0
        self.closed = False
        self.reading = False
        self.writing = False
        self.dirty = False
        self.budget = MESSAGES_PER_TURN  # messages it may still have routed this turn
        self.backlog = False  # whole messages wait in the framer for the next turn
        self.auth_timer = server.loop.call_later(server.bus.limits.auth_timeout / 1000.0,
                                                 self._auth_timeout)
        self._start_reading()

    # -- reading ---------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self.reading and not self.closed:
            self.server.loop.add_reader(self.fd, self._on_readable)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading:
            self.server.loop.remove_reader(self.fd)
            self.reading = False

    def _on_readable(self) -> None:
        server = self.server
        server.dispatching = True
        self.budget = MESSAGES_PER_TURN
        try:
            for _ in range(8):  # bounded, so one busy peer cannot starve others
                if self.framer.big is not None:
                    if not self._read_big() or self.framer.fds and not self._check_pending_fds():
                        return
                    if self.framer.big is not None:
                        break  # the kernel had no more for now
                    continue
                peer = self.peer
                try:
                    if peer is not None and not peer.unix_fds:
                        # No fds negotiated: no ancillary buffer to hand the
                        # kernel and none to parse.  Fds sent anyway are
                        # closed by the kernel, which says so by MSG_CTRUNC.
                        data, anc, flags, _ = self.sock.recvmsg(READ_SIZE)
                        if flags & _MSG_CTRUNC:
                            self.server.bus.kick(peer, "sent unix fds without negotiating them")
                            return
                    else:
                        data, anc, flags, _ = self.sock.recvmsg(READ_SIZE, _ANC_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    self.close(f"read error: {e}")
                    return
                fds = fds_from_ancillary(anc) if anc else ()
                if not data:
                    close_fds(fds)
                    self.close("peer hung up")
                    return
                if self.peer is None:
                    self._authenticate(data, fds)
                elif fds and not self.peer.unix_fds:
                    close_fds(fds)
                    self.server.bus.kick(self.peer, "sent unix fds without negotiating them")
                    return
                else:
                    self._frames(data, fds)
                if self.closed:
                    return
                if self.backlog or self.budget <= 0:
                    # _next_turn reads again once the backlog is routed; else
                    # the loop calls us again on its next turn
                    break
                if self.fd_timer is not None or self.framer.fds:
                    if not self._check_pending_fds():
                        return
                if self.queued_bytes > server.max_outgoing:
                    # It does not read what we send: stop reading from it until it does.
                    self._stop_reading()
                    break
                if len(data) < READ_SIZE:
                    break
        finally:
            server.dispatching = False
            server.flush_dirty()

    def _hold_rest(self) -> None:
        """The turn's budget is spent with whole messages still buffered:
        read nothing more (the kernel's buffer and then the sender wait)
        and route them on the next turn."""
        self.backlog = True
        self._stop_reading()
        self.server.loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        if self.closed or self.peer is None:
            return
        server = self.server
        server.dispatching = True
        self.budget = MESSAGES_PER_TURN
        self.backlog = False
        try:
            self._frames(b"")
            if self.closed or self.backlog:
                return
            # Fds of the messages routed are claimed; what is left belongs
            # to the message still arriving, as after a read.
            if (self.fd_timer is not None or self.framer.fds) and not self._check_pending_fds():
                return
            self._resume_reading()
        finally:
            server.dispatching = False
            server.flush_dirty()

    def _deliver(self, frame) -> bool:
        """Hand one message to the bus; False if handling it failed."""
        peer = self.peer
        try:
            self.server.bus.receive(peer, frame)
        except Exception:  # a bug must cost only this sender its connection
            log.exception("internal error handling a message from %s", peer.unique_name)
            self.server.bus.kick(peer, "internal error while handling its message")
            return False
        return True

    def _read_big(self) -> bool:
        """Read more of a large message into its buffer; False if closed."""
        into = self.framer.read_into()
        want = len(into)
        try:
            if self.peer.unix_fds:
                n, anc, flags, _ = self.sock.recvmsg_into([into], _ANC_SIZE)
            else:  # as in _on_readable: no ancillary buffer without fds
                n, anc, flags, _ = self.sock.recvmsg_into([into])
                if flags & _MSG_CTRUNC:
                    self.server.bus.kick(self.peer, "sent unix fds without negotiating them")
                    return False
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as e:
            self.close(f"read error: {e}")
            return False
        fds = fds_from_ancillary(anc) if anc else ()
        if fds and not self.peer.unix_fds:
            close_fds(fds)
            self.server.bus.kick(self.peer, "sent unix fds without negotiating them")
            return False
        if n == 0:
            close_fds(fds)
            self.close("peer hung up")
            return False
        done = self.framer.filled(n, fds)
        if done is not None:
            peer = self.peer
            frame, fds = done
            if fds:
                peer.incoming_fds.extend(fds)
            if not self._deliver(frame) or self.closed or peer.closed:
                return False
            if self.queued_bytes > self.server.max_outgoing:
                self._stop_reading()
                return False
        elif n < want:
            return True
        return not self.closed

    def _check_pending_fds(self) -> bool:
        """Fds arrive with the first bytes of their message, so once what was
        read is routed, only the message still arriving may have fds waiting:
        more than one message may carry is abuse, and they may not wait
        longer than pending_fd_timeout.  False if the peer was disconnected."""
        pending = self.framer.fds
        server = self.server
        if len(pending) > server.max_pending_fds:
            server.bus.kick(self.peer, "too many unix fds waiting for their message "
                            "(max_incoming_unix_fds / max_message_unix_fds)")
            return False
        if pending and self.fd_timer is None:
            self.fd_timer = server.loop.call_later(server.pending_fd_timeout, self._fds_timed_out)
        elif not pending and self.fd_timer is not None:
            self.fd_timer.cancel()
            self.fd_timer = None
        return True

    def _fds_timed_out(self) -> None:
        self.fd_timer = None
        if self.peer is not None and self.framer.fds and not self.closed:
            self.server.bus.kick(self.peer, "unix fds were left waiting longer than pending_fd_timeout")

    def _authenticate(self, data: bytes, fds) -> None:
        sasl = self.sasl
        out = []
        try:
            # Fds that come with BEGIN belong to the messages pipelined
            # behind it; the framer holds them and refuses any others.
            for line in self.framer.lines(data, fds):
                out.append(sasl.line(line))
                if sasl.done or sasl.failed:
                    break
        except FramingError as e:
            if out:
                self._queue(b"".join(out), ())
            self.close(f"authentication failed: {e}")
            return
        reply = b"".join(out)
        if reply:
            self._queue(reply, ())
        if sasl.failed:
            self.close(f"authentication failed: {sasl.failure}")
            return
        if sasl.done:
            self.sasl = None  # its state is no longer needed: keep idle connections small
            self.peer = self.server.authenticated(self, sasl.unix_fds)
            if self.peer is None:
                return
            if self.framer.fds and not sasl.unix_fds:
                close_fds(self.framer.close())
                self.server.bus.kick(self.peer, "sent unix fds without negotiating them")
                return
            if self.framer.pending:
                self._frames(b"")

    def _frames(self, data: bytes, fds=()) -> None:
        peer = self.peer
        delivered = 0
        try:
            # The common read, one whole message and nothing pending, skips
            # the generator (3% of the instructions of a sequential call).
            frame = None if fds else self.framer.single(data)
            if frame is not None:
                self.budget -= 1
                if self._deliver(frame) and self.auth_timer is not None and peer.unique_name is not None:
                    self.auth_timer.cancel()
                    self.auth_timer = None
                return
            frames = self.framer.frames(data, fds)
            try:
                for frame, mine in frames:
                    if mine:
                        peer.incoming_fds.extend(mine)
                    if not self._deliver(frame):
                        return
                    if peer.closed:
                        return
                    if self.auth_timer is not None and peer.unique_name is not None:
                        # auth_timeout covers the whole handshake, up to Hello
                        # (before the budget check: Hello may end a turn)
                        self.auth_timer.cancel()
                        self.auth_timer = None
                    self.budget -= 1
                    if self.budget <= 0:
                        # stopping the generator keeps the rest buffered (wire/framer.py)
                        self._hold_rest()
                        return
                    delivered += 1
                    if delivered == FLUSH_EVERY:
                        delivered = 0
                        self.server.flush_dirty()
                        if peer.closed:  # a write error on its own queue
                            return
            finally:
                frames.close()
        except MessageTooLarge as e:
            self.server.bus.kick(peer, str(e))
        except ProtocolError as e:
            self.server.bus.kick(peer, f"invalid message: {e}")

    # -- writing (the core calls send/close) ----------------------------------

    def send(self, data: bytes, fds=()) -> None:
        if fds or self.closed:
            self._send_with_fds(data, fds)
            return
        self.wqueue.append(data)
        self.queued_bytes += len(data)
        if not self.dirty:
            self.dirty = True
            self.server.mark_dirty(self)

    def send_parts(self, head: bytes, body, fds=()) -> None:
        """One message as its header and a view of its body
        (Message.forwarded_parts): queued as two buffers, which _flush_queue
        writes with one sendmsg, so the body is not copied on the way."""
        if fds or self.closed:
            self._send_with_fds(b"".join((head, body)), fds)
            return
        q = self.wqueue
        q.append(head)
        q.append(body)
        self.queued_bytes += len(head) + len(body)
        if not self.dirty:
            self.dirty = True
            self.server.mark_dirty(self)

    def _send_with_fds(self, data: bytes, fds) -> None:
        if self.closed:
            return
        if self.queued_fds + len(fds) > self.server.max_outgoing_fds:
            self.close("too many unix fds queued for a peer that does not read")
            return
        copies = []  # our own copies, closed once sent
        try:
            for fd in fds:
                copies.append(os.dup(fd))
        except OSError as e:
            for fd in copies:
                os.close(fd)
            self.close(f"cannot queue unix fds: {e}")
            return
        self.queued_fds += len(copies)
        # A message with fds is queued as a list [data, fds]; one without
        # as its bytes alone, which is the common case and the cheap one.
        self.wqueue.append([data, copies])
        self.queued_bytes += len(data)
        if not self.dirty:
            self.dirty = True
            self.server.mark_dirty(self)

    _queue = send

    def flush(self) -> None:
        self.dirty = False
        q = self.wqueue
        if len(q) == 1 and not self.writing and type(q[0]) is not list:
            # The common case: one message, nothing waiting behind it.
            data = q[0]
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self.close(f"write error: {e}")
                return
            self.queued_bytes -= n
            if n == len(data):
                q.clear()
                if not self.reading:
                    self._resume_reading()
                return
            q[0] = memoryview(data)[n:]
        self._flush_queue()

    def _flush_queue(self) -> None:
        q = self.wqueue
        sock = self.sock
        while q:
            item = q[0]
            try:
                if type(item) is list:
                    data, fds = item
                    n = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                    for fd in fds:
                        os.close(fd)
                    self.queued_fds -= len(fds)
                    self.queued_bytes -= n
                    if n == len(data):
                        q.popleft()
                    else:
                        q[0] = memoryview(data)[n:]  # its fds went with its first byte
                    continue
                if len(q) > 1 and len(item) < _WRITE_CHUNK and type(q[1]) is not list:
                    # Several messages: one sendmsg of all their buffers
                    # (writev), without joining them into a copy first.
                    parts = []
                    size = 0
                    for d in q:
                        if type(d) is list or size >= _WRITE_CHUNK or len(parts) == _MAX_IOV:
                            break
                        parts.append(d)
                        size += len(d)
                    n = sock.sendmsg(parts)
                    self.queued_bytes -= n
                    left = n
                    for d in parts:
                        if left < len(d):
                            break
                        left -= len(d)
                        q.popleft()
                    if left:
                        q[0] = memoryview(q[0])[left:]
                    if n < size:
                        break  # the socket is full
                    continue
                n = sock.send(item)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                # Whatever the error (EPIPE, ETOOMANYREFS, ...), it is this
                # connection's alone.
                self.close(f"write error: {e}")
                return
            self.queued_bytes -= n
            if n == len(item):
                q.popleft()
            else:
                q[0] = memoryview(item)[n:]
                break
        loop = self.server.loop
        if q and not self.writing and not self.closed:
            loop.add_writer(self.fd, self._on_writable)
            self.writing = True
        elif not q and self.writing:
            loop.remove_writer(self.fd)
            self.writing = False
        self._resume_reading()

    def _resume_reading(self) -> None:
        if not self.reading and self.peer is not None and not self.closed and not self.backlog \
                and self.queued_bytes <= self.server.max_outgoing // 2:
            self._start_reading()

    def _on_writable(self) -> None:
        self.flush()

    # -- teardown --------------------------------------------------------------

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        log.debug("closing connection %d: %s", self.fd, reason)
        loop = self.server.loop
        if self.reading:
            loop.remove_reader(self.fd)
            self.reading = False
        if self.writing:
            loop.remove_writer(self.fd)
            self.writing = False
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        if self.fd_timer is not None:
            self.fd_timer.cancel()
        # Best effort: what was already queued (e.g. an error reply) goes out first.
        try:
            for item in self.wqueue:
                # Whole messages only: a partial one would put a fragment
                # and then the next message's start on the wire.
                if type(item) is list or self.sock.send(item) < len(item):
                    break
        except OSError:
            pass
        for item in self.wqueue:
            if type(item) is list:
                for fd in item[1]:
                    os.close(fd)
        close_fds(self.framer.close())
        self.wqueue.clear()
        self.queued_bytes = 0
        try:
            self.sock.close()
        except OSError:
            pass
        if self.creds.pidfd is not None:
            try:
                os.close(self.creds.pidfd)
            except OSError:
                pass
        self.server.connection_closed(self)

    def pidfd(self):
        """Fetched on demand: holding one per connection would double our fds."""
        if self.closed or self.sock.family != socket.AF_UNIX:
            return None
        return peer_pidfd(self.sock)

    def _auth_timeout(self) -> None:
        self.auth_timer = None
        if self.peer is None or self.peer.unique_name is None:
            self.close("authentication timed out")
