"""Server side of the D-Bus SASL handshake, as a sans-I/O state machine.

Feed it the bytes a client sent; it answers with bytes to write back and
tells when the client has sent BEGIN (and which bytes after BEGIN already
belong to the message stream, since clients pipeline Hello behind BEGIN).
"""

import binascii

MAX_LINE = 16384
MAX_REJECTIONS = 6  # dbus-daemon disconnects on the sixth failure

_WAIT_NUL, _WAIT_AUTH, _WAIT_DATA, _WAIT_BEGIN, _DONE, _FAILED = range(6)


class SaslServer:
    def __init__(self, guid: str, peer_uid, *, allow_unix_fds: bool = True,
                 allow_anonymous: bool = False, uid_allowed=None):
        self.guid = guid
        self.peer_uid = peer_uid
        self.allow_unix_fds = allow_unix_fds
        self.allow_anonymous = allow_anonymous
        self.uid_allowed = uid_allowed or (lambda uid: True)
        self.state = _WAIT_NUL
        self.buffer = bytearray()
        self.rejections = 0
        self.unix_fds = False
        self.uid = None  # authenticated uid; None for ANONYMOUS
        self.anonymous = False
        self.failure = None  # why the connection must be closed
        self.leftover = b""

    @property
    def done(self) -> bool:
        return self.state == _DONE

    @property
    def failed(self) -> bool:
        return self.state == _FAILED

    def _mechanisms(self) -> str:
        return "EXTERNAL ANONYMOUS" if self.allow_anonymous else "EXTERNAL"

    def feed(self, data: bytes) -> bytes:
        """Consume client bytes; return the reply bytes to send."""
        if self.state in (_DONE, _FAILED):
            return b""
        self.buffer += data
        out = []
        if self.state == _WAIT_NUL and self.buffer:
            if self.buffer[0] != 0:
                return self._fail("client did not send the initial NUL byte")
            del self.buffer[0]
            self.state = _WAIT_AUTH
        while self.state not in (_DONE, _FAILED):
            end = self.buffer.find(b"\r\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    self._fail("SASL line too long")
                break
            if end > MAX_LINE:
                self._fail("SASL line too long")
                break
            line = bytes(self.buffer[:end])
            del self.buffer[:end + 2]
            reply = self._line(line)
            if reply:
                out.append(reply)
        if self.state == _DONE:
            self.leftover = bytes(self.buffer)
            self.buffer.clear()
        return b"".join(out)

    def _fail(self, why: str) -> bytes:
        self.state = _FAILED
        self.failure = why
        return b""

    def _reject(self) -> bytes:
        self.rejections += 1
        if self.rejections >= MAX_REJECTIONS:
            # Say REJECTED once more, then hang up.
            self._fail("too many failed authentication attempts")
            return f"REJECTED {self._mechanisms()}\r\n".encode()
        self.state = _WAIT_AUTH
        return f"REJECTED {self._mechanisms()}\r\n".encode()

    def _line(self, line: bytes) -> bytes:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return b'ERROR "Command contained non-ASCII"\r\n'
        command, _, arg = text.partition(" ")
        state = self.state
        if command == "AUTH":
            if state != _WAIT_AUTH:
                return b'ERROR "Already authenticated"\r\n'
            mech, _, initial = arg.partition(" ")
            has_initial = " " in arg
            if mech == "EXTERNAL":
                if not has_initial:
                    self.state = _WAIT_DATA
                    return b"DATA\r\n"
                return self._external(initial)
            if mech == "ANONYMOUS" and self.allow_anonymous:
                self.anonymous = True
                self.state = _WAIT_BEGIN
                return f"OK {self.guid}\r\n".encode()
            return self._reject()
        if command == "DATA":
            if state != _WAIT_DATA:
                return b'ERROR "Not currently in an auth conversation"\r\n'
            return self._external(arg)
        if command == "CANCEL":
            if state == _WAIT_AUTH:
                return b'ERROR "Not currently in an auth conversation"\r\n'
            if state == _WAIT_BEGIN:
                # The spec lets a client cancel after OK; start over.
                self.uid = None
            return self._reject()
        if command == "BEGIN":
            if state != _WAIT_BEGIN:
                self._fail("BEGIN before successful authentication")
                return b""
            self.state = _DONE
            return b""
        if command == "NEGOTIATE_UNIX_FD":
            if state != _WAIT_BEGIN:
                return b'ERROR "Need to authenticate first"\r\n'
            if not self.allow_unix_fds:
                return b'ERROR "Unix fd passing is not supported on this transport"\r\n'
            self.unix_fds = True
            return b"AGREE_UNIX_FD\r\n"
        if command == "ERROR":
            if state in (_WAIT_AUTH, _WAIT_DATA):
                return self._reject()
            return b'ERROR "ERROR not expected now"\r\n'
        return b'ERROR "Unknown command"\r\n'

    def _external(self, hex_identity: str) -> bytes:
        if self.peer_uid is None:
            return self._reject()
        if hex_identity:
            try:
                claimed = binascii.unhexlify(hex_identity).decode("ascii")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                self.state = _WAIT_AUTH
                return b'ERROR "Invalid hex encoding"\r\n'
            if not claimed.isdigit() or int(claimed) != self.peer_uid:
                return self._reject()
        if not self.uid_allowed(self.peer_uid):
            return self._reject()
        self.uid = self.peer_uid
        self.state = _WAIT_BEGIN
        return f"OK {self.guid}\r\n".encode()
