"""Sans-I/O framing of one D-Bus stream: bytes and unix fds in, SASL lines
and then whole messages with their fds out.  The bus's connections
(io/connection.py), the blocking client (io/client.py) and anything else
that reads a D-Bus socket share it; none of them splits a stream itself.

Fds travel beside the bytes (SCM_RIGHTS), so they are held here until the
message that claims them (its UNIX_FDS header field) is complete, and handed
out with it.  During the SASL phase a client may pipeline messages, with
their fds, behind BEGIN in the same write: fds that arrive with the chunk
holding BEGIN belong to those messages; fds with any other SASL chunk are an
error.
"""

from .message import MAX_MESSAGE_LENGTH, Message, ProtocolError, message_length

MAX_LINE = 16384  # longest SASL line accepted, as dbus-daemon's
# A message at least this long whose first quarter has arrived is read into a
# buffer of its own size (read_into/filled), not through the stream buffer.
LARGE_MESSAGE = 64 * 1024


class FramingError(ProtocolError):
    """The stream cannot be framed: the peer must be disconnected."""


class MessageTooLarge(FramingError):
    pass


def _claimed_fds(frame) -> int:
    """How many fds a whole message says it carries (0 if its header is
    invalid: whoever parses it next rejects it)."""
    try:
        return Message(frame if type(frame) is bytes else bytes(frame)).unix_fds
    except ProtocolError:
        return 0


class Framer:
    """``sasl``: None for a stream of messages from its first byte;
    "server" to read a client's side (the NUL byte, then lines up to and
    including BEGIN, after which messages follow by themselves); "client"
    to read a server's lines until the caller calls begin()."""

    __slots__ = ("max_message_size", "large", "max_line", "buf", "fds", "big", "big_fill",
                 "authenticating", "_role", "_expect_nul")

    def __init__(self, *, max_message_size: int = MAX_MESSAGE_LENGTH, sasl=None,
                 large: int = LARGE_MESSAGE, max_line: int = MAX_LINE):
        if sasl not in (None, "server", "client"):
            raise ValueError(f"sasl must be None, 'server' or 'client', not {sasl!r}")
        self.max_message_size = max_message_size
        self.large = large
        self.max_line = max_line
        self.buf = bytearray()
        self.fds = []  # received, not yet handed out with a message
        self.big = None  # a large message being filled in place
        self.big_fill = 0
        self.authenticating = sasl is not None
        self._role = sasl
        self._expect_nul = sasl == "server"

    # -- the SASL phase -----------------------------------------------------

    def lines(self, data=b"", fds=()):
        """Yield each complete SASL line (without CRLF).  In the server role
        iteration ends after BEGIN and what follows is the message stream.
        Raises FramingError (after the lines before the fault)."""
        if not self.authenticating:
            raise FramingError("the SASL phase is over")
        buf = self.buf
        buf += data
        if fds:
            self.fds.extend(fds)
        if self._expect_nul and buf:
            if buf[0] != 0:
                raise FramingError("client did not send the initial NUL byte")
            del buf[0]
            self._expect_nul = False
        limit = self.max_line
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > limit:
                    raise FramingError("SASL line too long")
                break
            if end > limit:
                raise FramingError("SASL line too long")
            line = bytes(buf[:end])
            del buf[:end + 2]
            if self._role == "server" and (line == b"BEGIN" or line.startswith(b"BEGIN ")):
                self.authenticating = False
                yield line
                return
            yield line
        if fds:
            raise FramingError("sent unix fds during authentication")

    def begin(self) -> None:
        """Client role: we sent BEGIN, so the server's next bytes are messages."""
        self.authenticating = False

    # -- the message phase ---------------------------------------------------

    def frames(self, data=b"", fds=()):
        """Yield (message bytes, [fds]) for each message completed by
        ``data``; a partial one waits for more.  Raises MessageTooLarge or
        ProtocolError (after the messages before the fault).  Stopping the
        iteration early keeps the rest buffered."""
        if fds:
            self.fds.extend(fds)
        if self.big is not None and data:
            big = self.big
            fill = self.big_fill
            take = min(len(big) - fill, len(data))
            big[fill:fill + take] = memoryview(data)[:take]
            data = data[take:]
            done = self._complete_big(take)
            if done is not None:
                yield done
            if not data:
                return
        rbuf = self.buf
        if rbuf:
            rbuf += data
            buf = rbuf
        else:
            buf = data
        off = 0
        end = len(buf)
        max_size = self.max_message_size
        try:
            while end - off >= 16:
                n = message_length(buf, off)
                if n > max_size:
                    raise MessageTooLarge(f"message of {n} bytes exceeds max_message_size")
                if end - off < n:
                    if n >= self.large and (end - off) * 4 >= n:
                        big = bytearray(n)
                        big[:end - off] = memoryview(buf)[off:end]
                        self.big = big
                        self.big_fill = end - off
                        off = end
                    break
                if buf is rbuf:
                    frame = bytes(memoryview(buf)[off:off + n])
                elif off == 0 and n == end:
                    frame = buf
                else:
                    frame = buf[off:off + n]
                off += n
                if self.fds:
                    yield frame, self._claim(frame)
                else:
                    yield frame, ()
        finally:
            # Also when the caller stops early or a fault is raised: what
            # was handed out is gone from the buffer, the rest stays.
            if buf is rbuf:
                del rbuf[:off]
            elif off < end:
                rbuf += memoryview(buf)[off:]

    def single(self, data):
        """``data`` itself when it is exactly one whole message and nothing
        is buffered or waiting for its message: the common case, for which
        frames() would be the same but slower.  Else None (use frames())."""
        if self.buf or self.fds or self.big is not None or len(data) < 16:
            return None
        n = message_length(data, 0)
        if n != len(data):
            return None
        if n > self.max_message_size:
            raise MessageTooLarge(f"message of {n} bytes exceeds max_message_size")
        return data

    def read_into(self):
        """Where to read the rest of a large message straight into, or None."""
        if self.big is None:
            return None
        return memoryview(self.big)[self.big_fill:]

    def filled(self, n: int, fds=()):
        """``n`` more bytes were read into read_into(); the (message, fds)
        once it is complete, else None."""
        if fds:
            self.fds.extend(fds)
        return self._complete_big(n)

    def _complete_big(self, n: int):
        self.big_fill += n
        big = self.big
        if self.big_fill < len(big):
            return None
        self.big = None
        self.big_fill = 0
        if self.fds:
            return big, self._claim(big)
        return big, ()

    def _claim(self, frame):
        claim = _claimed_fds(frame)
        if not claim:
            return ()
        mine = self.fds[:claim]
        del self.fds[:claim]
        return mine

    @property
    def pending(self) -> bool:
        """Part of a message (or a SASL line) is buffered."""
        return bool(self.buf) or self.big is not None

    def close(self) -> list:
        """Forget the stream; returns the fds still held, for the caller to close."""
        fds, self.fds = self.fds, []
        self.buf = bytearray()
        self.big = None
        self.big_fill = 0
        return fds
