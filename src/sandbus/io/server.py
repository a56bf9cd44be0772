"""The asyncio side of the bus: accept connections on listeners, hand them
to Connection objects, batch their writes, and shut down cleanly."""

import asyncio
import errno
import logging
import signal

from .connection import Connection

log = logging.getLogger("sandbus.io")


def new_event_loop():
    """uvloop when installed (it is optional), else asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Server:
    def __init__(self, bus, loop, *, uid_allowed=None, allow_anonymous: bool = False):
        self.bus = bus
        self.loop = loop
        self.guid = bus.settings.guid
        self.uid_allowed = uid_allowed or (lambda uid: True)
        self.allow_anonymous = allow_anonymous
        self.listeners = []
        self.connections = set()
        self.incomplete = 0
        self._dirty = []
        self._flush_scheduled = False
        self.dispatching = False
        self.apply_limits()
        bus.call_later = loop.call_later

    def apply_limits(self) -> None:
        limits = self.bus.limits
        self.max_outgoing = limits.max_outgoing_bytes
        self.max_outgoing_fds = limits.max_outgoing_unix_fds
        self.max_pending_fds = min(limits.max_incoming_unix_fds, limits.max_message_unix_fds)
        self.pending_fd_timeout = limits.pending_fd_timeout / 1000.0
        self.max_message_size = min(limits.max_message_size, 128 * 1024 * 1024)
        for conn in self.connections:
            conn.framer.max_message_size = self.max_message_size

    # -- listeners -------------------------------------------------------------

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)
        self.loop.add_reader(listener.sock.fileno(), self._on_accept, listener)

    def remove_listener(self, listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
            try:
                self.loop.remove_reader(listener.sock.fileno())
            except (ValueError, OSError):
                pass
        listener.close()

    def _on_accept(self, listener) -> None:
        limits = self.bus.limits
        for _ in range(64):
            try:
                sock, _ = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._accept_failed(listener, e)
                return
            sock.setblocking(False)
            if self.incomplete >= limits.max_incomplete_connections or \
                    len(self.connections) >= limits.max_completed_connections + limits.max_incomplete_connections:
                log.warning("refusing connection: too many connections")
                sock.close()
                continue
            if listener.container is not None and not listener.container.admit_connection():
                sock.close()
                continue
            try:
                conn = Connection(self, sock, listener)
            except OSError as e:
                log.warning("could not set up connection: %s", e)
                sock.close()
                if listener.container is not None:
                    listener.container.connection_gone(None)  # give back its slot
                continue
            self.connections.add(conn)
            self.incomplete += 1
            if listener.container is not None:
                listener.container.track_pending(conn)

    def _accept_failed(self, listener, error) -> None:
        # Never spin on a socket that keeps failing: out of fds is transient,
        # so pause this listener briefly; anything else stops it for good.
        fd = listener.sock.fileno()
        if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log.warning("accept failed (%s); pausing this listener for 100 ms", error)
            self.loop.remove_reader(fd)
            self.loop.call_later(0.1, lambda: listener in self.listeners and
                                 self.loop.add_reader(fd, self._on_accept, listener))
            return
        if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
            return
        log.error("listening socket failed (%s); no longer accepting on it", error)
        if listener.container is not None:
            listener.container.on_listener_failed()
        else:
            self.remove_listener(listener)

    # -- connection life -------------------------------------------------------

    def authenticated(self, conn, unix_fds: bool):
        # max_connections_per_user is the driver's to check, at Hello
        # (core/driver.py), where dbus-daemon answers LimitsExceeded.
        self.incomplete -= 1
        peer = self.bus.connect(conn, conn.creds, unix_fds, conn.listener)
        return peer

    def connection_closed(self, conn) -> None:
        self.connections.discard(conn)
        if conn.peer is None:
            self.incomplete -= 1
        else:
            self.bus.disconnect(conn.peer)
        if conn.listener.container is not None:
            conn.listener.container.connection_gone(conn.peer, conn)

    # -- write batching --------------------------------------------------------

    def mark_dirty(self, conn) -> None:
        self._dirty.append(conn)
        # Inside a read callback the flush follows right after dispatch.
        if not self._flush_scheduled and not self.dispatching:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush_dirty)

    def flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        while dirty:
            self._dirty = []
            for conn in dirty:
                if not conn.closed:
                    try:
                        conn.flush()
                    except Exception:  # never let one connection stop the others' writes
                        log.exception("internal error writing to a connection")
                        conn.close("internal error while writing")
            dirty = self._dirty

    # -- shutdown --------------------------------------------------------------

    def close(self) -> None:
        for listener in list(self.listeners):
            self.remove_listener(listener)
        for conn in list(self.connections):
            conn.close("bus shutting down")


def install_signal_handlers(loop, stop, reload=None) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
