"""The proxy back end: a group whose bus has no Containers1 (dbus-daemon,
dbus-broker, the a11y bus) gets a filtering proxy on PATH, in this asyncio
process.  Each client gets its own connection to the bus, as with
xdg-dbus-proxy; we do the SASL handshake with the client ourselves
(pipelined or not), and every message passes through its ClientFilter
(proxy/filter.py), which applies the group's rules with the containers'
rule engine."""

import logging
import secrets
import socket
import struct

from ..io.fds import close_fds
from ..wire.framer import Framer, FramingError
from ..wire.message import Message, ProtocolError
from ..wire.sasl import SaslServer
from .filter import ClientFilter
from .stream import HIGH_WATER, Stream
from .upstream import UpstreamAuth, UpstreamError, connect, greeting
from .view import ProxyInstance

log = logging.getLogger("sandbus.proxy")

SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_UCRED = struct.Struct("3i")


class ProxyGroup:
    """A group served by the proxy back end, from its Listening (made
    before Flatpak was told we are ready: clients wait in the socket's
    backlog until the loop runs)."""

    def __init__(self, loop, listening, app_id: str):
        self.loop = loop
        self.group = group = listening.group
        self.instance = ProxyInstance(app_id or group.path, listening.rules, group.log, path=group.path)
        self.guid = secrets.token_hex(16)
        self.target = listening.target  # resolved once: every client connects there
        self.sock = listening.sock
        self.sessions = set()

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("accept on %s: %s", self.group.path, e)
            return
        try:
            Session(self, conn)
        except OSError as e:
            log.warning("client on %s: %s", self.group.path, e)
            conn.close()

    def close(self) -> None:
        for s in list(self.sessions):
            s.close("the proxy is stopping")
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


def _send_all(stream, out) -> None:
    """Send (bytes, fds) items, those without fds in one write; the fds are
    ours to close once the stream has its copies."""
    if len(out) == 1:
        data, fds = out[0]
        stream.send(data, fds)
        close_fds(fds)
        return
    batch = []
    for data, fds in out:
        if fds:
            if batch:
                stream.send(b"".join(batch))
                batch = []
            stream.send(data, fds)
            close_fds(fds)
        else:
            batch.append(data)
    if batch:
        stream.send(b"".join(batch))


class Session:
    """One client and its connection to the bus."""

    def __init__(self, group: ProxyGroup, conn: socket.socket):
        self.group = group
        _pid, uid, _gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, SO_PEERCRED, _UCRED.size))
        self.uid = uid
        self.closed = False
        self.filter = None
        self.sasl = SaslServer(group.guid, uid, allow_unix_fds=True)
        self.client_framer = Framer(sasl="server")
        self.auth = UpstreamAuth()
        self.upstream_ready = False
        self.waiting = []  # (bytes, fds) for the bus before it has answered our handshake
        self.bus_framer = None
        self.upstream = None
        loop = group.loop
        # The client's own queue is bounded too: the proxy answers it itself
        # (refusals, the bus's picture), whatever the bus reads.  Not the
        # bus's: what goes there is only what the client (paused by it) and
        # the proxy's bookkeeping send, and not reading the bus while it
        # does not read us could stall both for good.
        self.client = Stream(loop, conn, self._client_data, self._client_closed, own_limit=HIGH_WATER)
        try:
            up = connect(group.target)
        except UpstreamError as e:
            self.client.close()
            raise OSError(str(e)) from None
        self.upstream = Stream(loop, up, self._upstream_data, self._upstream_closed)
        self.client.partner = self.upstream
        self.upstream.partner = self.client
        self.upstream.send(greeting(uid))
        group.sessions.add(self)

    # -- the client ------------------------------------------------------------

    def _client_data(self, data: bytes, fds) -> None:
        if self.filter is None:
            self._client_auth(data, fds)
            return
        self._client_frames(data, fds)

    def _client_auth(self, data, fds) -> None:
        sasl = self.sasl
        out = []
        try:
            for line in self.client_framer.lines(data, fds):
                out.append(sasl.line(line))
                if sasl.done or sasl.failed:
                    break
        except FramingError as e:
            self.close(f"authentication failed: {e}")
            return
        reply = b"".join(out)
        if reply:
            self.client.send(reply)
        if sasl.failed:
            self.close(f"authentication failed: {sasl.failure}")
            return
        if sasl.done:
            self.filter = ClientFilter(self.group.instance, unix_fds=sasl.unix_fds)
            self.sasl = None
            self.client.on_data = self._client_frames
            if self.client_framer.fds and not sasl.unix_fds:
                self.close("sent unix fds without negotiating them")
                return
            # messages pipelined behind BEGIN (sd-bus, zbus) are in the framer
            self._client_frames(b"", ())

    def _client_frames(self, data, fds) -> None:
        f = self.filter
        try:
            frame = None if fds else self.client_framer.single(data)
            if frame is not None:
                # one whole message, nothing pending: the common read
                f.from_client(Message(frame, []))
                if f.closed_reason:
                    self.close(f.closed_reason)
                    return
                self._flush()
                return
            for frame, mine in self.client_framer.frames(data, fds):
                try:
                    msg = Message(bytes(frame), list(mine))
                except ProtocolError:
                    close_fds(mine)
                    raise
                f.from_client(msg)
                if f.closed_reason:
                    self.close(f.closed_reason)
                    return
        except ProtocolError as e:
            self.close(f"invalid message from the client: {e}")
            return
        self._flush()

    def _client_closed(self, reason) -> None:
        self.close(f"client {reason}")

    # -- the bus ---------------------------------------------------------------

    def _upstream_data(self, data: bytes, fds) -> None:
        if not self.upstream_ready:
            close_fds(fds)
            auth = self.auth
            auth.feed(data)
            if auth.failure:
                self.close(auth.failure)
                return
            if not auth.done:
                return
            self.upstream_ready = True
            self.auth = None
            data, fds = b"", ()
            waiting, self.waiting = self.waiting, []
            _send_all(self.upstream, waiting)
            framer = auth.framer
        else:
            framer = self.bus_framer
        self.bus_framer = framer
        f = self.filter
        try:
            frame = None if fds or f is None else framer.single(data)
            if frame is not None:
                f.from_bus(Message(frame, []))
                self._flush()
                return
            for frame, mine in framer.frames(data, fds):
                msg = Message(bytes(frame), list(mine))
                if f is None:
                    close_fds(mine)  # nothing is for a client still authenticating
                    continue
                f.from_bus(msg)
        except ProtocolError as e:
            self.close(f"invalid message from the bus: {e}")
            return
        self._flush()

    def _upstream_closed(self, reason) -> None:
        self.close(f"bus {reason}")

    # -- both --------------------------------------------------------------------

    def _flush(self) -> None:
        f = self.filter
        if f is None:
            return
        if f.to_bus:
            out, f.to_bus = f.to_bus, []
            if self.upstream_ready:
                _send_all(self.upstream, out)
            else:
                self.waiting.extend(out)
        if f.to_client:
            out, f.to_client = f.to_client, []
            _send_all(self.client, out)

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        log.debug("closing a client of %s: %s", self.group.group.path, reason)
        self.group.sessions.discard(self)
        if self.filter is not None:
            f = self.filter
            if f.me.unique_name:
                self.group.instance.remove_member(f.me.unique_name)
            f.view.close()
            for data, fds in f.to_bus + f.to_client:
                close_fds(fds)
            # messages held for the picture of the bus carry the client's fds too
            for m in f.held:
                close_fds(m.fds)
            f.held = []
        for data, fds in self.waiting:
            close_fds(fds)
        self.waiting = []
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        close_fds(self.client_framer.close())
