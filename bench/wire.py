"""Minimal D-Bus wire format for the load generators (little-endian only).

Just enough to pre-marshal the messages the benchmark sends and to frame
what comes back; deliberately independent of sandbus' own ``wire`` package
so a bug there cannot hide in the measurements.

Facts used (D-Bus specification, "Message Format"):
  * fixed header: endianness ``l``, type, flags, protocol version 1,
    u32 body length (offset 4), u32 serial (offset 8);
  * then ``a(yv)`` header fields: u32 array length at offset 12, array
    content starts at 16 (already 8-aligned), each field struct 8-aligned;
  * the header is padded to 8 bytes, then the body follows, so a message is
    ``16 + align8(fields_len) + body_len`` bytes long.
"""

import struct

# Message types
METHOD_CALL = 1
METHOD_RETURN = 2
ERROR = 3
SIGNAL = 4

# Flags
NO_REPLY_EXPECTED = 0x1

# Header field codes
F_PATH = 1
F_INTERFACE = 2
F_MEMBER = 3
F_ERROR_NAME = 4
F_REPLY_SERIAL = 5
F_DESTINATION = 6
F_SENDER = 7
F_SIGNATURE = 8
F_UNIX_FDS = 9

_FIELD_TYPES = {
    F_PATH: "o", F_INTERFACE: "s", F_MEMBER: "s", F_ERROR_NAME: "s",
    F_REPLY_SERIAL: "u", F_DESTINATION: "s", F_SENDER: "s",
    F_SIGNATURE: "g", F_UNIX_FDS: "u",
}

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
BUS_IFACE = "org.freedesktop.DBus"

_ALIGN = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8,
          "d": 8, "h": 4, "s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8,
          "v": 1}
_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I",
          "x": "q", "t": "Q", "d": "d", "h": "I"}


def pad_len(n, align):
    return (-n) % align


# --------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------

def split_signature(sig):
    """Split a signature into its complete types: 'sa{sv}i' -> ['s','a{sv}','i']."""
    out, i = [], 0
    while i < len(sig):
        j = _complete_type_end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def _complete_type_end(sig, i):
    c = sig[i]
    if c == "a":
        return _complete_type_end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        depth, j = 0, i
        while True:
            if sig[j] == c:
                depth += 1
            elif sig[j] == close:
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
    return i + 1


# --------------------------------------------------------------------------
# Marshalling
# --------------------------------------------------------------------------

class _Writer:
    def __init__(self, start=0):
        self.buf = bytearray()
        self.start = start          # absolute offset of buf[0] (for alignment)

    def align(self, n):
        self.buf += b"\0" * pad_len(self.start + len(self.buf), n)

    def put(self, t, value):
        c = t[0]
        self.align(_ALIGN[c])
        if c in _FIXED:
            self.buf += struct.pack("<" + _FIXED[c], value)
        elif c in "so":
            raw = value.encode()
            self.buf += struct.pack("<I", len(raw)) + raw + b"\0"
        elif c == "g":
            raw = value.encode()
            self.buf += bytes([len(raw)]) + raw + b"\0"
        elif c == "v":
            vsig, vval = value
            self.put("g", vsig)
            self.put(vsig, vval)
        elif c == "(":
            for st, sv in zip(split_signature(t[1:-1]), value):
                self.put(st, sv)
        elif c == "a":
            elem = t[1:]
            len_pos = len(self.buf)
            self.buf += b"\0\0\0\0"
            self.align(_ALIGN[elem[0]])          # padding not counted
            content_start = len(self.buf)
            if elem[0] == "y" and isinstance(value, (bytes, bytearray, memoryview)):
                self.buf += value
            elif elem[0] == "{":
                kt, vt = split_signature(elem[1:-1])
                for k, v in value.items():
                    self.align(8)
                    self.put(kt, k)
                    self.put(vt, v)
            else:
                for item in value:
                    self.put(elem, item)
            struct.pack_into("<I", self.buf, len_pos, len(self.buf) - content_start)
        else:
            raise ValueError("unsupported type %r" % t)


def marshal(signature, values, start=0):
    w = _Writer(start)
    for t, v in zip(split_signature(signature), values):
        w.put(t, v)
    return bytes(w.buf)


def message(mtype, serial=1, *, path=None, interface=None, member=None,
            error_name=None, reply_serial=None, destination=None, sender=None,
            signature="", body_values=(), body=None, unix_fds=0, flags=0):
    """Build one complete message as a bytearray (serial patchable at offset 8)."""
    if body is None:
        body = marshal(signature, body_values) if signature else b""
    fields = []
    for code, val in ((F_PATH, path), (F_INTERFACE, interface),
                      (F_MEMBER, member), (F_ERROR_NAME, error_name),
                      (F_REPLY_SERIAL, reply_serial),
                      (F_DESTINATION, destination), (F_SENDER, sender),
                      (F_SIGNATURE, signature or None),
                      (F_UNIX_FDS, unix_fds or None)):
        if val is not None:
            fields.append((code, (_FIELD_TYPES[code], val)))
    head = bytearray(struct.pack("<cBBBII", b"l", mtype, flags, 1, len(body), serial))
    head += marshal("a(yv)", [fields], start=12)
    head += b"\0" * pad_len(len(head), 8)
    return head + body


def set_serial(buf, serial):
    struct.pack_into("<I", buf, 8, serial)


def method_call(destination, path, interface, member, signature="", values=(),
                **kw):
    return message(METHOD_CALL, destination=destination, path=path,
                   interface=interface, member=member, signature=signature,
                   body_values=values, **kw)


def bus_call(member, signature="", values=(), interface=BUS_IFACE):
    return method_call(BUS_NAME, BUS_PATH, interface, member, signature, values)


# --------------------------------------------------------------------------
# Framing and (slow-path) unmarshalling
# --------------------------------------------------------------------------

_HEAD = struct.Struct("<BBBBIII")


def frame_length(buf, off=0):
    """Total length of the message starting at buf[off], or 0 if < 16 bytes."""
    if len(buf) - off < 16:
        return 0
    _, _, _, _, body_len, _, fields_len = _HEAD.unpack_from(buf, off)
    return 16 + fields_len + pad_len(fields_len, 8) + body_len


def msg_type(buf, off=0):
    return buf[off + 1]


class _Reader:
    def __init__(self, buf, pos, base):
        self.buf, self.pos, self.base = buf, pos, base   # base: alignment origin

    def align(self, n):
        self.pos += pad_len(self.pos - self.base, n)

    def get(self, t):
        c = t[0]
        self.align(_ALIGN[c])
        if c in _FIXED:
            fmt = "<" + _FIXED[c]
            (v,) = struct.unpack_from(fmt, self.buf, self.pos)
            self.pos += struct.calcsize(fmt)
            return v
        if c in "so":
            (n,) = struct.unpack_from("<I", self.buf, self.pos)
            v = bytes(self.buf[self.pos + 4:self.pos + 4 + n]).decode()
            self.pos += 5 + n
            return v
        if c == "g":
            n = self.buf[self.pos]
            v = bytes(self.buf[self.pos + 1:self.pos + 1 + n]).decode()
            self.pos += 2 + n
            return v
        if c == "v":
            return self.get(self.get("g"))
        if c == "(":
            return tuple(self.get(st) for st in split_signature(t[1:-1]))
        if c == "a":
            (n,) = struct.unpack_from("<I", self.buf, self.pos)
            self.pos += 4
            elem = t[1:]
            self.align(_ALIGN[elem[0]])
            end = self.pos + n
            if elem == "y":
                v = bytes(self.buf[self.pos:end])
                self.pos = end
                return v
            if elem[0] == "{":
                kt, vt = split_signature(elem[1:-1])
                d = {}
                while self.pos < end:
                    self.align(8)
                    k = self.get(kt)
                    d[k] = self.get(vt)
                return d
            items = []
            while self.pos < end:
                items.append(self.get(elem))
            return items
        raise ValueError("unsupported type %r" % t)


def parse(buf, off=0):
    """Parse one whole message: (type, flags, serial, fields dict, body values)."""
    _, mtype, flags, _, body_len, serial, fields_len = _HEAD.unpack_from(buf, off)
    r = _Reader(buf, off + 12, off)
    fields = dict(r.get("a(yv)"))
    body_start = off + 16 + fields_len + pad_len(fields_len, 8)
    sig = fields.get(F_SIGNATURE, "")
    body = []
    if sig:
        br = _Reader(buf, body_start, body_start)
        body = [br.get(t) for t in split_signature(sig)]
    return mtype, flags, serial, fields, body


def header_fields(buf, off=0):
    """Fast header-field scan (basic-typed fields only): {code: value}."""
    (fields_len,) = struct.unpack_from("<I", buf, off + 12)
    pos, end = off + 16, off + 16 + fields_len
    out = {}
    while pos < end:
        pos += (-(pos - off)) % 8
        code, siglen = buf[pos], buf[pos + 1]
        t = chr(buf[pos + 2])
        pos += 3 + siglen         # code, sig length, sig, nul
        if t in "sog":
            if t == "g":
                n = buf[pos]
                out[code] = bytes(buf[pos + 1:pos + 1 + n]).decode()
                pos += n + 2
            else:
                pos += (-(pos - off)) % 4
                (n,) = struct.unpack_from("<I", buf, pos)
                out[code] = bytes(buf[pos + 4:pos + 4 + n]).decode()
                pos += n + 5
        elif t == "u":
            pos += (-(pos - off)) % 4
            (out[code],) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:   # any other type (e.g. sandbus' CONTAINER_INSTANCE is 'o'): skip it
            r = _Reader(buf, pos, off)
            r.get(bytes(buf[pos - 1 - siglen:pos - 1]).decode())
            pos = r.pos
    return out


def body_offset(buf, off=0):
    (fields_len,) = struct.unpack_from("<I", buf, off + 12)
    return off + 16 + fields_len + pad_len(fields_len, 8)
