"""Marshalling: property-based round trips in both byte orders, exact
encodings of known values, and the specification's limits and rejections."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbus.wire.marshal import (
    MAX_ARRAY_LENGTH,
    MarshalError,
    Variant,
    marshal,
    unmarshal,
)
from sandbus.wire.signature import is_valid_signature, split_signature

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])

BASIC = "ybnqiuxtdhsog"
ENDIANS = st.sampled_from("lB")

# -- strategies -----------------------------------------------------------------


def single_types(max_leaves=8):
    """Random valid single complete types: nested arrays, structs, dicts, variants."""
    leaf = st.sampled_from(list(BASIC + "v"))

    def extend(children):
        return st.one_of(
            children.map(lambda t: "a" + t),
            st.lists(children, min_size=1, max_size=4).map(lambda ts: "(" + "".join(ts) + ")"),
            st.tuples(st.sampled_from(BASIC), children).map(lambda kv: "a{" + kv[0] + kv[1] + "}"),
        )

    return st.recursive(leaf, extend, max_leaves=max_leaves).filter(
        lambda t: len(t) <= 255 and is_valid_signature(t))


def signatures(max_types=4):
    return st.lists(single_types(), min_size=1, max_size=max_types).map("".join).filter(
        lambda s: len(s) <= 255 and is_valid_signature(s))


_PATH_ELEMENT = st.text(alphabet="abcXYZ019_", min_size=1, max_size=5)
OBJECT_PATHS = st.lists(_PATH_ELEMENT, max_size=4).map(lambda els: "/" + "/".join(els))
STRINGS = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                  max_size=12)
SMALL_SIGNATURES = st.lists(single_types(max_leaves=3), max_size=3).map("".join).filter(
    lambda s: len(s) <= 255 and is_valid_signature(s))

_INT_RANGES = {
    "y": (0, 2**8 - 1), "n": (-2**15, 2**15 - 1), "q": (0, 2**16 - 1),
    "i": (-2**31, 2**31 - 1), "u": (0, 2**32 - 1), "x": (-2**63, 2**63 - 1),
    "t": (0, 2**64 - 1), "h": (0, 2**32 - 1),
}
_cache = {}


def values_for(t: str, variant_depth: int = 0):
    """A strategy for Python values of the single complete type t."""
    key = (t, variant_depth)
    if key in _cache:
        return _cache[key]
    c = t[0]
    if c in _INT_RANGES:
        lo, hi = _INT_RANGES[c]
        s = st.integers(lo, hi)
    elif c == "b":
        s = st.booleans()
    elif c == "d":
        s = st.floats(allow_nan=False)
    elif c == "s":
        s = STRINGS
    elif c == "o":
        s = OBJECT_PATHS
    elif c == "g":
        s = SMALL_SIGNATURES
    elif c == "v":
        inner_types = single_types(max_leaves=4) if variant_depth < 2 else st.sampled_from(list(BASIC))
        s = inner_types.flatmap(
            lambda it: values_for(it, variant_depth + 1).map(lambda v, it=it: Variant(it, v)))
    elif c == "a":
        elem = t[1:]
        if elem == "y":
            s = st.binary(max_size=10)
        elif elem[0] == "{":
            k, v = split_signature(elem[1:-1])
            s = st.dictionaries(values_for(k, variant_depth), values_for(v, variant_depth), max_size=3)
        else:
            s = st.lists(values_for(elem, variant_depth), max_size=3)
    elif c == "(":
        s = st.tuples(*[values_for(x, variant_depth) for x in split_signature(t[1:-1])])
    else:  # pragma: no cover
        raise AssertionError(t)
    _cache[key] = s
    return s


def body_values(sig):
    return st.tuples(*[values_for(t) for t in split_signature(sig)]).map(list)


# -- round trips ------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), sig=signatures(), endian=ENDIANS)
def test_round_trip(data, sig, endian):
    values = data.draw(body_values(sig))
    encoded = marshal(sig, values, endian)
    assert unmarshal(sig, encoded, endian) == values


@SETTINGS
@given(data=st.data(), sig=signatures(), prefix=st.integers(0, 3))
def test_round_trip_at_an_8_aligned_offset(data, sig, prefix):
    # Message bodies start at an 8-aligned offset inside the message.
    values = data.draw(body_values(sig))
    encoded = marshal(sig, values, "l")
    buf = b"\x55" * (8 * prefix) + encoded
    assert unmarshal(sig, buf, "l", pos=8 * prefix) == values


@SETTINGS
@given(data=st.data(), sig=signatures(max_types=2))
def test_byte_orders_agree_on_size_and_values(data, sig):
    values = data.draw(body_values(sig))
    le = marshal(sig, values, "l")
    be = marshal(sig, values, "B")
    assert len(le) == len(be)
    assert unmarshal(sig, le, "l") == unmarshal(sig, be, "B") == values


@SETTINGS
@given(data=st.data(), sig=signatures(max_types=3), endian=ENDIANS)
def test_truncation_never_crashes(data, sig, endian):
    # Every strict prefix either fails cleanly or (when the tail was only
    # values that happen to be empty) still parses: never another exception.
    values = data.draw(body_values(sig))
    encoded = marshal(sig, values, endian)
    cut = data.draw(st.integers(0, max(0, len(encoded) - 1)))
    try:
        unmarshal(sig, encoded[:cut], endian)
    except MarshalError:
        pass


@SETTINGS
@given(sig=signatures(max_types=2), blob=st.binary(max_size=64), endian=ENDIANS)
def test_garbage_fails_cleanly(sig, blob, endian):
    try:
        unmarshal(sig, blob, endian)
    except MarshalError:
        pass


# -- exact encodings ------------------------------------------------------------


@pytest.mark.parametrize("sig,values,le,be", [
    ("y", [0x12], b"\x12", b"\x12"),
    ("b", [True], b"\x01\0\0\0", b"\0\0\0\x01"),
    ("n", [-2], b"\xfe\xff", b"\xff\xfe"),
    ("q", [0x1234], b"\x34\x12", b"\x12\x34"),
    ("u", [0x01020304], b"\x04\x03\x02\x01", b"\x01\x02\x03\x04"),
    ("x", [-1], b"\xff" * 8, b"\xff" * 8),
    ("t", [1], b"\x01" + b"\0" * 7, b"\0" * 7 + b"\x01"),
    ("d", [1.0], struct.pack("<d", 1.0), struct.pack(">d", 1.0)),
    ("s", ["foo"], b"\x03\0\0\0foo\0", b"\0\0\0\x03foo\0"),
    ("o", ["/a"], b"\x02\0\0\0/a\0", b"\0\0\0\x02/a\0"),
    ("g", ["a{sv}"], b"\x05a{sv}\0", b"\x05a{sv}\0"),
    ("v", [Variant("y", 7)], b"\x01y\0\x07", b"\x01y\0\x07"),
    ("yu", [1, 2], b"\x01\0\0\0\x02\0\0\0", b"\x01\0\0\0\0\0\0\x02"),
    ("yt", [1, 2], b"\x01" + b"\0" * 7 + b"\x02" + b"\0" * 7, b"\x01" + b"\0" * 7 + b"\0" * 7 + b"\x02"),
    ("ay", [b"ab"], b"\x02\0\0\0ab", b"\0\0\0\x02ab"),
    # an array's padding to its element alignment is there even when it is empty
    ("ax", [[]], b"\0" * 8, b"\0" * 8),
    ("a(y)", [[]], b"\0" * 8, b"\0" * 8),
    ("ax", [[1]], b"\x08\0\0\0\0\0\0\0" + b"\x01" + b"\0" * 7, b"\0\0\0\x08\0\0\0\0" + b"\0" * 7 + b"\x01"),
    ("(yy)", [(1, 2)], b"\x01\x02", b"\x01\x02"),
    ("a{yy}", [{1: 2}], b"\x02\0\0\0\0\0\0\0\x01\x02", b"\0\0\0\x02\0\0\0\0\x01\x02"),
    ("a{sv}", [{"k": Variant("u", 1)}],
     b"\x10\0\0\0\0\0\0\0" + b"\x01\0\0\0k\0" + b"\x01u\0" + b"\0\0\0" + b"\x01\0\0\0",
     b"\0\0\0\x10\0\0\0\0" + b"\0\0\0\x01k\0" + b"\x01u\0" + b"\0\0\0" + b"\0\0\0\x01"),
])
def test_known_encodings(sig, values, le, be):
    assert marshal(sig, values, "l") == le
    assert marshal(sig, values, "B") == be
    assert unmarshal(sig, le, "l") == values
    assert unmarshal(sig, be, "B") == values


# -- rejections when reading ---------------------------------------------------------


def _s(raw: bytes, endian="<") -> bytes:
    return struct.pack(endian + "I", len(raw)) + raw + b"\0"


def test_non_zero_padding_rejected():
    good = marshal("yu", [1, 2])
    assert unmarshal("yu", good) == [1, 2]
    for i in (1, 2, 3):
        bad = bytearray(good)
        bad[i] = 1
        with pytest.raises(MarshalError, match="padding"):
            unmarshal("yu", bytes(bad))


def test_non_zero_padding_before_struct_rejected():
    good = marshal("y(y)", [1, (2,)])
    bad = bytearray(good)
    bad[5] = 0xFF
    with pytest.raises(MarshalError):
        unmarshal("y(y)", bytes(bad))


def test_non_zero_padding_after_empty_array_length_rejected():
    bad = b"\0\0\0\0\x01\0\0\0"
    with pytest.raises(MarshalError):
        unmarshal("ax", bad)


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"a\xfeb"])
def test_invalid_utf8_rejected(raw):
    for code in "so":
        with pytest.raises(MarshalError):
            unmarshal(code, _s(raw))


def test_embedded_nul_rejected():
    with pytest.raises(MarshalError):
        unmarshal("s", _s(b"a\0b"))
    with pytest.raises(MarshalError):
        unmarshal("g", b"\x03s\0s\0")


def test_missing_nul_terminator_rejected():
    with pytest.raises(MarshalError):
        unmarshal("s", b"\x01\0\0\0ax")
    with pytest.raises(MarshalError):
        unmarshal("g", b"\x01sx")


@pytest.mark.parametrize("path", ["", "a", "a/b", "/a/", "//", "/a//b", "/a-b", "/a.b", "/é"])
def test_invalid_object_path_rejected(path):
    with pytest.raises(MarshalError):
        unmarshal("o", _s(path.encode()))
    with pytest.raises(MarshalError):
        marshal("o", [path])


@pytest.mark.parametrize("path", ["/", "/a", "/a/b_c/D9", "/_"])
def test_valid_object_paths(path):
    assert unmarshal("o", marshal("o", [path])) == [path]


@pytest.mark.parametrize("value", [2, 3, 0x100, 0xFFFFFFFF])
def test_bad_boolean_rejected(value):
    for endian, fmt in (("l", "<I"), ("B", ">I")):
        with pytest.raises(MarshalError, match="boolean"):
            unmarshal("b", struct.pack(fmt, value), endian)


@pytest.mark.parametrize("sig", ["a", "(", "a{vs}", "{ss}", "()", "z"])
def test_invalid_signature_value_rejected(sig):
    raw = bytes([len(sig)]) + sig.encode() + b"\0"
    with pytest.raises(MarshalError):
        unmarshal("g", raw)


@pytest.mark.parametrize("sig", ["", "ss", "a", "a{ss}s"])
def test_variant_signature_must_be_one_complete_type(sig):
    raw = bytes([len(sig)]) + sig.encode() + b"\0" + b"\0" * 16
    with pytest.raises(MarshalError):
        unmarshal("v", raw)


def test_variant_with_too_deep_arrays_rejected():
    sig = "a" * 33 + "y"
    raw = bytes([len(sig)]) + sig.encode() + b"\0" + b"\0" * 8
    with pytest.raises(MarshalError):
        unmarshal("v", raw)


def _nested_variants(n: int) -> bytes:
    value = Variant("y", 1)
    for _ in range(n - 1):
        value = Variant("v", value)
    return marshal("v", [value])


def test_variant_nesting_up_to_64_accepted():
    data = _nested_variants(64)
    v = unmarshal("v", data)[0]
    depth = 0
    while isinstance(v, Variant):
        depth += 1
        v = v.value
    assert depth == 64 and v == 1


def test_variant_nesting_beyond_64_rejected():
    with pytest.raises(MarshalError, match="deep"):
        unmarshal("v", _nested_variants(65))


def test_variant_nesting_counts_containers_around_it():
    # 32 arrays around 33 variants: 65 containers in all
    inner = Variant("y", 1)
    for _ in range(32):
        inner = Variant("v", inner)
    value = inner
    sig = "a" * 32 + "v"
    for _ in range(32):
        value = [value]
    data = marshal(sig, [value])
    with pytest.raises(MarshalError, match="deep"):
        unmarshal(sig, data)
    # one variant fewer: 64 containers, accepted
    ok = marshal(sig, [_wrap_lists(inner.value, 32)])
    assert unmarshal(sig, ok) == [_wrap_lists(inner.value, 32)]


def _wrap_lists(value, n):
    for _ in range(n):
        value = [value]
    return value


def test_array_length_limit_64_mib_on_read():
    too_long = struct.pack("<I", MAX_ARRAY_LENGTH + 1)
    with pytest.raises(MarshalError, match="64 MiB"):
        unmarshal("ay", too_long + b"\0" * 16)
    with pytest.raises(MarshalError, match="64 MiB"):
        unmarshal("au", too_long + b"\0" * 16)


def test_array_of_exactly_64_mib_accepted():
    data = struct.pack("<I", MAX_ARRAY_LENGTH) + bytes(MAX_ARRAY_LENGTH)
    (value,) = unmarshal("ay", data)
    assert len(value) == MAX_ARRAY_LENGTH


def test_array_length_limit_64_mib_on_write():
    assert MAX_ARRAY_LENGTH == 64 * 1024 * 1024
    with pytest.raises(MarshalError):
        marshal("ay", [bytes(MAX_ARRAY_LENGTH + 1)])


def test_array_length_not_a_multiple_of_its_elements_rejected():
    data = struct.pack("<I", 6) + b"\0" * 8
    with pytest.raises(MarshalError):
        unmarshal("ai", data)


def test_array_running_past_the_end_rejected():
    with pytest.raises(MarshalError):
        unmarshal("ay", struct.pack("<I", 10) + b"abc")


def test_string_running_past_the_end_rejected():
    with pytest.raises(MarshalError):
        unmarshal("s", struct.pack("<I", 100) + b"abc\0")


def test_trailing_bytes_rejected():
    with pytest.raises(MarshalError, match="trailing"):
        unmarshal("y", b"\x01\x02")


def test_truncated_fixed_value_rejected():
    with pytest.raises(MarshalError):
        unmarshal("u", b"\x01\x02")
    with pytest.raises(MarshalError):
        unmarshal("yt", b"\x01\0\0\0\0\0\0\0\x01")


# -- rejections when writing -------------------------------------------------------------


@pytest.mark.parametrize("sig,value", [
    ("y", 256), ("y", -1), ("n", 2**15), ("q", -1), ("i", 2**31), ("u", -1),
    ("u", 2**32), ("x", 2**63), ("t", -1), ("h", -1),
])
def test_out_of_range_integers_rejected(sig, value):
    with pytest.raises(MarshalError):
        marshal(sig, [value])


def test_nul_in_string_rejected_on_write():
    with pytest.raises(MarshalError):
        marshal("s", ["a\0b"])


def test_wrong_number_of_values_rejected():
    with pytest.raises(MarshalError):
        marshal("ss", ["a"])
    with pytest.raises(MarshalError):
        marshal("(ss)", [("a",)])


def test_invalid_signature_rejected_on_write():
    with pytest.raises(ValueError):
        marshal("g", ["a"])
    with pytest.raises(ValueError):
        marshal("v", [Variant("ss", ("a", "b"))])


# -- leading arguments for argN matching: read what is needed, skip the rest ------


def test_leading_reads_strings_and_skips_the_rest_by_length():
    from sandbus.wire.marshal import Reader
    values = [7, Variant("a{sv}", {"k": Variant("s", "v")}), ("x", 2), ["a", "b"], "/p", "last", b"zz"]
    sig = "uv(su)aso" + "say"
    data = marshal(sig, values)
    assert Reader(data).leading(sig, 6) == [None, None, None, None, "/p", "last"]
    assert Reader(data).leading(sig, 1) == [None]
    assert Reader(data).leading(sig, 99) == [None, None, None, None, "/p", "last", None]


def test_leading_never_looks_inside_a_skipped_array():
    from sandbus.wire.marshal import Reader
    # 16 MiB of an "as" whose contents are not even strings: only its length is read
    n = 16 * 1024 * 1024
    data = marshal("s", ["before"]) + b"\0" + struct.pack("<I", n) + b"\xff" * n + marshal("s", ["after"])
    reads = []

    class Counting(Reader):
        __slots__ = ()

        def _read_one(self, t, depth):
            reads.append(t)
            return super()._read_one(t, depth)

    assert Counting(data).leading("sass", 3) == ["before", None, "after"]
    assert reads == ["s", "s"]
    assert Counting(data).leading("sass", 1) == ["before"]


@SETTINGS
@given(data=st.data(), sig=signatures(), endian=ENDIANS, count=st.integers(0, 5))
def test_leading_agrees_with_unmarshal(data, sig, endian, count):
    from sandbus.wire.marshal import Reader
    values = data.draw(body_values(sig))
    encoded = marshal(sig, values, endian)
    full = unmarshal(sig, encoded, endian)
    want = [v if t in ("s", "o") else None for t, v in zip(split_signature(sig), full)][:count]
    assert Reader(encoded, endian).leading(sig, count) == want
