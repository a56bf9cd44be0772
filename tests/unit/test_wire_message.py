"""Message framing, header parsing and validation, forwarding."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbus.wire.marshal import Variant, Writer, marshal, unmarshal
from sandbus.wire.message import (
    ERROR,
    FIELD_CONTAINER_INSTANCE,
    FIELD_DESTINATION,
    FIELD_ERROR_NAME,
    FIELD_INTERFACE,
    FIELD_MEMBER,
    FIELD_PATH,
    FIELD_REPLY_SERIAL,
    FIELD_SENDER,
    FIELD_SIGNATURE,
    FIELD_UNIX_FDS,
    MAX_MESSAGE_LENGTH,
    METHOD_CALL,
    METHOD_RETURN,
    NO_REPLY_EXPECTED,
    SIGNAL,
    Message,
    ProtocolError,
    build_message,
    message_length,
    string_field,
)

SENDER_FIELD_L = string_field(FIELD_SENDER, ":1.42", "l")
SENDER_FIELD_B = string_field(FIELD_SENDER, ":1.42", "B")


def sender_field(endian, name=":1.42"):
    return string_field(FIELD_SENDER, name, endian)


def raw_message(mtype, fields, *, serial=1, body=b"", endian="l", flags=0, body_len=None, version=1):
    """A message with exactly the given header fields [(code, Variant)]:
    lets tests write what build_message refuses to."""
    w = Writer(endian)
    w.buf += bytes((ord(endian), mtype, flags, version))
    w.write("uua(yv)", (len(body) if body_len is None else body_len, serial, fields))
    w.align(8)
    w.buf += body
    return bytes(w.buf)


def header_fields(data) -> dict:
    """Every header field of a message, decoded independently of Message."""
    endian = chr(data[0])
    fixed = unmarshal("yyyyuua(yv)", data, endian, end=_header_end(data))
    fields = {}
    for code, variant in fixed[6]:
        assert code not in fields, f"field {code} twice"
        fields[code] = variant
    return fields


def _header_end(data):
    fmt = "<I" if data[0] == ord("l") else ">I"
    return 16 + struct.unpack_from(fmt, data, 12)[0]


CALL_FIELDS = [
    (FIELD_PATH, Variant("o", "/a/b")),
    (FIELD_MEMBER, Variant("s", "Frob")),
]


# -- valid messages per type ------------------------------------------------------


@pytest.mark.parametrize("endian", "lB")
def test_minimal_messages_of_each_type(endian):
    call = Message(raw_message(METHOD_CALL, CALL_FIELDS, endian=endian))
    assert (call.type, call.path, call.member, call.interface) == (METHOD_CALL, "/a/b", "Frob", None)
    assert call.expects_reply and not call.no_reply_expected
    sig = Message(raw_message(SIGNAL, CALL_FIELDS + [(FIELD_INTERFACE, Variant("s", "a.b"))], endian=endian))
    assert (sig.type, sig.interface) == (SIGNAL, "a.b")
    assert not sig.expects_reply
    ret = Message(raw_message(METHOD_RETURN, [(FIELD_REPLY_SERIAL, Variant("u", 7))], endian=endian))
    assert (ret.type, ret.reply_serial) == (METHOD_RETURN, 7)
    err = Message(raw_message(ERROR, [(FIELD_REPLY_SERIAL, Variant("u", 7)),
                                      (FIELD_ERROR_NAME, Variant("s", "x.y.Z"))], endian=endian))
    assert (err.type, err.error_name, err.reply_serial) == (ERROR, "x.y.Z", 7)


@pytest.mark.parametrize("endian", "lB")
def test_build_message_round_trip(endian):
    data = build_message(METHOD_CALL, 0xDEADBEEF, path="/p", interface="i.f", member="M",
                         destination="com.example", signature="sa{sv}u",
                         body=("hi", {"k": Variant("as", ["a"])}, 9),
                         flags=NO_REPLY_EXPECTED, endian=endian)
    m = Message(data)
    assert m.endian == endian
    assert m.serial == 0xDEADBEEF
    assert (m.path, m.interface, m.member, m.destination) == ("/p", "i.f", "M", "com.example")
    assert m.signature == "sa{sv}u"
    assert m.flags == NO_REPLY_EXPECTED and m.no_reply_expected and not m.expects_reply
    assert m.body() == ["hi", {"k": Variant("as", ["a"])}, 9]
    assert m.sender is None
    assert message_length(data) == len(data)
    assert m.body_start % 8 == 0


def test_unknown_flags_tolerated():
    m = Message(raw_message(METHOD_CALL, CALL_FIELDS, flags=0xF0))
    assert m.flags == 0xF0


def test_allow_interactive_authorization_flag_kept():
    m = Message(build_message(METHOD_CALL, 1, path="/", member="M", flags=4))
    assert m.flags == 4 and m.expects_reply


# -- required fields ------------------------------------------------------------------


@pytest.mark.parametrize("mtype,fields", [
    (METHOD_CALL, [(FIELD_MEMBER, Variant("s", "M"))]),                      # no path
    (METHOD_CALL, [(FIELD_PATH, Variant("o", "/"))]),                        # no member
    (SIGNAL, CALL_FIELDS),                                                   # no interface
    (SIGNAL, [(FIELD_INTERFACE, Variant("s", "a.b")), (FIELD_MEMBER, Variant("s", "M"))]),
    (SIGNAL, [(FIELD_INTERFACE, Variant("s", "a.b")), (FIELD_PATH, Variant("o", "/"))]),
    (METHOD_RETURN, []),                                                      # no reply serial
    (METHOD_RETURN, CALL_FIELDS),
    (ERROR, [(FIELD_REPLY_SERIAL, Variant("u", 1))]),                         # no error name
    (ERROR, [(FIELD_ERROR_NAME, Variant("s", "a.b"))]),                       # no reply serial
])
def test_required_fields_missing(mtype, fields):
    with pytest.raises(ProtocolError):
        Message(raw_message(mtype, fields))


def test_invalid_message_type():
    with pytest.raises(ProtocolError):
        Message(raw_message(0, CALL_FIELDS))


@pytest.mark.parametrize("mtype", [5, 255])
def test_unknown_message_type_parses(mtype):
    # The spec says unknown types are to be ignored, not treated as corrupt;
    # the bus answers them with AccessDenied.
    assert Message(raw_message(mtype, CALL_FIELDS)).type == mtype


def test_serial_zero_rejected():
    with pytest.raises(ProtocolError, match="serial"):
        Message(raw_message(METHOD_CALL, CALL_FIELDS, serial=0))


def test_reply_serial_zero_rejected():
    with pytest.raises(ProtocolError, match="serial"):
        Message(raw_message(METHOD_RETURN, [(FIELD_REPLY_SERIAL, Variant("u", 0))]))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_protocol_version_must_be_1(version):
    with pytest.raises(ProtocolError, match="version"):
        Message(raw_message(METHOD_CALL, CALL_FIELDS, version=version))


def test_invalid_byte_order_mark():
    data = bytearray(raw_message(METHOD_CALL, CALL_FIELDS))
    data[0] = ord("x")
    with pytest.raises(ProtocolError):
        Message(bytes(data))


# -- invalid values in header fields ---------------------------------------------------


@pytest.mark.parametrize("code,value", [
    (FIELD_PATH, "a/b"),
    (FIELD_PATH, "/a/"),
    (FIELD_PATH, "//"),
    (FIELD_INTERFACE, "nodots"),
    (FIELD_INTERFACE, "a..b"),
    (FIELD_INTERFACE, "1a.b"),
    (FIELD_INTERFACE, "a." + "b" * 254),
    (FIELD_MEMBER, "a.b"),
    (FIELD_MEMBER, "1abc"),
    (FIELD_MEMBER, ""),
    (FIELD_MEMBER, "a-b"),
    (FIELD_ERROR_NAME, "nodots"),
    (FIELD_DESTINATION, "!bad"),
    (FIELD_DESTINATION, "nodots"),
    (FIELD_DESTINATION, ":"),
    (FIELD_DESTINATION, "a.1b"),
    (FIELD_SENDER, "not valid"),
    (FIELD_CONTAINER_INSTANCE, "relative"),
])
def test_invalid_names_in_header(code, value):
    base = {FIELD_PATH: Variant("o", "/a"), FIELD_MEMBER: Variant("s", "M"),
            FIELD_INTERFACE: Variant("s", "a.b"), FIELD_ERROR_NAME: Variant("s", "a.b")}
    sig = "o" if code in (FIELD_PATH, FIELD_CONTAINER_INSTANCE) else "s"
    base[code] = Variant(sig, value)
    # object paths are validated by the marshaller too; write raw bytes
    fields = list(base.items())
    w = Writer("l")
    w.buf += bytes((ord("l"), SIGNAL, 0, 1))
    w.write("uu", (0, 1))
    arr = Writer("l")
    for c, v in fields:
        arr.align(8)
        raw = v.value.encode()
        arr.buf += bytes((c, 1, ord(v.signature), 0)) + struct.pack("<I", len(raw)) + raw + b"\0"
    w.buf += struct.pack("<I", len(arr.buf)) + arr.buf
    w.align(8)
    with pytest.raises(ProtocolError):
        Message(bytes(w.buf))


@pytest.mark.parametrize("value", [":1.5", ":a.b", "org.example.Foo", "a-b.c_d", "_a.b"])
def test_valid_destinations(value):
    m = Message(build_message(METHOD_CALL, 1, path="/", member="M", destination=value))
    assert m.destination == value


@pytest.mark.parametrize("sig", ["a", "(", "a{vs}", "z", "()", "a" * 33 + "y"])
def test_invalid_signature_field(sig):
    raw = sig.encode()
    fields = bytearray()
    for code, v in CALL_FIELDS:
        fields += b"\0" * (-len(fields) % 8)
        enc = v.value.encode()
        fields += bytes((code, 1, ord(v.signature), 0)) + struct.pack("<I", len(enc)) + enc + b"\0"
    fields += b"\0" * (-len(fields) % 8)
    fields += bytes((FIELD_SIGNATURE, 1, ord("g"), 0, len(raw))) + raw + b"\0"
    data = bytes((ord("l"), METHOD_CALL, 0, 1)) + struct.pack("<III", 0, 1, len(fields)) + bytes(fields)
    data += b"\0" * (-len(data) % 8)
    with pytest.raises(ProtocolError, match="signature"):
        Message(data)


def test_invalid_utf8_in_header_string():
    fields = bytearray()
    for code, raw in ((FIELD_PATH, b"/a"), (FIELD_MEMBER, b"M\xff")):
        fields += b"\0" * (-len(fields) % 8)
        fields += bytes((code, 1, ord("o" if code == FIELD_PATH else "s"), 0)) + struct.pack("<I", len(raw)) + raw + b"\0"
    data = bytes((ord("l"), METHOD_CALL, 0, 1)) + struct.pack("<III", 0, 1, len(fields)) + bytes(fields)
    data += b"\0" * (-len(data) % 8)
    with pytest.raises(ProtocolError):
        Message(data)


@pytest.mark.parametrize("code,variant", [
    (FIELD_PATH, Variant("s", "/a")),
    (FIELD_INTERFACE, Variant("o", "/a")),
    (FIELD_MEMBER, Variant("u", 1)),
    (FIELD_ERROR_NAME, Variant("o", "/a")),
    (FIELD_REPLY_SERIAL, Variant("i", 1)),
    (FIELD_REPLY_SERIAL, Variant("s", "1")),
    (FIELD_DESTINATION, Variant("o", "/a")),
    (FIELD_SENDER, Variant("g", "s")),
    (FIELD_SIGNATURE, Variant("s", "s")),
    (FIELD_UNIX_FDS, Variant("i", 1)),
    (FIELD_CONTAINER_INSTANCE, Variant("s", "/a")),
    (FIELD_PATH, Variant("ao", ["/a"])),
    (FIELD_MEMBER, Variant("(s)", ("M",))),
    (FIELD_UNIX_FDS, Variant("v", Variant("u", 1))),
])
def test_wrong_field_types(code, variant):
    fields = [f for f in CALL_FIELDS + [(FIELD_INTERFACE, Variant("s", "a.b"))] if f[0] != code]
    fields.append((code, variant))
    with pytest.raises(ProtocolError, match="type"):
        Message(raw_message(SIGNAL, fields))


@pytest.mark.parametrize("dup", [
    (FIELD_PATH, Variant("o", "/other")),
    (FIELD_MEMBER, Variant("s", "Frob")),
    (FIELD_DESTINATION, Variant("s", "a.b")),
    (FIELD_SENDER, Variant("s", ":1.1")),
    (FIELD_UNIX_FDS, Variant("u", 0)),
    (FIELD_SIGNATURE, Variant("g", "")),
    (FIELD_CONTAINER_INSTANCE, Variant("o", "/")),
])
def test_duplicate_fields_rejected(dup):
    fields = CALL_FIELDS + [dup, dup] if dup[0] not in (FIELD_PATH, FIELD_MEMBER) else CALL_FIELDS + [dup]
    with pytest.raises(ProtocolError, match="twice"):
        Message(raw_message(METHOD_CALL, fields))


def test_field_code_zero_is_invalid():
    # The specification: "INVALID 0 ... error if it appears in a message"
    with pytest.raises(ProtocolError):
        Message(raw_message(METHOD_CALL, CALL_FIELDS + [(0, Variant("s", "x"))]))


def test_local_path_and_interface_reserved():
    with pytest.raises(ProtocolError):
        Message(build_message(METHOD_CALL, 1, path="/org/freedesktop/DBus/Local", member="M"))
    with pytest.raises(ProtocolError):
        Message(build_message(SIGNAL, 1, path="/a", interface="org.freedesktop.DBus.Local", member="M"))


def test_body_without_signature_rejected():
    with pytest.raises(ProtocolError, match="signature"):
        Message(raw_message(METHOD_CALL, CALL_FIELDS, body=b"\0" * 4))


def test_length_mismatch_rejected():
    data = build_message(METHOD_CALL, 1, path="/", member="M", signature="u", body=(1,))
    with pytest.raises(ProtocolError):
        Message(data + b"\0")
    with pytest.raises(ProtocolError):
        Message(data[:-1])


def test_non_zero_padding_between_fields_rejected():
    data = bytearray(raw_message(METHOD_CALL, CALL_FIELDS))
    # first field: (1, 'o', "/a/b") = 4 + 4 + 5 bytes = 13, padded to 16
    assert data[16] == FIELD_PATH
    assert data[16 + 13:16 + 16] == b"\0\0\0"
    data[16 + 14] = 1
    with pytest.raises(ProtocolError, match="padding"):
        Message(bytes(data))


def test_non_zero_padding_between_fields_and_body_rejected():
    data = bytearray(build_message(METHOD_CALL, 1, path="/a", member="M", signature="y", body=(1,)))
    m = Message(bytes(data))
    assert m.body() == [1]
    fields_end = 16 + m.fields_len
    assert m.body_start > fields_end
    data[m.body_start - 1] = 0x55
    with pytest.raises(ProtocolError, match="padding"):
        Message(bytes(data))


def test_header_field_truncated():
    data = bytearray(raw_message(METHOD_CALL, CALL_FIELDS))
    # claim a shorter fields array: the last field is cut off
    fields_len = struct.unpack_from("<I", data, 12)[0]
    struct.pack_into("<I", data, 12, fields_len - 3)
    with pytest.raises(ProtocolError):
        Message(bytes(data[:16 + fields_len - 3] + b"\0" * (-(fields_len - 3) % 8)))


# -- unknown fields ------------------------------------------------------------------


UNKNOWN_FIELDS = [
    (11, Variant("s", "eleven")),
    (42, Variant("a{sv}", {"x": Variant("u", 1)})),
    (200, Variant("(yt)", (1, 2))),
    (255, Variant("ay", b"\xff\x00")),
]


@pytest.mark.parametrize("endian", "lB")
def test_unknown_fields_tolerated_and_stripped_on_forwarding(endian):
    fields = [CALL_FIELDS[0], UNKNOWN_FIELDS[0], UNKNOWN_FIELDS[1], CALL_FIELDS[1],
              UNKNOWN_FIELDS[2], (FIELD_DESTINATION, Variant("s", "com.example")), UNKNOWN_FIELDS[3]]
    body = marshal("su", ["x", 5], endian)
    data = raw_message(METHOD_CALL, fields + [(FIELD_SIGNATURE, Variant("g", "su"))], body=body,
                       endian=endian)
    m = Message(data)
    assert (m.path, m.member, m.destination) == ("/a/b", "Frob", "com.example")
    out = m.forwarded(sender_field(endian))
    fwd = Message(out)
    assert fwd.sender == ":1.42"
    assert fwd.body() == ["x", 5]
    got = header_fields(out)
    assert set(got) == {FIELD_PATH, FIELD_MEMBER, FIELD_DESTINATION, FIELD_SIGNATURE, FIELD_SENDER}
    assert got[FIELD_DESTINATION] == ("s", "com.example")


# -- fields the bus owns ---------------------------------------------------------


@pytest.mark.parametrize("endian", "lB")
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_client_sender_and_container_instance_replaced(endian, position):
    forged = [(FIELD_SENDER, Variant("s", ":1.999")),
              (FIELD_CONTAINER_INSTANCE, Variant("o", "/org/freedesktop/DBus/Containers1/c9"))]
    rest = CALL_FIELDS + [(FIELD_INTERFACE, Variant("s", "com.example.I")),
                          (FIELD_SIGNATURE, Variant("g", "s"))]
    if position == "first":
        fields = forged + rest
    elif position == "middle":
        fields = rest[:2] + forged + rest[2:]
    else:
        fields = rest + forged
    body = marshal("s", ["payload"], endian)
    data = raw_message(SIGNAL, fields, body=body, endian=endian)
    m = Message(data)
    assert m.sender == ":1.999"  # what the client wrote, parsed but not trusted
    out = m.forwarded(sender_field(endian))
    got = header_fields(out)
    assert got[FIELD_SENDER] == ("s", ":1.42")
    assert FIELD_CONTAINER_INSTANCE not in got
    assert set(got) == {FIELD_PATH, FIELD_MEMBER, FIELD_INTERFACE, FIELD_SIGNATURE, FIELD_SENDER}
    fwd = Message(out)
    assert fwd.sender == ":1.42"
    assert fwd.body() == ["payload"]
    assert out[-len(body):] == body
    # with the bus's container instance field
    inst = string_field(FIELD_CONTAINER_INSTANCE, "/org/freedesktop/DBus/Containers1/c1", endian, "o")
    out2 = m.forwarded(sender_field(endian), inst)
    got2 = header_fields(out2)
    assert got2[FIELD_SENDER] == ("s", ":1.42")
    assert got2[FIELD_CONTAINER_INSTANCE] == ("o", "/org/freedesktop/DBus/Containers1/c1")
    assert Message(out2).body() == ["payload"]


@pytest.mark.parametrize("endian", "lB")
def test_forwarded_without_bus_fields_present(endian):
    data = build_message(METHOD_CALL, 77, path="/x", interface="a.b", member="M",
                         destination=":1.3", signature="ay", body=(b"\x01\x02\x03",),
                         flags=NO_REPLY_EXPECTED, endian=endian)
    m = Message(data)
    out = m.forwarded(sender_field(endian, ":1.7"))
    fwd = Message(out)
    assert (fwd.serial, fwd.flags, fwd.type, fwd.endian) == (77, NO_REPLY_EXPECTED, METHOD_CALL, endian)
    assert (fwd.path, fwd.interface, fwd.member, fwd.destination, fwd.sender) == ("/x", "a.b", "M", ":1.3", ":1.7")
    assert fwd.body() == [b"\x01\x02\x03"]
    assert out[fwd.body_start:] == data[m.body_start:]
    assert message_length(out) == len(out)
    # cached for the common (no instance field) case
    assert m.forwarded(sender_field(endian, ":1.7")) is out


@pytest.mark.parametrize("endian", "lB")
@pytest.mark.parametrize("size", [0, 3, 200000])
def test_forwarded_parts_are_forwarded_unjoined(endian, size):
    data = build_message(METHOD_CALL, 9, path="/x", interface="a.b", member="M", destination=":1.3",
                         signature="ay", body=(b"\x07" * size,), endian=endian)
    for buf in (data, bytearray(data)):  # a large message is read into a bytearray
        m = Message(buf)
        head, body = m.forwarded_parts(sender_field(endian, ":1.7"))
        assert isinstance(body, memoryview) and body.obj is buf  # a view, not a copy
        assert head + bytes(body) == Message(bytes(buf)).forwarded(sender_field(endian, ":1.7"))


@pytest.mark.parametrize("endian", "lB")
def test_forwarded_parts_none_when_fields_are_rewritten(endian):
    fields = CALL_FIELDS + [(FIELD_SENDER, Variant("s", ":1.999")), (FIELD_SIGNATURE, Variant("g", "s"))]
    m = Message(raw_message(METHOD_CALL, fields, body=marshal("s", ["x"], endian), endian=endian))
    assert m.forwarded_parts(sender_field(endian)) is None
    assert header_fields(m.forwarded(sender_field(endian)))[FIELD_SENDER] == ("s", ":1.42")


def test_forwarded_with_empty_body():
    m = Message(build_message(SIGNAL, 5, path="/", interface="a.b", member="S"))
    out = m.forwarded(SENDER_FIELD_L)
    fwd = Message(out)
    assert fwd.sender == ":1.42" and fwd.body_len == 0 and fwd.body() == []
    assert len(out) % 8 == 0


# -- property: forwarding any message -------------------------------------------


_names = st.sampled_from(["a.b", "com.example.Foo", "org.x_y.Z9"])
_members = st.sampled_from(["M", "Frob", "_x9"])
_paths = st.sampled_from(["/", "/a", "/a/b/c_d"])
_bodies = st.sampled_from([
    ("", ()), ("s", ("x",)), ("yv", (1, Variant("s", "q"))), ("a{sv}", ({"k": Variant("u", 2)},)),
    ("(tb)ay", ((2**40, True), b"zz")), ("d", (1.5,)),
])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mtype=st.sampled_from([METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL]), endian=st.sampled_from("lB"),
       serial=st.integers(1, 2**32 - 1), flags=st.integers(0, 7), iface=_names, member=_members,
       path=_paths, dest=st.one_of(st.none(), st.sampled_from([":1.1", "com.example.Dest"])),
       forged_sender=st.booleans(), unknown=st.booleans(), body=_bodies,
       sender=st.sampled_from([":1.0", ":1.12345", ":2.7"]))
def test_forwarding_any_message(mtype, endian, serial, flags, iface, member, path, dest, forged_sender,
                                unknown, body, sender):
    fields = []
    if mtype in (METHOD_CALL, SIGNAL):
        fields += [(FIELD_PATH, Variant("o", path)), (FIELD_MEMBER, Variant("s", member))]
        fields.append((FIELD_INTERFACE, Variant("s", iface)))
    else:
        fields.append((FIELD_REPLY_SERIAL, Variant("u", serial)))
    if mtype == ERROR:
        fields.append((FIELD_ERROR_NAME, Variant("s", iface)))
    if dest is not None:
        fields.append((FIELD_DESTINATION, Variant("s", dest)))
    if forged_sender:
        fields.insert(1, (FIELD_SENDER, Variant("s", ":6.6")))
    if unknown:
        fields.insert(0, (99, Variant("as", ["x", "yz"])))
    sig, values = body
    if sig:
        fields.append((FIELD_SIGNATURE, Variant("g", sig)))
    raw_body = marshal(sig, values, endian) if sig else b""
    data = raw_message(mtype, fields, serial=serial, body=raw_body, endian=endian, flags=flags)
    assert message_length(data) == len(data)
    m = Message(data)
    out = m.forwarded(sender_field(endian, sender))
    assert message_length(out) == len(out)
    fwd = Message(out)
    for attr in ("type", "flags", "serial", "path", "interface", "member", "error_name",
                 "reply_serial", "destination", "signature", "endian"):
        assert getattr(fwd, attr) == getattr(m, attr), attr
    assert fwd.sender == sender
    assert fwd.body() == list(values)
    assert out[fwd.body_start:] == raw_body
    got = header_fields(out)
    assert 99 not in got
    assert got[FIELD_SENDER].value == sender


# -- framing ------------------------------------------------------------------------


@pytest.mark.parametrize("endian", "lB")
def test_message_length(endian):
    data = build_message(METHOD_CALL, 1, path="/a", member="M", signature="s", body=("hello",), endian=endian)
    for cut in range(16):
        assert message_length(data[:cut]) is None
    assert message_length(data[:16]) == len(data)
    assert message_length(data) == len(data)
    two = data + data
    assert message_length(two, len(data)) == len(data)


def test_message_length_pads_fields_to_8():
    data = build_message(METHOD_CALL, 1, path="/a", member="M")
    fields_len = struct.unpack_from("<I", data, 12)[0]
    assert fields_len % 8 != 0
    assert message_length(data) == 16 + fields_len + (-fields_len % 8) == len(data)


def test_message_length_rejects_bad_byte_order_and_version():
    data = bytearray(build_message(METHOD_CALL, 1, path="/a", member="M"))
    bad = bytearray(data)
    bad[0] = 0
    with pytest.raises(ProtocolError):
        message_length(bytes(bad))
    bad = bytearray(data)
    bad[3] = 2
    with pytest.raises(ProtocolError):
        message_length(bytes(bad))


@pytest.mark.parametrize("endian,fmt", [("l", "<"), ("B", ">")])
def test_message_length_limit_128_mib(endian, fmt):
    head = bytes((ord(endian), METHOD_CALL, 0, 1))
    ok = head + struct.pack(fmt + "III", MAX_MESSAGE_LENGTH - 16 - 8, 1, 8)
    assert message_length(ok) == MAX_MESSAGE_LENGTH
    too_big = head + struct.pack(fmt + "III", MAX_MESSAGE_LENGTH - 16 - 8 + 1, 1, 8)
    with pytest.raises(ProtocolError, match="128 MiB"):
        message_length(too_big)
    huge = head + struct.pack(fmt + "III", 0xFFFFFFFF, 1, 0xFFFFFFFF)
    with pytest.raises(ProtocolError):
        message_length(huge)


def test_string_field_encoding():
    assert string_field(FIELD_SENDER, ":1.5", "l") == b"\x07\x01s\x00\x04\0\0\0:1.5\0"
    assert string_field(FIELD_SENDER, ":1.5", "B") == b"\x07\x01s\x00\0\0\0\x04:1.5\0"
    assert string_field(FIELD_CONTAINER_INSTANCE, "/c", "l", "o") == b"\x0a\x01o\x00\x02\0\0\0/c\0"


def test_the_validated_names_cache_is_bounded_like_the_header_caches():
    # Each new connection's unique name and each instance's path is a new
    # key: the cache must stop growing at the header caches' size, where
    # bench/churn.py's instance churn levels off.
    from sandbus.wire import message as message_mod
    for i in range(message_mod._CACHE_SIZE * 2):
        Message(build_message(METHOD_CALL, 1, path=f"/i/{i}", member="M", destination=f":1.{i}"))
        assert len(message_mod._valid_cache) <= message_mod._CACHE_SIZE
