"""Raw AF_UNIX D-Bus connections: address parsing, hand-written SASL
EXTERNAL, Hello, and a small frame reader.

The hot loops in ``workloads`` use ``Conn.sock`` and ``FrameReader``
directly; the blocking helpers here (``call``, ``call_many``) are for
setup only.
"""

import array
import os
import socket
from urllib.parse import unquote

from . import wire


class BusError(Exception):
    def __init__(self, name, text=""):
        super().__init__("%s: %s" % (name, text) if text else name)
        self.name = name


def parse_address(address):
    """First usable unix: entry of a D-Bus address -> socket address."""
    for entry in address.split(";"):
        transport, _, params = entry.partition(":")
        if transport != "unix":
            continue
        kv = dict(p.split("=", 1) for p in params.split(",") if "=" in p)
        if "path" in kv:
            return unquote(kv["path"])
        if "abstract" in kv:
            return "\0" + unquote(kv["abstract"])
    raise ValueError("no unix:path/abstract in address %r" % address)


class FrameReader:
    """Accumulates socket bytes and cuts them into whole messages."""

    def __init__(self):
        self.buf = bytearray()
        self.fds = []

    def feed(self, data):
        self.buf += data

    def frames(self):
        """Pop all complete messages, as a list of bytes objects."""
        out, off, buf = [], 0, self.buf
        while True:
            n = wire.frame_length(buf, off)
            if not n or len(buf) - off < n:
                break
            out.append(bytes(buf[off:off + n]))
            off += n
        if off:
            del buf[:off]
        return out


def recv_with_fds(sock, bufsize=65536, maxfds=16):
    fds = array.array("i")
    data, anc, _flags, _addr = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize))
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(cdata[:len(cdata) - (len(cdata) % fds.itemsize)])
    return data, list(fds)


class Conn:
    """One authenticated bus connection over a raw socket."""

    def __init__(self, address, *, unix_fds=False, hello=True, timeout=30.0):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(parse_address(address))
        self.reader = FrameReader()
        self.pending = []          # frames read while waiting for something else
        self.serial = 0
        self.unique_name = None
        self.unix_fds = unix_fds
        self._auth()
        if hello:
            self.unique_name = self.call(wire.bus_call("Hello"))[0]

    # -- SASL -------------------------------------------------------------
    def _readline(self):
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = self.sock.recv(1)       # auth lines only: never over-read
            if not chunk:
                raise ConnectionError("bus closed the connection during auth")
            line += chunk
        return line

    def _auth(self):
        uid = str(os.getuid()).encode().hex().encode()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\n")
        line = self._readline()
        if not line.startswith(b"OK "):
            raise ConnectionError("SASL EXTERNAL rejected: %r" % line)
        if self.unix_fds:
            self.sock.sendall(b"NEGOTIATE_UNIX_FD\r\n")
            line = self._readline()
            if not line.startswith(b"AGREE_UNIX_FD"):
                raise ConnectionError("unix fd passing refused: %r" % line)
        self.sock.sendall(b"BEGIN\r\n")

    # -- messages ---------------------------------------------------------
    def next_serial(self):
        self.serial += 1
        return self.serial

    def send(self, msg):
        """Send a pre-built message (bytearray) with a fresh serial; return it."""
        serial = self.next_serial()
        wire.set_serial(msg, serial)
        self.sock.sendall(msg)
        return serial

    def read_frames(self):
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("bus closed the connection")
        self.reader.feed(data)
        return self.reader.frames()

    def wait_replies(self, serials):
        """Collect replies to ``serials`` (a set); return {serial: frame}."""
        want, got = set(serials), {}
        for frame in self.pending:
            rs = _reply_serial(frame)
            if rs in want:
                got[rs] = frame
        self.pending = [f for f in self.pending if _reply_serial(f) not in got]
        while len(got) < len(want):
            for frame in self.read_frames():
                rs = _reply_serial(frame)
                if rs in want:
                    got[rs] = frame
                else:
                    self.pending.append(frame)
        return got

    def call(self, msg):
        """Blocking method call; return the reply body or raise BusError."""
        serial = self.send(msg)
        return _reply_body(self.wait_replies({serial})[serial])

    def call_many(self, msgs, batch=512):
        """Pipelined calls (one write per batch); raises on the first error."""
        for i in range(0, len(msgs), batch):
            chunk, serials = bytearray(), []
            for m in msgs[i:i + batch]:
                s = self.next_serial()
                wire.set_serial(m, s)
                chunk += m
                serials.append(s)
            self.sock.sendall(chunk)
            for frame in self.wait_replies(serials).values():
                _reply_body(frame)

    def drain(self):
        """Forget anything queued (NameAcquired etc.)."""
        self.pending = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _reply_serial(frame):
    if frame[1] not in (wire.METHOD_RETURN, wire.ERROR):
        return None
    return wire.header_fields(frame).get(wire.F_REPLY_SERIAL)


def _reply_body(frame):
    mtype, _, _, fields, body = wire.parse(frame)
    if mtype == wire.ERROR:
        raise BusError(fields.get(wire.F_ERROR_NAME, "?"),
                       body[0] if body and isinstance(body[0], str) else "")
    return body


def request_name(conn, name):
    # flags: DO_NOT_QUEUE (4); reply 1 = primary owner
    (ret,) = conn.call(wire.bus_call("RequestName", "su", (name, 4)))
    if ret != 1:
        raise BusError("RequestName", "could not own %s (reply %d)" % (name, ret))


def send_fds(sock, data, fds):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    view = memoryview(data)
    sent = sock.sendmsg([view], anc)
    if sent < len(data):
        sock.sendall(view[sent:])


def sendall_parts(sock, parts):
    """Vectored write of several buffers without joining them first."""
    total = sum(len(p) for p in parts)
    sent = sock.sendmsg(parts)
    if sent < total:
        sock.sendall(b"".join(bytes(p) for p in parts)[sent:])
