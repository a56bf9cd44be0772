"""D-Bus type signatures: validation and splitting into complete types.

Limits are the specification's: a signature is at most 255 bytes, and arrays
and structs may each nest at most 32 deep.
"""

from functools import lru_cache

BASIC = frozenset("ybnqiuxtdhsog")
FIXED_SIZE = {"y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8, "h": 4}
ALIGNMENT = {
    "y": 1, "b": 4, "n": 2, "q": 2, "i": 4, "u": 4, "x": 8, "t": 8, "d": 8,
    "h": 4, "s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1,
}
MAX_SIGNATURE_LENGTH = 255
MAX_ARRAY_DEPTH = 32
MAX_STRUCT_DEPTH = 32


class SignatureError(ValueError):
    pass


def _complete_type_end(sig: str, i: int, arrays: int, structs: int) -> int:
    """Index just past the single complete type starting at sig[i]."""
    if i >= len(sig):
        raise SignatureError(f"signature {sig!r} ends inside a type")
    c = sig[i]
    if c in BASIC or c == "v":
        return i + 1
    if c == "a":
        if arrays + 1 > MAX_ARRAY_DEPTH:
            raise SignatureError(f"signature {sig!r} nests arrays deeper than {MAX_ARRAY_DEPTH}")
        if i + 1 < len(sig) and sig[i + 1] == "{":
            return _dict_entry_end(sig, i + 1, arrays + 1, structs)
        return _complete_type_end(sig, i + 1, arrays + 1, structs)
    if c == "(":
        if structs + 1 > MAX_STRUCT_DEPTH:
            raise SignatureError(f"signature {sig!r} nests structs deeper than {MAX_STRUCT_DEPTH}")
        j = i + 1
        if j < len(sig) and sig[j] == ")":
            raise SignatureError(f"signature {sig!r} has an empty struct")
        while j < len(sig) and sig[j] != ")":
            j = _complete_type_end(sig, j, arrays, structs + 1)
        if j >= len(sig):
            raise SignatureError(f"signature {sig!r} has an unclosed struct")
        return j + 1
    if c == "{":
        raise SignatureError(f"signature {sig!r} has a dict entry outside an array")
    raise SignatureError(f"signature {sig!r} has an invalid type code {c!r}")


def _dict_entry_end(sig: str, i: int, arrays: int, structs: int) -> int:
    # Dict entries count as structs for the nesting limit.
    if structs + 1 > MAX_STRUCT_DEPTH:
        raise SignatureError(f"signature {sig!r} nests structs deeper than {MAX_STRUCT_DEPTH}")
    j = i + 1
    if j >= len(sig) or sig[j] not in BASIC:
        raise SignatureError(f"signature {sig!r} has a dict entry whose key is not a basic type")
    j += 1
    j = _complete_type_end(sig, j, arrays, structs + 1)
    if j >= len(sig) or sig[j] != "}":
        raise SignatureError(f"signature {sig!r} has a dict entry without exactly two types")
    return j + 1


@lru_cache(maxsize=4096)
def split_signature(sig: str) -> tuple:
    """Split a signature into its complete types; raise SignatureError if invalid."""
    if len(sig.encode()) > MAX_SIGNATURE_LENGTH:
        raise SignatureError(f"signature is longer than {MAX_SIGNATURE_LENGTH} bytes")
    types = []
    i = 0
    while i < len(sig):
        j = _complete_type_end(sig, i, 0, 0)
        types.append(sig[i:j])
        i = j
    return tuple(types)


def is_valid_signature(sig: str) -> bool:
    try:
        split_signature(sig)
    except SignatureError:
        return False
    return True


def is_single_complete_type(sig: str) -> bool:
    try:
        return len(split_signature(sig)) == 1
    except SignatureError:
        return False
