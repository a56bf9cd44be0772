"""A small blocking D-Bus client over the shared framer (wire/framer.py):
connect to a unix address, SASL EXTERNAL (with fd passing where the bus
agrees), Hello, method calls, signals, fds both ways.  For sandbus's own
command-line tools (`sandbus container`, `sandbus run`), which make a few
calls and wait; not for anything that needs to multiplex."""

import array
import os
import socket
import time
from collections import deque

from ..wire.address import parse_addresses
from .fds import close_fds, fds_from_ancillary
from ..wire.framer import Framer, FramingError
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, SIGNAL, Message, ProtocolError, build_message

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
_ANC_SIZE = socket.CMSG_SPACE(253 * 4)


class ClientError(Exception):
    pass


class BusError(ClientError):
    """An ERROR reply: ``name`` and its message ``text``."""

    def __init__(self, name, text):
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


def connect_unix(address: str, timeout: float) -> socket.socket:
    """The first unix address of ``address`` that accepts a connection."""
    last = None
    for transport, params in parse_addresses(address):
        if transport != "unix":
            last = last or f"transport {transport!r} is not supported here"
            continue
        if "path" in params:
            target = params["path"]
        elif "abstract" in params:
            target = "\0" + params["abstract"]
        else:
            last = f"unix address without path= or abstract=: {params}"
            continue
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(target)
        except OSError as e:
            s.close()
            last = e
            continue
        return s
    raise ClientError(f"cannot connect to {address}: {last or 'no unix address'}")


class Client:
    def __init__(self, address: str, timeout: float = 30.0, unix_fds: bool = True, hello: bool = True):
        self.timeout = timeout
        self.sock = connect_unix(address, timeout)
        self.framer = Framer(sasl="client")
        self.backlog = deque()  # messages read while waiting for something else
        self.serial = 0
        self.unix_fds = False
        self.unique_name = None
        try:
            self._auth(unix_fds)
            if hello:
                self.unique_name = self.call(BUS_NAME, BUS_PATH, BUS_NAME, "Hello")[0]
        except BaseException:
            self.close()
            raise

    # -- the handshake ------------------------------------------------------

    def _recv(self):
        try:
            data, anc, _, _ = self.sock.recvmsg(65536, _ANC_SIZE)
        except socket.timeout:
            raise ClientError("timed out waiting for the bus") from None
        fds = fds_from_ancillary(anc) if anc else []
        if not data:
            close_fds(fds)
            raise ClientError("the bus closed the connection")
        return data, fds

    def _line(self, pending: deque) -> bytes:
        while not pending:
            data, fds = self._recv()
            close_fds(fds)
            try:
                pending.extend(self.framer.lines(data))
            except FramingError as e:
                raise ClientError(f"authentication failed: {e}") from None
        return pending.popleft()

    def _auth(self, unix_fds: bool) -> None:
        pending = deque()
        self.sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        line = self._line(pending)
        if not line.startswith(b"OK "):
            raise ClientError(f"authentication failed: {line.decode(errors='replace')}")
        if unix_fds and self.sock.family == socket.AF_UNIX:
            self.sock.sendall(b"NEGOTIATE_UNIX_FD\r\n")
            self.unix_fds = self._line(pending) == b"AGREE_UNIX_FD"
        self.sock.sendall(b"BEGIN\r\n")
        self.framer.begin()

    # -- messages -------------------------------------------------------------

    def send(self, data: bytes, fds=()) -> None:
        if fds:
            if not self.unix_fds:
                raise ClientError("the bus did not agree to pass unix fds")
            n = self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            if n < len(data):
                self.sock.sendall(data[n:])
        else:
            self.sock.sendall(data)

    def next_serial(self) -> int:
        self.serial += 1
        return self.serial

    def _fill(self, deadline) -> None:
        """Read once from the socket; append the messages it completes."""
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError("timed out waiting for a message")
            self.sock.settimeout(left)
        try:
            data, fds = self._recv()
        finally:
            self.sock.settimeout(self.timeout)
        try:
            for frame, mine in self.framer.frames(data, fds):
                self.backlog.append(Message(bytes(frame), list(mine)))
        except ProtocolError as e:
            raise ClientError(f"the bus sent an invalid message: {e}") from None

    def read_message(self, timeout=None) -> Message:
        """The next message (the backlog first); its fds are the caller's."""
        return self.wait_for(lambda m: True, timeout)

    def wait_for(self, pred, timeout):
        """The first message pred accepts; the others stay in the backlog, in order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            while seen < len(self.backlog):
                m = self.backlog[seen]
                if pred(m):
                    del self.backlog[seen]
                    return m
                seen += 1
            self._fill(deadline)

    def call_message(self, dest, path, iface, member, sig="", body=(), fds=(), timeout=None) -> Message:
        """Call and return the reply message (an ERROR raises BusError)."""
        serial = self.next_serial()
        self.send(build_message(METHOD_CALL, serial, path=path, interface=iface, member=member,
                                destination=dest, signature=sig, body=body, unix_fds=len(fds)), fds)
        m = self.wait_for(lambda m: m.type in (METHOD_RETURN, ERROR) and m.reply_serial == serial,
                       self.timeout if timeout is None else timeout)
        if m.type == ERROR:
            args = m.body()
            close_fds(m.fds)
            raise BusError(m.error_name, args[0] if args and isinstance(args[0], str) else "")
        return m

    def call(self, dest, path, iface, member, sig="", body=(), fds=(), timeout=None):
        return self.call_message(dest, path, iface, member, sig, body, fds, timeout).body()

    def bus(self, member, sig="", *body):
        return self.call(BUS_NAME, BUS_PATH, BUS_NAME, member, sig, body)

    def add_match(self, rule: str) -> None:
        self.bus("AddMatch", "s", rule)

    def wait_signal(self, interface, member, path=None, timeout=None) -> Message:
        def pred(m):
            return m.type == SIGNAL and m.interface == interface and m.member == member and \
                (path is None or m.path == path)
        return self.wait_for(pred, timeout)

    def wait_closed(self) -> None:
        """Block until the bus hangs up; messages meanwhile are dropped."""
        self.sock.settimeout(None)
        try:
            while True:
                close_fds(self.read_message().fds)
        except (ClientError, OSError):
            return
        finally:
            self.sock.settimeout(self.timeout)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        for m in self.backlog:
            close_fds(m.fds)
        self.backlog.clear()
        close_fds(self.framer.close())
        self.sock.close()
