"""The proxy's connection to the bus for one client: connect to ADDRESS,
authenticate as the client's uid (SASL EXTERNAL; the bus checks it against
our socket's credentials, so a client of another user is refused there),
with fd passing, all in one write (the bus answers OK and AGREE_UNIX_FD;
BEGIN needs no answer), as sd-bus does."""

import socket

from ..wire.address import parse_addresses
from ..wire.framer import Framer, FramingError


class UpstreamError(Exception):
    pass


def greeting(uid: int) -> bytes:
    return b"\0AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n"


def resolve(address: str):
    """Where a unix ADDRESS points: a path, or NUL + an abstract name."""
    try:
        entries = parse_addresses(address)
    except ValueError as e:
        raise UpstreamError(str(e)) from None
    for transport, params in entries:
        if transport == "unix":
            if "path" in params:
                return params["path"]
            if "abstract" in params:
                return "\0" + params["abstract"]
    raise UpstreamError(f"{address}: no unix path= or abstract= address")


def connect(target: str):
    """A connected socket to the bus at target (resolve()); unix sockets
    connect at once or not at all, so this blocks the loop no longer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(target)
    except OSError as e:
        s.close()
        raise UpstreamError(f"cannot connect to the bus: {e.strerror}") from None
    return s


class UpstreamAuth:
    """The bus's side of the handshake we pipelined: feed it what the bus
    sends; `done` once it said OK and answered NEGOTIATE_UNIX_FD (then the
    framer holds whatever messages followed), `failure` if it refused."""

    def __init__(self):
        self.framer = Framer(sasl="client")
        self.ok = False
        self.done = False
        self.unix_fds = False
        self.failure = None

    def feed(self, data: bytes) -> None:
        try:
            for line in self.framer.lines(data):
                if not self.ok:
                    if not line.startswith(b"OK "):
                        self.failure = f"the bus refused to authenticate us: {line.decode(errors='replace')}"
                        return
                    self.ok = True
                    continue
                self.unix_fds = line == b"AGREE_UNIX_FD"
                self.done = True
                self.framer.begin()
                return
        except FramingError as e:
            self.failure = f"bad authentication reply from the bus: {e}"
