"""The sans-I/O framer: SASL lines, then whole messages with their fds."""

import struct

import pytest

from sandbus.wire.framer import Framer, FramingError, MessageTooLarge
from sandbus.wire.message import METHOD_CALL, SIGNAL, ProtocolError, build_message


def call(serial, body=(), sig="", fds=0, endian="l"):
    data = build_message(METHOD_CALL, serial, path="/p", interface="a.b", member="M",
                         destination="x.y", signature=sig, body=body, unix_fds=fds)
    if endian == "B":
        data = to_big_endian(data)
    return data


def to_big_endian(data: bytes) -> bytes:
    """Rewrite a little-endian message with only string/path/u32 fields and
    a body of one string into big-endian, by re-building it by hand."""
    from sandbus.wire.message import Message
    m = Message(data)

    def pad(b, n):
        return b + b"\0" * (-len(b) % n)
    out = b""
    for code, sig, value in ((1, "o", m.path), (2, "s", m.interface), (3, "s", m.member),
                             (6, "s", m.destination), (8, "g", m.signature),
                             (9, "u", m.unix_fds or None)):
        if not value:
            continue
        out = pad(out, 8)
        out += bytes((code, 1, ord(sig), 0))
        if sig == "u":
            out += struct.pack(">I", value)
        elif sig == "g":
            out += bytes((len(value),)) + value.encode() + b"\0"
        else:
            out += struct.pack(">I", len(value)) + value.encode() + b"\0"
    fields = out
    body = b""
    if m.signature == "s":
        (text,) = m.body()
        body = struct.pack(">I", len(text.encode())) + text.encode() + b"\0"
    head = struct.pack(">BBBBIII", ord("B"), m.type, m.flags, 1, len(body), m.serial, len(fields))
    return pad(head + fields, 8) + body


def collect(framer, chunks):
    out = []
    for data, fds in chunks:
        out.extend(framer.frames(data, fds))
    return out


@pytest.mark.parametrize("endian", ["l", "B"])
def test_split_at_every_byte(endian):
    msgs = [call(i + 1, ("x" * (i * 37),), "s", endian=endian) for i in range(3)]
    stream = b"".join(msgs)
    for cut in range(1, len(stream)):
        f = Framer()
        got = collect(f, [(stream[:cut], ()), (stream[cut:], ())])
        assert [g[0] for g in got] == msgs, cut
        assert not f.pending


@pytest.mark.parametrize("endian", ["l", "B"])
def test_one_byte_at_a_time(endian):
    msgs = [call(i + 1, ("y" * i,), "s", endian=endian) for i in range(4)]
    stream = b"".join(msgs)
    f = Framer()
    got = collect(f, [(stream[i:i + 1], ()) for i in range(len(stream))])
    assert [bytes(g[0]) for g in got] == msgs


def test_several_messages_in_one_chunk_and_a_partial_tail():
    msgs = [call(i + 1) for i in range(5)]
    f = Framer()
    got = list(f.frames(b"".join(msgs) + msgs[0][:10]))
    assert [g[0] for g in got] == msgs
    assert all(g[1] == () for g in got)
    assert f.pending
    assert [g[0] for g in f.frames(msgs[0][10:])] == [msgs[0]]


def test_a_single_whole_message_is_handed_out_without_a_copy():
    m = call(1)
    (frame, fds), = Framer().frames(m)
    assert frame is m


def test_fds_go_with_the_message_that_claims_them():
    a, b, c = call(1), call(2, fds=2), call(3, fds=1)
    f = Framer()
    got = list(f.frames(a + b + c, [10, 11, 12]))
    assert got == [(a, ()), (b, [10, 11]), (c, [12])]
    assert f.fds == []


def test_fds_wait_for_their_message_to_complete():
    m = call(1, ("z" * 100,), "s", fds=1)
    f = Framer()
    assert list(f.frames(m[:20], [7])) == []
    assert f.fds == [7]
    assert list(f.frames(m[20:])) == [(m, [7])]


def test_oversized_message_is_an_error_after_the_earlier_ones():
    small = call(1)
    big = call(2, ("q" * 5000,), "s")
    f = Framer(max_message_size=1000)
    it = f.frames(small + big)
    assert next(it) == (small, ())
    with pytest.raises(MessageTooLarge, match="exceeds max_message_size"):
        next(it)


def test_length_field_beyond_the_protocol_limit():
    head = struct.pack("<BBBBIII", ord("l"), METHOD_CALL, 0, 1, 0xFFFFFFF0, 1, 0)
    with pytest.raises(ProtocolError, match="128 MiB"):
        list(Framer(max_message_size=1 << 40).frames(head))


@pytest.mark.parametrize("head,why", [
    (b"X" + b"\0" * 15, "byte-order"),
    (struct.pack("<BBBBIII", ord("l"), 1, 0, 2, 0, 1, 0), "version"),
])
def test_invalid_fixed_header(head, why):
    with pytest.raises(ProtocolError, match=why):
        list(Framer().frames(head))


@pytest.mark.parametrize("endian", ["l", "B"])
def test_large_message_is_read_into_its_own_buffer(endian):
    payload = "L" * 200_000
    m = call(1, (payload,), "s", fds=1, endian=endian)
    f = Framer()
    assert list(f.frames(m[:len(m) // 2], [5])) == []
    into = f.read_into()
    assert into is not None and len(into) == len(m) - len(m) // 2
    into[:1000] = m[len(m) // 2:len(m) // 2 + 1000]
    assert f.filled(1000) is None
    rest = f.read_into()
    rest[:] = m[len(m) // 2 + 1000:]
    frame, fds = f.filled(len(rest))
    assert bytes(frame) == m and fds == [5]
    assert f.read_into() is None and not f.pending


def test_large_message_fed_through_frames_too():
    m = call(1, ("L" * 100_000,), "s")
    after = call(2)
    f = Framer()
    stream = m + after
    got = collect(f, [(stream[i:i + 30_000], ()) for i in range(0, len(stream), 30_000)])
    assert [bytes(g[0]) for g in got] == [m, after]


def test_stopping_early_keeps_the_rest_buffered():
    msgs = [call(i + 1) for i in range(3)]
    f = Framer()
    for frame, _ in f.frames(msgs[0][:5]):
        pass
    for frame, _ in f.frames(msgs[0][5:] + msgs[1] + msgs[2]):
        assert frame == msgs[0]
        break
    assert [g[0] for g in f.frames()] == msgs[1:]


def test_server_sasl_lines_then_messages_with_fds_that_came_with_begin():
    hello = call(1, fds=1)
    f = Framer(sasl="server")
    assert list(f.lines(b"\0AUTH EXTERNAL 30\r\n")) == [b"AUTH EXTERNAL 30"]
    assert f.authenticating
    lines = list(f.lines(b"NEGOTIATE_UNIX_FD\r\nBEGIN\r\n" + hello, [9]))
    assert lines == [b"NEGOTIATE_UNIX_FD", b"BEGIN"]
    assert not f.authenticating
    assert list(f.frames()) == [(hello, [9])]


def test_server_sasl_split_at_every_byte():
    stream = b"\0AUTH EXTERNAL 30\r\nBEGIN\r\n" + call(1)
    for cut in range(1, len(stream)):
        f = Framer(sasl="server")
        lines = list(f.lines(stream[:cut]))
        if f.authenticating:
            lines += list(f.lines(stream[cut:]))
            frames = list(f.frames())
        else:
            frames = list(f.frames(stream[cut:]))
        assert lines == [b"AUTH EXTERNAL 30", b"BEGIN"], cut
        assert [g[0] for g in frames] == [call(1)], cut


def test_fds_during_authentication_without_begin_are_refused():
    f = Framer(sasl="server")
    it = f.lines(b"\0AUTH EXTERNAL 30\r\n", [4])
    assert next(it) == b"AUTH EXTERNAL 30"
    with pytest.raises(FramingError, match="unix fds"):
        next(it)
    assert f.close() == [4]


def test_sasl_needs_the_nul_byte_and_bounded_lines():
    with pytest.raises(FramingError, match="NUL"):
        list(Framer(sasl="server").lines(b"AUTH\r\n"))
    with pytest.raises(FramingError, match="too long"):
        list(Framer(sasl="server", max_line=10).lines(b"\0" + b"A" * 11))
    with pytest.raises(FramingError, match="too long"):
        list(Framer(sasl="server", max_line=10).lines(b"\0" + b"A" * 11 + b"\r\n"))


def test_client_role_reads_lines_until_begin():
    f = Framer(sasl="client")
    reply = call(1)
    assert list(f.lines(b"OK 1234\r\nAGREE_UNIX_FD\r\n")) == [b"OK 1234", b"AGREE_UNIX_FD"]
    # BEGIN is the client's own line: the server never sends one.
    f.begin()
    assert list(f.frames(reply)) == [(reply, ())]
    with pytest.raises(FramingError):
        list(f.lines(b"x\r\n"))


def test_close_hands_back_held_fds():
    f = Framer()
    list(f.frames(call(1, fds=2)[:20], [3, 4]))
    assert f.close() == [3, 4]
    assert f.fds == [] and not f.pending


def test_a_signal_in_big_endian_is_framed():
    from sandbus.wire.message import Message
    m = to_big_endian(build_message(SIGNAL, 7, path="/p", interface="a.b", member="S",
                                    signature="s", body=("hi",)))
    (frame, _), = Framer().frames(m)
    assert list(Message(frame).body()) == ["hi"]


def test_single_is_the_whole_message_case_only():
    m = call(1)
    f = Framer()
    assert f.single(m) is m
    assert f.single(m + call(2)) is None          # two messages: frames()
    assert f.single(m[:20]) is None               # a part: frames()
    list(f.frames(m[:20]))
    assert f.single(m[20:]) is None               # something is buffered
    f = Framer()
    list(f.frames(b"", [7]))
    assert f.single(m) is None                    # fds wait for a message
    with pytest.raises(MessageTooLarge):
        Framer(max_message_size=10).single(m)
    with pytest.raises(ProtocolError):
        Framer().single(b"X" * 16)
