"""Validation of a message body against its signature, without building values.

The bus forwards bodies unchanged, so everything a receiver's unmarshaller may
trust has to be checked here, once, for every message a peer sends: padding
is zero, booleans are 0 or 1, strings are UTF-8 with no NUL inside and one
after, object paths and signatures are valid, arrays stay within 64 MiB and
end exactly where their length says, nesting stays within the specification's
limits, a variant holds one complete type, unix fd indices are below the
message's UNIX_FDS, and nothing follows the last argument.

The rules, and the way nesting is counted (every array with elements that are
not of a fixed size, struct, dict entry and variant is one level, at most 64
in all), are those of the D-Bus specification's "Valid Signatures" and
"Marshaling" sections as dbus-daemon applies them, so a body accepted here is
one dbus-daemon would forward too.

Each complete type is compiled once into a function ``f(data, p, end, depth,
nfds) -> p`` that checks one value starting at ``p`` and returns the offset
after it.  Arrays of fixed-size elements are checked by their length alone
(booleans and fd indices by one C-level pass), never element by element.
"""

import re
import struct
from array import array
from functools import lru_cache
from sys import byteorder

from .signature import FIXED_SIZE, SignatureError, split_signature

MAX_ARRAY_LENGTH = 64 * 1024 * 1024
MAX_DEPTH = 64  # arrays + structs + dict entries + variants, as dbus-daemon counts them

_ZERO = [b"\0" * n for n in range(8)]
# Object paths are ASCII, so a bytes pattern checks them in place (no copy,
# no decode); it is wire/names.py's path pattern.
_PATH = re.compile(rb"/\Z|(?:/[A-Za-z0-9_]+)+\Z")
_NATIVE = "l" if byteorder == "little" else "B"


class InvalidBody(ValueError):
    """The body does not match its signature."""


def validate_body(data, start: int, end: int, signature: str, endian: str = "l", unix_fds: int = 0) -> None:
    """Check data[start:end] as a body of the given signature; raise InvalidBody."""
    if not signature:
        if start != end:
            raise InvalidBody("body present but the signature is empty")
        return
    checks = (_LE_PLANS if endian == "l" else _BE_PLANS).get(signature)
    if checks is None:
        checks = _compile_signature(signature, endian)
    p = start
    for f in checks:
        p = f(data, p, end, 0, unix_fds)
    if p != end:
        raise InvalidBody(f"{end - p} bytes left after the last argument")


# The checkers of each message signature seen, per byte order (a dict
# lookup costs less than the lru_cache wrapper on this hot path).
_LE_PLANS = {}
_BE_PLANS = {}


def _compile_signature(signature: str, endian: str) -> tuple:
    try:
        types = split_signature(signature)
    except SignatureError as e:
        raise InvalidBody(str(e)) from None
    checks = tuple(_compile(t, endian) for t in types)
    plans = _LE_PLANS if endian == "l" else _BE_PLANS
    if len(plans) >= 4096:
        plans.clear()
    plans[signature] = checks
    return checks


def _bad_padding(q: int, end: int) -> InvalidBody:
    return InvalidBody("body truncated in padding" if q > end else "non-zero alignment padding")


def _pad(data, p: int, end: int, align: int) -> int:
    """Offset p aligned, after checking that the padding exists and is zero."""
    pad = -p % align
    if pad:
        q = p + pad
        if q > end:
            raise InvalidBody("body truncated in padding")
        if data[p:q] != _ZERO[pad]:
            raise InvalidBody("non-zero alignment padding")
        return q
    return p


def _fixed(size: int):
    zero = _ZERO

    def check(data, p, end, depth, nfds):
        pad = -p % size
        if pad:
            if data[p:p + pad] != zero[pad]:
                raise _bad_padding(p + pad, end)
            p += pad
        p += size
        if p > end:
            raise InvalidBody("body truncated")
        return p
    return check


def _u32_values(endian: str, ceiling_name: str):
    """Checker of a u32 that must be below a bound: 2 for booleans, the
    message's UNIX_FDS for fd indices."""
    unpack = struct.Struct("<I" if endian == "l" else ">I").unpack_from
    zero = _ZERO

    def check(data, p, end, depth, nfds):
        pad = -p % 4
        if pad:
            if data[p:p + pad] != zero[pad]:
                raise _bad_padding(p + pad, end)
            p += pad
        if p + 4 > end:
            raise InvalidBody("body truncated")
        v = unpack(data, p)[0]
        if ceiling_name == "b":
            if v > 1:
                raise InvalidBody(f"boolean value {v} is neither 0 nor 1")
        elif v >= nfds:
            raise InvalidBody(f"unix fd index {v} is not below the message's {nfds} fds")
        return p + 4
    return check


def _string(endian: str, path: bool):
    unpack = struct.Struct("<I" if endian == "l" else ">I").unpack_from
    zero = _ZERO
    path_match = _PATH.match

    def check(data, p, end, depth, nfds):
        pad = -p % 4
        if pad:
            if data[p:p + pad] != zero[pad]:
                raise _bad_padding(p + pad, end)
            p += pad
        if p + 4 > end:
            raise InvalidBody("body truncated")
        a = p + 4
        q = a + unpack(data, p)[0]
        if q >= end:
            raise InvalidBody("string runs past the end of its container")
        if data[q]:
            raise InvalidBody("string is not NUL-terminated")
        if path:
            if path_match(data, a, q) is None:
                raise InvalidBody("invalid object path")
        else:
            if data.find(b"\0", a, q) >= 0:
                raise InvalidBody("string contains NUL")
            try:
                data[a:q].decode()
            except UnicodeDecodeError:
                raise InvalidBody("string is not valid UTF-8") from None
        return q + 1
    return check


def _signature_at(data, p: int, end: int):
    """The signature value at p and the offset after it."""
    if p >= end:
        raise InvalidBody("body truncated")
    q = p + 1 + data[p]
    if q >= end:
        raise InvalidBody("signature runs past the end of its container")
    if data[q]:
        raise InvalidBody("signature is not NUL-terminated")
    try:
        sig = data[p + 1:q].decode("ascii")
        types = split_signature(sig)
    except (UnicodeDecodeError, SignatureError) as e:
        raise InvalidBody(f"invalid signature value: {e}") from None
    return types, q + 1


def _signature(data, p, end, depth, nfds):
    return _signature_at(data, p, end)[1]


def _variant(endian: str):
    # Variants repeat a handful of signatures (a{sv} is mostly s, u, b, as),
    # so their checkers are looked up by the signature's raw bytes.
    known = {}

    def check(data, p, end, depth, nfds):
        if p >= end:
            raise InvalidBody("body truncated")
        q = p + 1 + data[p]
        if q >= end:
            raise InvalidBody("signature runs past the end of its container")
        if data[q]:
            raise InvalidBody("signature is not NUL-terminated")
        raw = bytes(data[p + 1:q])
        f = known.get(raw)
        if f is None:
            types, _ = _signature_at(data, p, end)
            if len(types) != 1:
                raise InvalidBody("variant signature is not exactly one complete type")
            f = _compile(types[0], endian)
            if len(known) < 256:
                known[raw] = f
        if depth >= MAX_DEPTH:
            raise InvalidBody("values nest too deeply")
        return f(data, q + 1, end, depth + 1, nfds)
    return check


def _struct(fields, endian: str):
    checks = tuple(_compile(t, endian) for t in fields)

    def check(data, p, end, depth, nfds):
        p = _pad(data, p, end, 8)
        if depth + 1 > MAX_DEPTH:
            raise InvalidBody("values nest too deeply")
        for f in checks:
            p = f(data, p, end, depth + 1, nfds)
        return p
    return check


def _array(elem: str, endian: str):
    unpack = struct.Struct("<I" if endian == "l" else ">I").unpack_from
    code = elem[0]
    align = {"(": 8, "{": 8, "a": 4, "s": 4, "o": 4, "g": 1, "v": 1}.get(code) or FIXED_SIZE[code]
    swap = endian != _NATIVE

    def header(data, p, end):
        """(first element, end of the array) after the length and padding."""
        pad = -p % 4
        if pad:
            if data[p:p + pad] != _ZERO[pad]:
                raise _bad_padding(p + pad, end)
            p += pad
        if p + 4 > end:
            raise InvalidBody("body truncated")
        n = unpack(data, p)[0]
        if n > MAX_ARRAY_LENGTH:
            raise InvalidBody("array longer than 64 MiB")
        p = _pad(data, p + 4, end, align)
        stop = p + n
        if stop > end:
            raise InvalidBody("array runs past the end of its container")
        return p, stop

    if code in FIXED_SIZE and code not in "bh":
        size = FIXED_SIZE[code]

        def check(data, p, end, depth, nfds):
            p, stop = header(data, p, end)
            if (stop - p) % size:
                raise InvalidBody("array length is not a multiple of its element size")
            return stop
        return check

    if code in "bh":
        def check(data, p, end, depth, nfds):
            p, stop = header(data, p, end)
            if (stop - p) % 4:
                raise InvalidBody("array length is not a multiple of its element size")
            if stop > p:
                values = array("I")
                if values.itemsize != 4:  # pragma: no cover - no such platform in use
                    values = array("L")
                values.frombytes(data[p:stop])
                if swap:
                    values.byteswap()
                top = max(values)
                if code == "b" and top > 1:
                    raise InvalidBody(f"boolean value {top} is neither 0 nor 1")
                if code == "h" and top >= nfds:
                    raise InvalidBody(f"unix fd index {top} is not below the message's {nfds} fds")
            return stop
        return check

    if code in "so":
        path_match = _PATH.match
        zero = _ZERO

        def check(data, p, end, depth, nfds):
            # The commonest large body (as, ao) gets a loop of its own: a
            # function call per element would double its cost.  Strings are
            # checked for UTF-8 one by one only if the array is not ASCII.
            p, stop = header(data, p, end)
            if stop == p:
                return stop
            if depth >= MAX_DEPTH:
                raise InvalidBody("values nest too deeply")
            find = data.find
            paths = code == "o"
            decode = not paths and not data[p:stop].isascii()
            while p < stop:
                pad = -p & 3
                if pad:
                    if data[p:p + pad] != zero[pad]:
                        raise _bad_padding(p + pad, stop)
                    p += pad
                if p + 4 > stop:
                    raise InvalidBody("array element truncated")
                a = p + 4
                q = a + unpack(data, p)[0]
                if q >= stop:
                    raise InvalidBody("string runs past the end of its array")
                if data[q]:
                    raise InvalidBody("string is not NUL-terminated")
                if paths:
                    if path_match(data, a, q) is None:
                        raise InvalidBody("invalid object path")
                elif find(b"\0", a, q) >= 0:
                    raise InvalidBody("string contains NUL")
                elif decode:
                    try:
                        data[a:q].decode()
                    except UnicodeDecodeError:
                        raise InvalidBody("string is not valid UTF-8") from None
                p = q + 1
            if p != stop:
                raise InvalidBody("array contents do not end where its length says")
            return stop
        return check

    if code == "{":
        key_t, val_t = split_signature(elem[1:-1])
        key = _compile(key_t, endian)
        val = _compile(val_t, endian)

        def check(data, p, end, depth, nfds):
            p, stop = header(data, p, end)
            if stop == p:
                return stop
            if depth + 2 > MAX_DEPTH:
                raise InvalidBody("values nest too deeply")
            inner = depth + 2
            while p < stop:
                p = _pad(data, p, stop, 8)
                p = key(data, p, stop, inner, nfds)
                p = val(data, p, stop, inner, nfds)
            if p != stop:
                raise InvalidBody("array contents do not end where its length says")
            return stop
        return check

    inner_check = _compile(elem, endian)

    def check(data, p, end, depth, nfds):
        p, stop = header(data, p, end)
        if stop == p:
            return stop
        if depth + 1 > MAX_DEPTH:
            raise InvalidBody("values nest too deeply")
        inner = depth + 1
        while p < stop:
            p = inner_check(data, p, stop, inner, nfds)
        if p != stop:
            raise InvalidBody("array contents do not end where its length says")
        return stop
    return check


@lru_cache(maxsize=4096)
def _compile(t: str, endian: str):
    """The checker of one complete type (t is known to be valid)."""
    c = t[0]
    if c in "bh":
        return _u32_values(endian, c)
    if c in FIXED_SIZE:
        return _fixed(FIXED_SIZE[c])
    if c == "s":
        return _string(endian, False)
    if c == "o":
        return _string(endian, True)
    if c == "g":
        return _signature
    if c == "v":
        return _variant(endian)
    if c == "a":
        return _array(t[1:], endian)
    if c == "(":
        return _struct(split_signature(t[1:-1]), endian)
    raise InvalidBody(f"cannot validate type {t!r}")  # pragma: no cover - split_signature rejects it
