"""Server side of the D-Bus SASL handshake, as a sans-I/O state machine.

Feed it the bytes a client sent; it answers with bytes to write back and
tells when the client has sent BEGIN (and which bytes after BEGIN already
belong to the message stream, since clients pipeline Hello behind BEGIN).
"""

import binascii
import secrets

from .cookie_sha1 import CookieError, check_response, format_challenge
from .framer import MAX_LINE, Framer, FramingError

MAX_REJECTIONS = 6  # dbus-daemon disconnects on the sixth failure

_WAIT_NUL, _WAIT_AUTH, _WAIT_DATA, _WAIT_BEGIN, _DONE, _FAILED, _WAIT_COOKIE = range(7)

# Every mechanism sandbus implements, in the order dbus-daemon lists them.
SUPPORTED_MECHANISMS = ("EXTERNAL", "DBUS_COOKIE_SHA1", "ANONYMOUS")


class SaslServer:
    def __init__(self, guid: str, peer_uid, *, allow_unix_fds: bool = True,
                 allow_anonymous: bool = False, uid_allowed=None,
                 mechanisms=None, cookie_keyring=None, bus_uid=None, user_lookup=None,
                 on_done=None):
        """``mechanisms``: those offered, as dbus-daemon's <auth> list (None:
        the historic default, EXTERNAL plus ANONYMOUS if allowed). ANONYMOUS
        offered while ``allow_anonymous`` is false succeeds at the SASL level
        and fails at BEGIN, as in dbus-daemon. ``cookie_keyring`` provides
        ``best_cookie() -> (context, id, cookie_hex)`` (may raise CookieError);
        ``user_lookup(name) -> uid | None`` resolves the DBUS_COOKIE_SHA1
        identity, which must be ``bus_uid``. ``on_done(self)`` runs at BEGIN."""
        self.guid = guid
        self.peer_uid = peer_uid
        self.allow_unix_fds = allow_unix_fds
        self.allow_anonymous = allow_anonymous
        self.uid_allowed = uid_allowed or (lambda uid: True)
        self.state = _WAIT_NUL
        self._framer = Framer(sasl="server", max_line=MAX_LINE)  # only for feed()
        self.rejections = 0
        self.unix_fds = False
        self.uid = None  # authenticated uid; None for ANONYMOUS
        self.anonymous = False
        self.failure = None  # why the connection must be closed
        self.leftover = b""
        if mechanisms is None:
            mechanisms = ("EXTERNAL", "ANONYMOUS") if allow_anonymous else ("EXTERNAL",)
        self.mechanisms = tuple(m for m in SUPPORTED_MECHANISMS if m in mechanisms)
        self.cookie_keyring = cookie_keyring
        self.bus_uid = bus_uid
        self.user_lookup = user_lookup
        self.on_done = on_done
        self.mechanism = None  # the one that succeeded
        self._cookie = None  # (server challenge, cookie hex) during DBUS_COOKIE_SHA1
        self._cookie_uid = None

    @property
    def done(self) -> bool:
        return self.state == _DONE

    @property
    def failed(self) -> bool:
        return self.state == _FAILED

    def _mechanisms(self) -> str:
        return " ".join(self.mechanisms)

    def _ok(self, mechanism: str, uid) -> bytes:
        self.mechanism = mechanism
        self.uid = uid
        self.anonymous = mechanism == "ANONYMOUS"
        self._cookie = None
        self.state = _WAIT_BEGIN
        return f"OK {self.guid}\r\n".encode()

    def feed(self, data: bytes) -> bytes:
        """Consume client bytes; return the reply bytes to send."""
        if self.state in (_DONE, _FAILED):
            return b""
        out = []
        try:
            for line in self._framer.lines(data):
                out.append(self.line(line))
                if self.state in (_DONE, _FAILED):
                    break
        except FramingError as e:
            self._fail(str(e))
        if self.state == _DONE:
            self.leftover = bytes(self._framer.buf)
            self._framer.close()
        return b"".join(out)

    def line(self, line: bytes) -> bytes:
        """One line the client sent, as a Framer(sasl="server") splits them
        (which has checked the initial NUL byte); the reply bytes to send."""
        if self.state == _WAIT_NUL:
            self.state = _WAIT_AUTH
        if self.state in (_DONE, _FAILED):
            return b""
        reply = self._line(line) or b""
        if self.state == _DONE and self.on_done is not None:
            self.on_done(self)
        return reply

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
        self._cookie = None
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
            if mech not in self.mechanisms:
                return self._reject()
            if mech == "EXTERNAL":
                if not has_initial:
                    self.state = _WAIT_DATA
                    return b"DATA\r\n"
                return self._external(initial)
            if mech == "ANONYMOUS":
                # The optional trace is hex, and otherwise ignored.
                if _unhex(initial) is None:
                    return b'ERROR "Invalid hex encoding"\r\n'
                return self._ok("ANONYMOUS", None)
            if mech == "DBUS_COOKIE_SHA1":
                return self._cookie_start(initial)
            return self._reject()
        if command == "DATA":
            if state == _WAIT_COOKIE:
                return self._cookie_finish(arg)
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
            if self.anonymous and not self.allow_anonymous:
                # dbus-daemon: OK at the SASL level, then the bus drops it.
                self._fail("anonymous connections are not allowed (<allow_anonymous/>)")
                return b""
            self.state = _DONE
            return b""
        if command == "NEGOTIATE_UNIX_FD":
            if state != _WAIT_BEGIN:
                return b'ERROR "Need to authenticate first"\r\n'
            if not self.allow_unix_fds:
                return (b'ERROR "Unix FD passing not supported, not authenticated '
                        b'or otherwise not possible"\r\n')
            self.unix_fds = True
            return b"AGREE_UNIX_FD\r\n"
        if command == "ERROR":
            if state in (_WAIT_AUTH, _WAIT_DATA, _WAIT_COOKIE):
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
            # A uid has at most 10 digits (leading zeros aside); anything
            # longer is no uid, and int() refuses strings over 4300 digits.
            digits = claimed.lstrip("0")
            if not claimed.isdigit() or len(digits) > 10 or int(digits or "0") != self.peer_uid:
                return self._reject()
        if not self.uid_allowed(self.peer_uid):
            return self._reject()
        return self._ok("EXTERNAL", self.peer_uid)

    # -- DBUS_COOKIE_SHA1 (D-Bus specification, "DBUS_COOKIE_SHA1") -----------

    def _cookie_start(self, hex_user: str) -> bytes:
        if not hex_user:
            return self._reject()  # dbus-daemon wants the identity up front
        raw = _unhex(hex_user)
        if raw is None:
            return b'ERROR "Invalid hex encoding"\r\n'
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            return self._reject()
        uid = self.user_lookup(name) if self.user_lookup is not None else None
        # A cookie proves only that the client can read this user's keyring,
        # and the bus can read only its own user's.
        if uid is None or uid != self.bus_uid or self.cookie_keyring is None:
            return self._reject()
        try:
            context, cookie_id, cookie = self.cookie_keyring.best_cookie()
        except CookieError:
            return self._reject()
        challenge = secrets.token_hex(16)
        self._cookie = (challenge, cookie)
        self._cookie_uid = uid
        self.state = _WAIT_COOKIE
        data = format_challenge(context, cookie_id, challenge)
        return b"DATA " + binascii.hexlify(data) + b"\r\n"

    def _cookie_finish(self, hex_response: str) -> bytes:
        raw = _unhex(hex_response)
        if raw is None:
            return b'ERROR "Invalid hex encoding"\r\n'
        challenge, cookie = self._cookie
        if not check_response(challenge, cookie, raw):
            return self._reject()
        if not self.uid_allowed(self._cookie_uid):
            return self._reject()
        return self._ok("DBUS_COOKIE_SHA1", self._cookie_uid)


def _unhex(text: str):
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return None
