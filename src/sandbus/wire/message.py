"""D-Bus messages: framing, header parsing and validation, and building.

The bus parses only the fixed header and the header fields of a message it
routes, and checks the body against its signature (wire/validate.py) without
unmarshalling it; the body stays bytes.  Forwarding splices the header fields the
bus owns (SENDER, CONTAINER_INSTANCE) and copies everything else unchanged.
"""

import struct

from .marshal import MarshalError, Reader, Writer
from .names import (
    is_valid_bus_name,
    is_valid_error_name,
    is_valid_interface,
    is_valid_member,
    is_valid_object_path,
)
from .signature import SignatureError, split_signature
from .validate import InvalidBody, validate_body

METHOD_CALL = 1
METHOD_RETURN = 2
ERROR = 3
SIGNAL = 4
TYPE_NAMES = {METHOD_CALL: "method_call", METHOD_RETURN: "method_return", ERROR: "error", SIGNAL: "signal"}

NO_REPLY_EXPECTED = 0x1
NO_AUTO_START = 0x2
ALLOW_INTERACTIVE_AUTHORIZATION = 0x4

FIELD_PATH = 1
FIELD_INTERFACE = 2
FIELD_MEMBER = 3
FIELD_ERROR_NAME = 4
FIELD_REPLY_SERIAL = 5
FIELD_DESTINATION = 6
FIELD_SENDER = 7
FIELD_SIGNATURE = 8
FIELD_UNIX_FDS = 9
FIELD_CONTAINER_INSTANCE = 10

_FIELD_TYPES = {
    FIELD_PATH: "o", FIELD_INTERFACE: "s", FIELD_MEMBER: "s", FIELD_ERROR_NAME: "s",
    FIELD_REPLY_SERIAL: "u", FIELD_DESTINATION: "s", FIELD_SENDER: "s",
    FIELD_SIGNATURE: "g", FIELD_UNIX_FDS: "u", FIELD_CONTAINER_INSTANCE: "o",
}
# Fields a client may not set: the bus sets them itself.
_BUS_OWNED_FIELDS = (FIELD_SENDER, FIELD_CONTAINER_INSTANCE)

MAX_MESSAGE_LENGTH = 128 * 1024 * 1024
PROTOCOL_VERSION = 1
LOCAL_PATH = "/org/freedesktop/DBus/Local"
LOCAL_INTERFACE = "org.freedesktop.DBus.Local"

_LE_FIXED = struct.Struct("<BBBBIII")
_BE_FIXED = struct.Struct(">BBBBIII")
_LE_U32 = struct.Struct("<I")
_BE_U32 = struct.Struct(">I")
_PAD = b"\0" * 8
_header_cache = {}
_CACHE_SIZE = 4096
_valid_bodies = {}  # (signature, endian, unix_fds, body bytes) of small valid bodies
_MEMO_BODY = 128
_CACHEABLE = 16 + 512  # cache headers whose fields fit in this many bytes
# byte order, type, flags and version as one number; body length; serial;
# fields' length; and the first field's code and signature, as one number.
_LE_HOT = struct.Struct("<IIIII")
_BE_HOT = struct.Struct(">IIIII")
_REPLY_FIRST_LE = _LE_U32.unpack(b"\x05\x01u\x00")[0]  # REPLY_SERIAL comes first
_REPLY_FIRST_BE = _BE_U32.unpack(b"\x05\x01u\x00")[0]


class ProtocolError(ValueError):
    """The peer sent bytes that are not a valid D-Bus message."""


def message_length(buf, offset: int = 0):
    """Total length of the message starting at buf[offset], or None if the
    fixed part is not yet complete.  Raises ProtocolError for impossible sizes."""
    if len(buf) - offset < 16:
        return None
    endian = buf[offset]
    if endian == 0x6C:  # 'l'
        body_len, _, fields_len = _LE_FIXED.unpack_from(buf, offset)[4:]
    elif endian == 0x42:  # 'B'
        body_len, _, fields_len = _BE_FIXED.unpack_from(buf, offset)[4:]
    else:
        raise ProtocolError(f"invalid byte-order mark {endian:#x}")
    if buf[offset + 3] != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {buf[offset + 3]}")
    total = 16 + fields_len + (-fields_len % 8) + body_len
    if total > MAX_MESSAGE_LENGTH:
        raise ProtocolError(f"message of {total} bytes exceeds the 128 MiB limit")
    return total


# Validated names recur constantly (the same interfaces and members), so a
# bounded cache turns most regex checks into one set lookup.  Bounded like
# the header caches: every new connection's unique name and every new
# instance's path is a new key, and a cap of 20,000 kept the bus's memory
# growing through the first ~10,000 container instances (bench/churn.py).
_valid_cache = {}
_VALIDATORS = {
    FIELD_PATH: is_valid_object_path,
    FIELD_INTERFACE: is_valid_interface,
    FIELD_MEMBER: is_valid_member,
    FIELD_ERROR_NAME: is_valid_error_name,
    FIELD_DESTINATION: is_valid_bus_name,
    FIELD_SENDER: is_valid_bus_name,
    FIELD_CONTAINER_INSTANCE: is_valid_object_path,
}


def _check_name(code: int, value: str) -> None:
    key = (code, value)
    if key in _valid_cache:
        return
    if not _VALIDATORS[code](value):
        raise ProtocolError(f"invalid value {value!r} in header field {code}")
    if len(_valid_cache) >= _CACHE_SIZE:
        _valid_cache.clear()
    _valid_cache[key] = True


class Message:
    """A parsed header plus the raw bytes of the whole message."""

    __slots__ = (
        "data", "endian", "type", "flags", "body_len", "serial", "path", "interface",
        "member", "error_name", "reply_serial", "destination", "sender", "signature",
        "unix_fds", "fields_len", "body_start", "_kept_fields", "fds", "_forwarded",
        "args_cache",
    )

    def __init__(self, data: bytes, fds=()):
        self.data = data
        self.fds = fds
        self._forwarded = None
        self.args_cache = None
        # Most messages repeat the header fields of an earlier one byte for
        # byte (same path, interface, member, destination, signature), so
        # parse results are cached by those bytes.  The key is everything
        # that decides the parse: the first four bytes (byte order, type,
        # flags, version), the fields' length and the fields with their
        # padding.  The serial and body length are read every time, and so
        # is REPLY_SERIAL when it is the first field (as libdbus, GDBus,
        # sd-bus and jeepney write it): replies differ only there.
        b0 = data[0] if data else 0
        if b0 == 0x6C:
            hot = _LE_HOT
        elif b0 == 0x42:
            hot = _BE_HOT
        else:
            hot = None
        if hot is None or len(data) < 24 or type(data) is not bytes:
            self._parse()
            return
        head, body_len, serial, fields_len, first = hot.unpack_from(data)
        body_start = 16 + fields_len + (-fields_len % 8)
        if body_start > _CACHEABLE:
            self._parse()
            return
        if first == (_REPLY_FIRST_LE if b0 == 0x6C else _REPLY_FIRST_BE) and fields_len >= 8:
            key = (head, fields_len, data[24:body_start])
            reply_serial = (_LE_U32 if b0 == 0x6C else _BE_U32).unpack_from(data, 20)[0]
        else:
            key = (head, data[12:body_start])
            reply_serial = None
        hit = _header_cache.get(key)
        if hit is None:
            self._parse()
            if len(_header_cache) >= _CACHE_SIZE:
                _header_cache.clear()
            _header_cache[key] = (
                self.endian, self.type, self.flags, self.path, self.interface, self.member,
                self.error_name, self.reply_serial, self.destination, self.sender, self.signature,
                self.unix_fds, self._kept_fields, self.fields_len, self.body_start)
            return
        # A hit: everything but serial, body length and a leading reply
        # serial was validated when the same bytes were first parsed.
        (self.endian, self.type, self.flags, self.path, self.interface, self.member,
         self.error_name, self.reply_serial, self.destination, self.sender, sig,
         self.unix_fds, self._kept_fields, self.fields_len, self.body_start) = hit
        self.signature = sig
        self.body_len = body_len
        self.serial = serial
        if serial == 0:
            raise ProtocolError("message serial is 0")
        if reply_serial is not None:
            if reply_serial == 0:
                raise ProtocolError("reply serial is 0")
            self.reply_serial = reply_serial
        if body_start + body_len != len(data):
            raise ProtocolError("message length does not match its header")
        if sig:
            self._validate_body()
        elif body_len:
            raise ProtocolError("message has a body but no signature")

    def _validate_body(self) -> None:
        # Every message is checked before anything routes it: the body is
        # forwarded unchanged, and receivers' unmarshallers trust the bus.
        data = self.data
        start = self.body_start
        if self.body_len <= _MEMO_BODY and type(data) is bytes:
            # Small bodies recur byte for byte (the same arguments, replies
            # and signals again and again): the same bytes under the same
            # signature, byte order and fd count get the same verdict, so
            # valid ones are remembered (bounded, like the header cache).
            key = (self.signature, self.endian, self.unix_fds, data[start:])
            if key in _valid_bodies:
                return
            self._check_body(data, start)
            if len(_valid_bodies) >= _CACHE_SIZE:
                _valid_bodies.clear()
            _valid_bodies[key] = True
            return
        self._check_body(data, start)

    def _check_body(self, data, start: int) -> None:
        try:
            validate_body(data, start, len(data), self.signature, self.endian, self.unix_fds)
        except InvalidBody as e:
            raise ProtocolError(f"invalid body: {e}") from None

    def _parse(self) -> None:
        data = self.data
        endian = data[0]
        if endian == 0x6C:
            fixed, u32, self.endian = _LE_FIXED, _LE_U32, "l"
        elif endian == 0x42:
            fixed, u32, self.endian = _BE_FIXED, _BE_U32, "B"
        else:
            raise ProtocolError(f"invalid byte-order mark {endian:#x}")
        _, mtype, flags, version, body_len, serial, fields_len = fixed.unpack_from(data, 0)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"unsupported protocol version {version}")
        if mtype == 0:
            raise ProtocolError("invalid message type 0")
        if serial == 0:
            raise ProtocolError("message serial is 0")
        self.type = mtype
        self.flags = flags
        self.body_len = body_len
        self.serial = serial
        self.fields_len = fields_len
        end = 16 + fields_len
        self.body_start = end + (-fields_len % 8)
        if self.body_start + body_len != len(data):
            raise ProtocolError("message length does not match its header")
        self.path = self.interface = self.member = self.error_name = None
        self.reply_serial = self.destination = self.sender = None
        self.signature = ""
        self.unix_fds = 0
        kept = None  # None means "all fields kept": the common, fast case
        seen = set()
        p = 16
        while p < end:
            if p % 8:
                pad = -p % 8
                if data[p:p + pad] != _PAD[:pad]:
                    raise ProtocolError("non-zero padding between header fields")
                p += pad
                if p >= end:
                    raise ProtocolError("header fields end in padding")
            start = p
            code = data[p]
            if code == 0:
                raise ProtocolError("header field code 0 is invalid")
            if p + 4 > end or data[p + 1] != 1 or data[p + 3] != 0:
                # not a one-character signature: only legal for unknown fields
                if code in _FIELD_TYPES:
                    raise ProtocolError(f"header field {code} has the wrong type")
                p = self._skip_unknown_field(p, end)
                kept = self._drop_field(kept, start, p, code)
                continue
            sig = chr(data[p + 2])
            expected = _FIELD_TYPES.get(code)
            if expected is None:
                p = self._skip_unknown_field(p, end)
                kept = self._drop_field(kept, start, p, code)
                continue
            if sig != expected:
                raise ProtocolError(f"header field {code} has type {sig!r}, expected {expected!r}")
            if code in seen:
                raise ProtocolError(f"header field {code} appears twice")
            seen.add(code)
            if sig == "u":
                if p + 8 > end:
                    raise ProtocolError("header field truncated")
                value = u32.unpack_from(data, p + 4)[0]
                p += 8
                if code == FIELD_REPLY_SERIAL:
                    if value == 0:
                        raise ProtocolError("reply serial is 0")
                    self.reply_serial = value
                else:
                    self.unix_fds = value
            elif sig == "g":
                n = data[p + 4] if p + 4 < end else 0
                q = p + 5 + n
                if q >= end + 1 or q >= len(data) or data[q] != 0:
                    raise ProtocolError("signature header field malformed")
                try:
                    value = bytes(data[p + 5:q]).decode("ascii")
                    split_signature(value)
                except (UnicodeDecodeError, SignatureError) as e:
                    raise ProtocolError(f"invalid signature in header: {e}") from e
                self.signature = value
                p = q + 1
            else:
                if p + 8 > end:
                    raise ProtocolError("header field truncated")
                n = u32.unpack_from(data, p + 4)[0]
                q = p + 8 + n
                if q >= end or data[q] != 0:
                    raise ProtocolError("string header field malformed")
                try:
                    value = bytes(data[p + 8:q]).decode()
                except UnicodeDecodeError as e:
                    raise ProtocolError("header string is not UTF-8") from e
                if "\0" in value:
                    raise ProtocolError("header string contains NUL")
                _check_name(code, value)
                p = q + 1
                if code == FIELD_PATH:
                    self.path = value
                elif code == FIELD_INTERFACE:
                    self.interface = value
                elif code == FIELD_MEMBER:
                    self.member = value
                elif code == FIELD_ERROR_NAME:
                    self.error_name = value
                elif code == FIELD_DESTINATION:
                    self.destination = value
                elif code == FIELD_SENDER:
                    self.sender = value
                if code in _BUS_OWNED_FIELDS:
                    kept = self._drop_field(kept, start, p, code)
                    continue
            if kept is not None:
                kept.append((start, p))
        if p != end:
            raise ProtocolError("header fields overrun their array")
        if data[end:self.body_start] != _PAD[:self.body_start - end]:
            raise ProtocolError("non-zero padding after the header")
        self._kept_fields = kept
        self._check_required()
        if self.signature:
            self._validate_body()
        elif self.body_len:
            raise ProtocolError("message has a body but no signature")

    def _skip_unknown_field(self, p: int, end: int) -> int:
        # Unknown fields must be tolerated (and are removed on forwarding).
        r = Reader(self.data, self.endian, p, end)
        try:
            r.read("(yv)")
        except (MarshalError, SignatureError) as e:
            raise ProtocolError(f"malformed header field: {e}") from e
        return r.pos

    def _drop_field(self, kept, start: int, stop: int, code: int):
        if kept is None:
            # Switch to the slow path: list the fields seen so far.
            kept = []
            q = 16
            while q < start:
                r = Reader(self.data, self.endian, q, start)
                r.read("(yv)")
                kept.append((q, r.pos))
                q = r.pos + (-r.pos % 8)
        return kept

    def _check_required(self) -> None:
        t = self.type
        if t == METHOD_CALL:
            if self.path is None or self.member is None:
                raise ProtocolError("method call without path or member")
        elif t == SIGNAL:
            if self.path is None or self.interface is None or self.member is None:
                raise ProtocolError("signal without path, interface or member")
        elif t == ERROR:
            if self.error_name is None or self.reply_serial is None:
                raise ProtocolError("error without error name or reply serial")
        elif t == METHOD_RETURN and self.reply_serial is None:
            raise ProtocolError("method return without reply serial")
        if self.path == LOCAL_PATH or self.interface == LOCAL_INTERFACE:
            raise ProtocolError("messages may not use the reserved Local path or interface")

    @property
    def no_reply_expected(self) -> bool:
        return bool(self.flags & NO_REPLY_EXPECTED)

    @property
    def expects_reply(self) -> bool:
        return self.type == METHOD_CALL and not self.flags & NO_REPLY_EXPECTED

    def body(self) -> list:
        """Unmarshal the body (only for driver calls and argN matches)."""
        if not self.signature:
            return []
        r = Reader(self.data, self.endian, self.body_start, len(self.data))
        values = r.read(self.signature)
        if r.pos != len(self.data):
            raise MarshalError("trailing bytes after the body")
        return values

    def leading_args(self, count: int) -> list:
        """Up to ``count`` leading arguments for argN matching: str for s and
        o, None for any other type, which is skipped by its length, so the
        cost does not grow with what follows.  Cached per message."""
        cached = self.args_cache
        if cached is not None and cached[0] >= count:
            return cached[1]
        args = Reader(self.data, self.endian, self.body_start, len(self.data)).leading(self.signature, count)
        self.args_cache = (count, args)
        return args

    def forwarded(self, sender_field: bytes, instance_field: bytes = b"") -> bytes:
        """The bytes to deliver: this message with the bus's SENDER field (and
        CONTAINER_INSTANCE when given) in place of whatever the sender wrote."""
        if not instance_field:
            cached = self._forwarded
            if cached is not None:
                return cached
        data = self.data
        u32 = _LE_U32 if self.endian == "l" else _BE_U32
        kept = self._kept_fields
        if kept is None and not instance_field:
            # The common case: the fields and their padding stay as they are
            # and SENDER goes after them, where the body used to start.
            body_start = self.body_start
            n = len(sender_field)
            out = b"".join((data[:12], u32.pack(body_start - 16 + n), data[16:body_start],
                            sender_field, _PAD[:-n % 8],
                            memoryview(data)[body_start:] if self.body_len > 4096 else data[body_start:]))
            self._forwarded = out
            return out
        if kept is None:
            fields_len = self.fields_len
            parts = [data[:12], b"", data[16:16 + fields_len], _PAD[:-fields_len % 8]]
            length = fields_len + (-fields_len % 8)
        else:
            parts = [data[:12], b""]
            length = 0
            for start, stop in kept:
                parts.append(data[start:stop])
                pad = -(stop - start) % 8
                parts.append(_PAD[:pad])
                length += stop - start + pad
        parts.append(sender_field)
        length += len(sender_field)
        if instance_field:
            pad = -length % 8
            parts.append(_PAD[:pad])
            parts.append(instance_field)
            length += pad + len(instance_field)
        parts[1] = u32.pack(length)
        parts.append(_PAD[:-length % 8])
        # a view, so a large body is copied once (by the join), not twice
        parts.append(memoryview(data)[self.body_start:] if self.body_len > 4096 else data[self.body_start:])
        out = b"".join(parts)
        if not instance_field:
            self._forwarded = out
        return out

    def forwarded_parts(self, sender_field: bytes):
        """forwarded(sender_field) as (header, body view), not joined: a
        large body goes out of the buffer it was read into without a copy in
        user space (io/connection.py writes both with one sendmsg).  None if
        the sender wrote fields the bus drops (forwarded() then)."""
        if self._kept_fields is not None:
            return None
        data = self.data
        u32 = _LE_U32 if self.endian == "l" else _BE_U32
        body_start = self.body_start
        n = len(sender_field)
        # forwarded()'s common case: SENDER after the fields, where the body started
        head = b"".join((data[:12], u32.pack(body_start - 16 + n), data[16:body_start],
                         sender_field, _PAD[:-n % 8]))
        return head, memoryview(data)[body_start:]


_field_cache = {}


def string_field(code: int, value: str, endian: str = "l", sig: str = "s") -> bytes:
    """A complete marshalled header field struct for a string-like value."""
    key = (code, value, endian, sig)
    field = _field_cache.get(key)
    if field is None:
        raw = value.encode()
        u32 = _LE_U32 if endian == "l" else _BE_U32
        field = bytes((code, 1, ord(sig), 0)) + u32.pack(len(raw)) + raw + b"\0"
        # The bus writes the same paths, interfaces, members and names over
        # and over; bounded, since unique names never come back.
        if len(_field_cache) >= 4096:
            _field_cache.clear()
        _field_cache[key] = field
    return field


def _strings_only(signature: str, body) -> bool:
    """True if body is valid for signature and made of strings and object
    paths alone; anything else (or anything invalid) takes the marshaller."""
    if signature.strip("so") or len(signature) != len(body):
        return False
    for code, value in zip(signature, body):
        if type(value) is not str or "\0" in value or code == "o" and not is_valid_object_path(value):
            return False
    return True


def _string_body(body, endian: str) -> bytes:
    """Marshal a body of strings and object paths only (most of what the bus
    sends: NameOwnerChanged, NameAcquired, Hello's reply, error texts)."""
    u32 = _LE_U32 if endian == "l" else _BE_U32
    parts = []
    size = 0
    for value in body:
        raw = value.encode()
        pad = -size % 4
        if pad:
            parts.append(_PAD[:pad])
        parts.append(u32.pack(len(raw)))
        parts.append(raw)
        parts.append(b"\0")
        size += pad + 4 + len(raw) + 1
    return b"".join(parts)


def build_message(
    mtype: int,
    serial: int,
    *,
    path=None,
    interface=None,
    member=None,
    error_name=None,
    reply_serial=None,
    destination=None,
    sender=None,
    signature: str = "",
    body=(),
    flags: int = 0,
    unix_fds: int = 0,
    container_instance=None,
    endian: str = "l",
) -> bytes:
    """Marshal a whole message.  The header is written field by field (the
    bus sends many small messages of its own; the generic marshaller is the
    slow way to do that)."""
    u32 = _LE_U32 if endian == "l" else _BE_U32
    fields = []
    if path is not None:
        field = _field_cache.get((FIELD_PATH, path, endian, "o"))
        if field is None:
            if not is_valid_object_path(path):
                raise ValueError(f"invalid object path {path!r}")
            field = string_field(FIELD_PATH, path, endian, "o")
        fields.append(field)
    if interface is not None:
        fields.append(string_field(FIELD_INTERFACE, interface, endian, "s"))
    if member is not None:
        fields.append(string_field(FIELD_MEMBER, member, endian, "s"))
    if error_name is not None:
        fields.append(string_field(FIELD_ERROR_NAME, error_name, endian, "s"))
    if reply_serial is not None:
        fields.append(bytes((FIELD_REPLY_SERIAL, 1, ord("u"), 0)) + u32.pack(reply_serial))
    if destination is not None:
        fields.append(string_field(FIELD_DESTINATION, destination, endian, "s"))
    if sender is not None:
        fields.append(string_field(FIELD_SENDER, sender, endian, "s"))
    if signature:
        raw = signature.encode()
        fields.append(bytes((FIELD_SIGNATURE, 1, ord("g"), 0, len(raw))) + raw + b"\0")
    if unix_fds:
        fields.append(bytes((FIELD_UNIX_FDS, 1, ord("u"), 0)) + u32.pack(unix_fds))
    if container_instance is not None:
        fields.append(string_field(FIELD_CONTAINER_INSTANCE, container_instance, endian, "o"))
    parts = []
    length = 0
    for f in fields:
        pad = -length % 8
        if pad:
            parts.append(_PAD[:pad])
        parts.append(f)
        length += pad + len(f)
    if not signature:
        body_bytes = b""
    elif _strings_only(signature, body):
        body_bytes = _string_body(body, endian)
    else:
        body_writer = Writer(endian)
        body_writer.write(signature, body)
        body_bytes = bytes(body_writer.buf)
    fixed = (_LE_FIXED if endian == "l" else _BE_FIXED).pack(
        ord(endian), mtype, flags, PROTOCOL_VERSION, len(body_bytes), serial, length)
    return b"".join((fixed, *parts, _PAD[:-length % 8], body_bytes))
