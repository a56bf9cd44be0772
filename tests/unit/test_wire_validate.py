"""Body validation (wire/validate.py): everything the marshaller writes is
valid, the validator and the strict unmarshaller agree on mutated bodies,
and each rule of the specification has a hand-made case."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_wire_marshal import ENDIANS, SETTINGS, body_values, signatures

from sandbus.wire.marshal import MarshalError, Variant, marshal, unmarshal
from sandbus.wire.message import SIGNAL, Message, ProtocolError, build_message
from sandbus.wire.validate import InvalidBody, validate_body

MANY_FDS = 2**32  # fd indices are the message's business; here any index goes


def valid(sig, data, endian="l", unix_fds=MANY_FDS):
    try:
        validate_body(data, 0, len(data), sig, endian, unix_fds)
    except InvalidBody:
        return False
    return True


def strict(sig, data, endian="l"):
    try:
        unmarshal(sig, data, endian)
    except (MarshalError, ValueError):
        return False
    return True


@SETTINGS
@given(data=st.data(), sig=signatures(), endian=ENDIANS)
def test_everything_the_marshaller_writes_is_valid(data, sig, endian):
    encoded = marshal(sig, data.draw(body_values(sig)), endian)
    validate_body(encoded, 0, len(encoded), sig, endian, MANY_FDS)


@SETTINGS
@given(data=st.data(), sig=signatures(max_types=3), endian=ENDIANS)
def test_mutations_are_judged_as_the_strict_unmarshaller_judges_them(data, sig, endian):
    encoded = bytearray(marshal(sig, data.draw(body_values(sig)), endian))
    kind = data.draw(st.sampled_from(["flip", "set", "cut", "grow"]))
    if kind in ("flip", "set") and encoded:
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] = data.draw(st.integers(0, 255)) if kind == "set" else encoded[i] ^ (1 << data.draw(st.integers(0, 7)))
    elif kind == "cut":
        del encoded[data.draw(st.integers(0, len(encoded))):]
    else:
        encoded += data.draw(st.binary(min_size=1, max_size=9))
    blob = bytes(encoded)
    assert valid(sig, blob, endian) == strict(sig, blob, endian)


@SETTINGS
@given(sig=signatures(max_types=2), blob=st.binary(max_size=80), endian=ENDIANS)
def test_garbage_is_judged_as_the_strict_unmarshaller_judges_it(sig, blob, endian):
    assert valid(sig, blob, endian) == strict(sig, blob, endian)


def u32(n, endian="<"):
    return struct.pack(endian + "I", n)


def s(raw: bytes) -> bytes:
    return u32(len(raw)) + raw + b"\0"


@pytest.mark.parametrize("sig,body", [
    ("s", s(b"hello")),
    ("ys", b"\x07\0\0\0" + s(b"x")),
    ("b", u32(1)),
    ("ab", u32(8) + u32(0) + u32(1)),
    ("o", s(b"/a/b_1")),
    ("g", b"\x05a{sv}\0"),
    ("v", b"\x01u\0\0" + u32(7)),
    ("ay", u32(3) + b"abc"),
    ("ax", u32(8) + b"\0" * 4 + b"\x01" * 8),  # padding to 8 after the length
    ("ax", u32(0) + b"\0" * 4),  # an empty array keeps its element padding
    ("a{sv}", u32(10) + b"\0" * 4 + s(b"k") + b"\x01y\0\x05"),
    ("h", u32(0)),
    ("s", s("Grüße".encode())),
])
def test_hand_made_valid_bodies(sig, body):
    assert valid(sig, body, unix_fds=1)
    assert strict(sig, body)


@pytest.mark.parametrize("sig,body,why", [
    ("ys", b"\x07\x01\0\0" + s(b"x"), "padding"),
    ("b", u32(2), "boolean"),
    ("ab", u32(8) + u32(0) + u32(2), "boolean"),
    ("ab", u32(4) + struct.pack(">I", 1), "boolean"),  # 1 big-endian in a little-endian body
    ("s", s(b"\xff\xfe"), "UTF-8"),
    ("s", s(b"\xed\xa0\x80"), "UTF-8"),  # an encoded surrogate
    ("s", s(b"a\0b"), "NUL"),
    ("s", u32(1) + b"ab", "NUL-terminated"),
    ("s", u32(5) + b"ab\0", "past the end"),
    ("o", s(b"/a//b"), "object path"),
    ("o", s(b"a/b"), "object path"),
    ("g", b"\x02a{\0", "signature"),
    ("g", b"\x01z\0", "signature"),
    ("v", b"\x02uu\0" + u32(1) + u32(2), "exactly one"),
    ("v", b"\x00\0", "exactly one"),
    ("ay", u32(4) + b"abc", "past the end"),
    ("ai", u32(6) + b"\0" * 8, "multiple"),
    ("as", u32(8) + s(b"x") + b"\0\0", "truncated"),  # length ends inside the padding after an element
    ("as", u32(7) + s(b"x") + b"\0", "truncated"),  # length ends after an element's NUL but not at one's end
    ("ax", u32(8) + b"\x01\0\0\0" + b"\0" * 8, "padding"),
    ("a{sv}", u32(10) + b"\0" * 4 + s(b"k") + b"\x01y\0\x05" + b"\0", "bytes left"),
    ("u", u32(1) + b"\0", "bytes left"),
    ("s", b"", "truncated"),
    ("u", b"\0\0", "truncated"),
    ("h", u32(1), "fd index"),
    ("ah", u32(8) + u32(0) + u32(1), "fd index"),
])
def test_hand_made_invalid_bodies(sig, body, why):
    with pytest.raises(InvalidBody, match=why):
        validate_body(body, 0, len(body), sig, "l", 1)


def test_array_limit_is_64_mib():
    body = u32(64 * 1024 * 1024 + 1)
    with pytest.raises(InvalidBody, match="64 MiB"):
        validate_body(body, 0, len(body), "ay", "l", 0)


def nested_variants(n: int) -> bytes:
    # n variants, each holding the next, the innermost a byte
    return b"\x01v\0" * (n - 1) + b"\x01y\0\x2a"


def test_variants_may_nest_64_deep_and_no_deeper():
    assert valid("v", nested_variants(64)) and strict("v", nested_variants(64))
    assert not valid("v", nested_variants(65)) and not strict("v", nested_variants(65))


def test_dict_entries_count_towards_the_depth():
    # Each level is a{yv} in a variant: array, dict entry and variant, three
    # levels; the innermost byte of L levels sits 3L+1 deep, at most 64.
    def build(levels):
        v = Variant("y", 42)
        for _ in range(levels):
            v = Variant("a{yv}", {7: v})
        return marshal("v", [v])
    assert valid("v", build(21)) and strict("v", build(21))
    assert not valid("v", build(22)) and not strict("v", build(22))


def test_empty_arrays_and_fixed_elements_add_no_depth():
    # 63 variants then an empty array of variants: the array never opens
    head = b"\x01v\0" * 63 + b"\x02av\0"
    body = head + b"\0" * (-len(head) % 4) + u32(0)
    assert valid("v", body) and strict("v", body)


def test_struct_depth_is_bounded_by_the_signature():
    with pytest.raises(InvalidBody, match="structs deeper"):
        validate_body(b"\0" * 8, 0, 8, "(" * 33 + "y" + ")" * 33, "l", 0)


def test_big_fixed_arrays_are_checked_by_length_alone():
    n = 16 * 1024 * 1024
    body = u32(n) + b"\xff" * n
    validate_body(body, 0, len(body), "ay", "l", 0)
    body = u32(n) + b"\0" * 4 + b"\xff" * n
    validate_body(body, 0, len(body), "ad", "l", 0)


@pytest.mark.parametrize("endian", "lB")
def test_string_arrays_in_both_byte_orders(endian):
    values = ["a", "é", "", "x" * 300]
    body = marshal("as", [values], endian)
    validate_body(body, 0, len(body), "as", endian, 0)
    bad = body.replace("é".encode(), b"\xc3\x28")
    with pytest.raises(InvalidBody, match="UTF-8"):
        validate_body(bad, 0, len(bad), "as", endian, 0)


# -- through Message: every parsed message is validated ------------------------------


def signal(signature, body, **kw):
    return build_message(SIGNAL, 1, path="/a", interface="a.b", member="M", signature=signature, body=body, **kw)


def test_message_parse_rejects_an_invalid_body_even_from_the_header_cache():
    good = signal("b", (True,))
    Message(good)  # the header is cached now
    bad = good[:-4] + u32(2)
    with pytest.raises(ProtocolError, match="boolean"):
        Message(bad)


def test_message_parse_checks_fd_indices_against_unix_fds():
    Message(signal("h", (0,), unix_fds=1))
    with pytest.raises(ProtocolError, match="fd index"):
        Message(signal("h", (1,), unix_fds=1))
    with pytest.raises(ProtocolError, match="fd index"):
        Message(signal("h", (0,)))


def test_message_with_a_signature_and_no_body_is_invalid():
    data = bytearray(signal("s", ("x",)))
    head = bytes(data[:len(data) - 6])
    fixed = bytearray(head)
    fixed[4:8] = u32(0)
    with pytest.raises(ProtocolError, match="truncated"):
        Message(bytes(fixed))


def test_big_endian_message_bodies_are_validated():
    Message(signal("sv", ("x", Variant("as", ["a", "b"])), endian="B"))
    bad = bytearray(signal("b", (True,), endian="B"))
    bad[-4:] = struct.pack(">I", 3)
    with pytest.raises(ProtocolError, match="boolean"):
        Message(bytes(bad))


@pytest.mark.parametrize("sig", ["as", "ao", "a{sv}", "av", "a(su)"])
def test_arrays_cut_at_every_offset_fail_cleanly(sig):
    values = {"as": [["ab", "c"]], "ao": [["/a", "/b/c"]], "a{sv}": [{"k": Variant("s", "v")}],
              "av": [[Variant("y", 1), Variant("s", "x")]], "a(su)": [[("a", 1), ("b", 2)]]}[sig]
    body = marshal(sig, values)
    for cut in range(len(body)):
        with pytest.raises(InvalidBody):
            validate_body(body[:cut], 0, cut, sig, "l", 0)
        # the same end with the rest of the bytes still there: end is the limit
        with pytest.raises(InvalidBody):
            validate_body(body, 0, cut, sig, "l", 0)


def test_remembered_small_bodies_are_keyed_by_everything_that_decides_validity():
    # valid 'h' index 0 with one fd, remembered; the same bytes without fds are still refused
    Message(signal("h", (0,), unix_fds=1))
    Message(signal("h", (0,), unix_fds=1))
    with pytest.raises(ProtocolError, match="fd index"):
        Message(signal("h", (0,)))
    # the same bytes under another signature or byte order are judged afresh
    good = signal("u", (2,))
    Message(good)
    as_bool = bytearray(good.replace(b"\x01g\x00\x01u\x00", b"\x01g\x00\x01b\x00"))
    with pytest.raises(ProtocolError, match="boolean"):
        Message(bytes(as_bool))
    big_endian = bytearray(signal("b", (True,), endian="B"))
    Message(bytes(big_endian))
    little = bytearray(signal("b", (True,)))
    little[-4:] = big_endian[-4:]  # 0x01000000 read little-endian
    with pytest.raises(ProtocolError, match="boolean"):
        Message(bytes(little))
