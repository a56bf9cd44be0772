"""Marshalling of D-Bus values, both byte orders.

Python mapping: integers for y n q i u x t h (h is an index into the message's
fd list), bool for b, float for d, str for s o g, bytes for ay, list for other
arrays, dict for arrays of dict entries, tuple for structs and Variant for v.
The bus needs this only for driver calls and argN match rules; forwarded
messages are never re-marshalled.
"""

import struct
from collections import namedtuple

from .names import is_valid_object_path
from .signature import ALIGNMENT, FIXED_SIZE, SignatureError, split_signature

MAX_ARRAY_LENGTH = 64 * 1024 * 1024
MAX_TOTAL_DEPTH = 64  # arrays + structs + dict entries + variants, as dbus-daemon counts them


# collections.namedtuple rather than typing.NamedTuple, which makes the same
# class: importing typing costs every client's start-up, `sandbus run` and
# sandbus-dbus-proxy included (bench/run_startup.py).
Variant = namedtuple("Variant", ("signature", "value"))


class MarshalError(ValueError):
    pass


_INT_FORMATS = {"y": "B", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "h": "I", "d": "d"}
_STRUCTS = {
    (code, endian): struct.Struct(("<" if endian == "l" else ">") + fmt)
    for code, fmt in _INT_FORMATS.items()
    for endian in "lB"
}
_PAD = b"\0" * 8


class Writer:
    """Appends marshalled values to a buffer whose offset 0 is 8-aligned."""

    __slots__ = ("buf", "endian", "_u32")

    def __init__(self, endian: str = "l"):
        self.buf = bytearray()
        self.endian = endian
        self._u32 = _STRUCTS[("u", endian)]

    def align(self, n: int) -> None:
        pad = -len(self.buf) % n
        if pad:
            self.buf += _PAD[:pad]

    def write(self, sig: str, values) -> None:
        types = split_signature(sig)
        if len(types) != len(values):
            raise MarshalError(f"signature {sig!r} needs {len(types)} values, got {len(values)}")
        for t, v in zip(types, values):
            self._write_one(t, v)

    def _write_one(self, t: str, v) -> None:
        c = t[0]
        buf = self.buf
        if c in _INT_FORMATS:
            self.align(ALIGNMENT[c])
            try:
                buf += _STRUCTS[(c, self.endian)].pack(v)
            except struct.error as e:
                raise MarshalError(f"value {v!r} does not fit type {c!r}") from e
        elif c == "b":
            self.align(4)
            buf += self._u32.pack(1 if v else 0)
        elif c in "so":
            if c == "o" and not is_valid_object_path(v):
                raise MarshalError(f"invalid object path {v!r}")
            data = v.encode()
            if b"\0" in data:
                raise MarshalError("strings may not contain NUL")
            self.align(4)
            buf += self._u32.pack(len(data))
            buf += data
            buf += b"\0"
        elif c == "g":
            split_signature(v)
            data = v.encode()
            buf.append(len(data))
            buf += data
            buf += b"\0"
        elif c == "v":
            sig, value = v
            if len(split_signature(sig)) != 1:
                raise MarshalError(f"variant signature {sig!r} is not a single complete type")
            self._write_one("g", sig)
            self._write_one(sig, value)
        elif c == "a":
            self.align(4)
            len_pos = len(buf)
            buf += b"\0\0\0\0"
            elem = t[1:]
            self.align(ALIGNMENT[elem[0]])
            start = len(buf)
            if elem == "y":
                buf += bytes(v)
            elif elem[0] == "{":
                key_t, val_t = split_signature(elem[1:-1])
                for key, val in v.items():
                    self.align(8)
                    self._write_one(key_t, key)
                    self._write_one(val_t, val)
            else:
                for item in v:
                    self._write_one(elem, item)
            length = len(buf) - start
            if length > MAX_ARRAY_LENGTH:
                raise MarshalError("array longer than 64 MiB")
            buf[len_pos:len_pos + 4] = self._u32.pack(length)
        elif c == "(":
            self.align(8)
            types = split_signature(t[1:-1])
            if len(types) != len(v):
                raise MarshalError(f"struct {t!r} needs {len(types)} fields, got {len(v)}")
            for st, sv in zip(types, v):
                self._write_one(st, sv)
        else:
            raise MarshalError(f"cannot marshal type {t!r}")


def marshal(sig: str, values, endian: str = "l") -> bytes:
    w = Writer(endian)
    w.write(sig, values)
    return bytes(w.buf)


class Reader:
    """Reads marshalled values from data[start:end]; offsets count from 0 of data."""

    __slots__ = ("data", "pos", "end", "endian", "_u32")

    def __init__(self, data, endian: str = "l", pos: int = 0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.endian = endian
        self._u32 = _STRUCTS[("u", endian)]

    def align(self, n: int) -> None:
        pad = -self.pos % n
        if pad:
            if self.pos + pad > self.end:
                raise MarshalError("message truncated in padding")
            if any(self.data[self.pos:self.pos + pad]):
                raise MarshalError("non-zero padding")
            self.pos += pad

    def read(self, sig: str) -> list:
        return [self._read_one(t, 0) for t in split_signature(sig)]

    def _take(self, n: int):
        p = self.pos
        if p + n > self.end:
            raise MarshalError("message truncated")
        self.pos = p + n
        return p

    def _read_one(self, t: str, depth: int):
        c = t[0]
        data = self.data
        if c in _INT_FORMATS:
            self.align(ALIGNMENT[c])
            s = _STRUCTS[(c, self.endian)]
            p = self._take(s.size)
            return s.unpack_from(data, p)[0]
        if c == "b":
            self.align(4)
            v = self._u32.unpack_from(data, self._take(4))[0]
            if v > 1:
                raise MarshalError(f"boolean value {v} is not 0 or 1")
            return bool(v)
        if c in "so":
            self.align(4)
            n = self._u32.unpack_from(data, self._take(4))[0]
            p = self._take(n + 1)
            return self._string(p, n, c)
        if c == "g":
            n = data[self._take(1)]
            p = self._take(n + 1)
            sig = self._string(p, n, "g")
            return sig
        # Nesting is counted as dbus-daemon counts it (wire/validate.py):
        # a level for each variant, struct and dict entry, and for an array
        # only when it has elements not of a fixed size.
        if c == "v":
            sig = self._read_one("g", depth)
            try:
                types = split_signature(sig)
            except SignatureError as e:
                raise MarshalError(str(e)) from e
            if len(types) != 1:
                raise MarshalError(f"variant signature {sig!r} is not a single complete type")
            if depth + 1 > MAX_TOTAL_DEPTH:
                raise MarshalError("values nest too deeply")
            return Variant(sig, self._read_one(sig, depth + 1))
        if c == "a":
            self.align(4)
            n = self._u32.unpack_from(data, self._take(4))[0]
            if n > MAX_ARRAY_LENGTH:
                raise MarshalError("array longer than 64 MiB")
            elem = t[1:]
            self.align(ALIGNMENT[elem[0]])
            stop = self.pos + n
            if stop > self.end:
                raise MarshalError("array runs past the end of the message")
            if elem == "y":
                p = self._take(n)
                return bytes(data[p:p + n])
            if n and elem not in FIXED_SIZE and depth + (2 if elem[0] == "{" else 1) > MAX_TOTAL_DEPTH:
                raise MarshalError("values nest too deeply")
            saved_end = self.end
            self.end = stop
            try:
                if elem[0] == "{":
                    key_t, val_t = split_signature(elem[1:-1])
                    result = {}
                    while self.pos < stop:
                        self.align(8)
                        key = self._read_one(key_t, depth + 2)
                        result[key] = self._read_one(val_t, depth + 2)
                else:
                    result = []
                    while self.pos < stop:
                        result.append(self._read_one(elem, depth + 1))
            finally:
                self.end = saved_end
            if self.pos != stop:
                raise MarshalError("array contents do not match its length")
            return result
        if c == "(":
            self.align(8)
            if depth + 1 > MAX_TOTAL_DEPTH:
                raise MarshalError("values nest too deeply")
            return tuple(self._read_one(st, depth + 1) for st in split_signature(t[1:-1]))
        raise MarshalError(f"cannot unmarshal type {t!r}")

    def leading(self, sig: str, count: int) -> list:
        """The first ``count`` arguments of an already validated body:
        strings and object paths as str, every other argument None, skipped
        by its lengths without building anything (so a huge array after the
        arguments a match rule looks at costs nothing)."""
        out = []
        for t in split_signature(sig)[:count]:
            if t in ("s", "o"):
                out.append(self._read_one(t, 0))
            else:
                self.skip(t)
                out.append(None)
        return out

    def skip(self, t: str) -> None:
        """Advance past one value of complete type t (validated data only:
        lengths are trusted, contents are not looked at)."""
        c = t[0]
        if c in FIXED_SIZE:
            self.align(ALIGNMENT[c])
            self.pos += FIXED_SIZE[c]
        elif c in "so":
            self.align(4)
            self.pos += 4 + self._u32.unpack_from(self.data, self.pos)[0] + 1
        elif c == "g":
            self.pos += 1 + self.data[self.pos] + 1
        elif c == "a":
            self.align(4)
            n = self._u32.unpack_from(self.data, self.pos)[0]
            self.pos += 4
            self.align(ALIGNMENT[t[1]])
            self.pos += n
        elif c == "(":
            self.align(8)
            for st in split_signature(t[1:-1]):
                self.skip(st)
        elif c == "v":
            n = self.data[self.pos]
            sig = bytes(self.data[self.pos + 1:self.pos + 1 + n]).decode("ascii")
            self.pos += n + 2
            self.skip(sig)
        else:
            raise MarshalError(f"cannot skip type {t!r}")
        if self.pos > self.end:
            raise MarshalError("message truncated")

    def _string(self, p: int, n: int, code: str) -> str:
        raw = bytes(self.data[p:p + n])
        if self.data[p + n] != 0:
            raise MarshalError("string is not NUL-terminated")
        if b"\0" in raw:
            raise MarshalError("string contains NUL")
        try:
            s = raw.decode()
        except UnicodeDecodeError as e:
            raise MarshalError("string is not valid UTF-8") from e
        if code == "o" and not is_valid_object_path(s):
            raise MarshalError(f"invalid object path {s!r}")
        if code == "g":
            try:
                split_signature(s)
            except SignatureError as e:
                raise MarshalError(str(e)) from e
        return s


def unmarshal(sig: str, data, endian: str = "l", pos: int = 0, end=None) -> list:
    r = Reader(data, endian, pos, end)
    values = r.read(sig)
    if r.pos != r.end:
        raise MarshalError("trailing bytes after the last value")
    return values
