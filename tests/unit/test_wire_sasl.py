"""The server side of the SASL handshake, byte by byte."""

import binascii

import pytest

from sandbus.wire.message import METHOD_CALL, build_message
from sandbus.wire.sasl import MAX_LINE, MAX_REJECTIONS, SaslServer

GUID = "0123456789abcdef0123456789abcdef"
UID = 1000


def hexuid(uid) -> str:
    return binascii.hexlify(str(uid).encode()).decode()


def server(**kw) -> SaslServer:
    return SaslServer(GUID, kw.pop("peer_uid", UID), **kw)


def ok_line() -> bytes:
    return f"OK {GUID}\r\n".encode()


def test_external_with_initial_response():
    s = server()
    assert s.feed(b"\0") == b""
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()
    assert not s.done
    assert s.feed(b"BEGIN\r\n") == b""
    assert s.done and not s.failed
    assert s.uid == UID and not s.anonymous and not s.unix_fds
    assert s.leftover == b""


def test_external_in_one_write_with_nul():
    s = server()
    out = s.feed(b"\0AUTH EXTERNAL " + hexuid(UID).encode() + b"\r\nBEGIN\r\n")
    assert out == ok_line()
    assert s.done and s.uid == UID


def test_external_without_initial_response_then_data():
    s = server()
    s.feed(b"\0")
    assert s.feed(b"AUTH EXTERNAL\r\n") == b"DATA\r\n"
    assert s.feed(f"DATA {hexuid(UID)}\r\n".encode()) == ok_line()
    s.feed(b"BEGIN\r\n")
    assert s.done and s.uid == UID


def test_external_with_empty_data_uses_the_socket_credentials():
    # sd-bus and GDBus send "DATA" with no argument: authenticate as the peer's uid.
    s = server()
    s.feed(b"\0AUTH EXTERNAL\r\n")
    assert s.feed(b"DATA\r\n") == ok_line()
    assert s.uid == UID


def test_external_with_empty_initial_response():
    s = server()
    assert s.feed(b"\0AUTH EXTERNAL \r\n") == ok_line()


def test_wrong_uid_rejected():
    s = server()
    assert s.feed(f"\0AUTH EXTERNAL {hexuid(UID + 1)}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"
    assert not s.done and not s.failed
    # the client may try again
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()


def test_wrong_uid_in_data_rejected():
    s = server()
    s.feed(b"\0AUTH EXTERNAL\r\n")
    assert s.feed(f"DATA {hexuid(0)}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"


@pytest.mark.parametrize("identity", ["zz", "3", "31303030ff"])
def test_identity_that_is_not_hex_ascii_is_an_error(identity):
    s = server()
    assert s.feed(f"\0AUTH EXTERNAL {identity}\r\n".encode()).startswith(b"ERROR")
    assert s.uid is None and not s.failed
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()


@pytest.mark.parametrize("identity", ["2d31", hexuid("1000x"), hexuid(" 1000")])
def test_malformed_identity_rejected(identity):
    s = server()
    assert s.feed(f"\0AUTH EXTERNAL {identity}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"
    assert s.uid is None


def test_unknown_peer_uid_rejects_external():
    s = server(peer_uid=None)
    assert s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"


def test_uid_not_allowed_rejected():
    s = server(uid_allowed=lambda uid: uid == 0)
    assert s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"


@pytest.mark.parametrize("mech", ["DBUS_COOKIE_SHA1", "ANONYMOUS", "KERBEROS_V4", ""])
def test_unsupported_mechanism_rejected_with_list(mech):
    s = server()
    assert s.feed(f"\0AUTH {mech}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"


def test_bare_auth_lists_mechanisms():
    s = server()
    assert s.feed(b"\0AUTH\r\n") == b"REJECTED EXTERNAL\r\n"


def test_anonymous_when_allowed():
    s = server(allow_anonymous=True)
    assert s.feed(b"\0AUTH FOO\r\n") == b"REJECTED EXTERNAL ANONYMOUS\r\n"
    assert s.feed(b"AUTH ANONYMOUS 7472616365\r\n") == ok_line()
    s.feed(b"BEGIN\r\n")
    assert s.done and s.anonymous and s.uid is None


def test_missing_nul_byte_fails():
    s = server()
    assert s.feed(b"AUTH EXTERNAL 31303030\r\n") == b""
    assert s.failed and "NUL" in s.failure
    assert s.feed(b"BEGIN\r\n") == b""
    assert not s.done


def test_garbage_command_gets_error():
    s = server()
    assert s.feed(b"\0HELLO THERE\r\n").startswith(b"ERROR")
    assert not s.failed
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()


def test_lowercase_command_is_unknown():
    s = server()
    assert s.feed(b"\0auth EXTERNAL 31303030\r\n").startswith(b"ERROR")


def test_non_ascii_line_is_an_error():
    s = server()
    assert s.feed(b"\0AUTH EXTERNAL \xff\xfe\r\n").startswith(b"ERROR")
    assert not s.failed and s.uid is None


def test_line_split_across_writes():
    s = server()
    line = f"\0AUTH EXTERNAL {hexuid(UID)}\r\nBEGIN\r\n".encode()
    out = b"".join(s.feed(line[i:i + 1]) for i in range(len(line)))
    assert out == ok_line()
    assert s.done


def test_too_long_line_without_terminator_fails():
    s = server()
    s.feed(b"\0")
    s.feed(b"A" * (MAX_LINE + 1))
    assert s.failed and "too long" in s.failure


def test_too_long_line_with_terminator_fails():
    s = server()
    assert s.feed(b"\0AUTH EXTERNAL " + b"3" * (MAX_LINE + 10) + b"\r\n") == b""
    assert s.failed


def test_long_but_acceptable_line():
    s = server()
    out = s.feed(b"\0AUTH EXTERNAL " + b"33" * 100 + b"\r\n")
    assert out == b"REJECTED EXTERNAL\r\n"
    assert not s.failed


def test_negotiate_unix_fd_before_ok_is_an_error():
    s = server()
    assert s.feed(b"\0NEGOTIATE_UNIX_FD\r\n").startswith(b"ERROR")
    assert not s.unix_fds and not s.failed
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()
    assert not s.unix_fds


def test_negotiate_unix_fd_after_ok():
    s = server()
    s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode())
    assert s.feed(b"NEGOTIATE_UNIX_FD\r\n") == b"AGREE_UNIX_FD\r\n"
    s.feed(b"BEGIN\r\n")
    assert s.done and s.unix_fds


def test_negotiate_unix_fd_refused_on_transport_without_fds():
    s = server(allow_unix_fds=False)
    s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode())
    assert s.feed(b"NEGOTIATE_UNIX_FD\r\n").startswith(b"ERROR")
    s.feed(b"BEGIN\r\n")
    assert s.done and not s.unix_fds


def test_pipelined_handshake_in_one_write():
    # What sd-bus and GDBus do: everything up to Hello in one write.
    hello = build_message(METHOD_CALL, 1, path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                          member="Hello", destination="org.freedesktop.DBus")
    s = server()
    out = s.feed(b"\0AUTH EXTERNAL " + hexuid(UID).encode() + b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n" + hello)
    assert out == ok_line() + b"AGREE_UNIX_FD\r\n"
    assert s.done and s.unix_fds
    assert s.leftover == hello


def test_begin_followed_by_message_bytes_that_contain_crlf():
    # The leftover is raw message data: never parsed as SASL lines.
    payload = b"l\x01\x00\x01\r\n\r\nBEGIN\r\nAUTH\r\n"
    s = server()
    s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode())
    assert s.feed(b"BEGIN\r\n" + payload) == b""
    assert s.done and s.leftover == payload
    assert s.feed(b"more") == b""


def test_begin_before_ok_fails():
    s = server()
    s.feed(b"\0")
    assert s.feed(b"BEGIN\r\n") == b""
    assert s.failed and not s.done


def test_data_when_not_expected_is_an_error():
    s = server()
    assert s.feed(b"\0DATA 31\r\n").startswith(b"ERROR")
    assert not s.failed


def test_auth_after_ok_is_an_error():
    s = server()
    s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode())
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()).startswith(b"ERROR")
    s.feed(b"BEGIN\r\n")
    assert s.done


def test_cancel_during_data_exchange():
    s = server()
    s.feed(b"\0AUTH EXTERNAL\r\n")
    assert s.feed(b"CANCEL\r\n") == b"REJECTED EXTERNAL\r\n"
    assert s.feed(b"DATA 31303030\r\n").startswith(b"ERROR")  # back to waiting for AUTH
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()


def test_cancel_after_ok_starts_over():
    s = server()
    s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\n".encode())
    assert s.feed(b"CANCEL\r\n") == b"REJECTED EXTERNAL\r\n"
    assert s.uid is None
    s.feed(b"BEGIN\r\n")
    assert s.failed


def test_error_from_client_during_data_rejects():
    s = server()
    s.feed(b"\0AUTH EXTERNAL\r\n")
    assert s.feed(b'ERROR "cannot"\r\n') == b"REJECTED EXTERNAL\r\n"


def test_too_many_rejections_fail():
    s = server()
    s.feed(b"\0")
    bad = f"AUTH EXTERNAL {hexuid(UID + 1)}\r\n".encode()
    for _ in range(MAX_REJECTIONS - 1):
        assert s.feed(bad) == b"REJECTED EXTERNAL\r\n"
        assert not s.failed
    # dbus-daemon still says REJECTED for the MAX_REJECTIONS-th failure, then hangs up
    assert s.feed(bad) == b"REJECTED EXTERNAL\r\n"
    assert s.failed and "too many" in s.failure
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == b""


def test_too_many_rejections_in_one_write():
    s = server()
    out = s.feed(b"\0" + b"AUTH FOO\r\n" * (MAX_REJECTIONS + 5))
    assert out == b"REJECTED EXTERNAL\r\n" * MAX_REJECTIONS
    assert s.failed


def test_dbus_daemon_allows_five_failures():
    assert MAX_REJECTIONS == 6


def test_nothing_happens_after_done():
    s = server()
    s.feed(f"\0AUTH EXTERNAL {hexuid(UID)}\r\nBEGIN\r\n".encode())
    assert s.feed(b"AUTH EXTERNAL\r\n") == b""
    assert s.leftover == b""


def test_uid_zero():
    s = server(peer_uid=0)
    assert s.feed(f"\0AUTH EXTERNAL {hexuid(0)}\r\n".encode()) == ok_line()
    assert s.uid == 0


# -- no input raises (issue 11, hole 8) -------------------------------------------------


@pytest.mark.parametrize("digits", [5000, 4301, 20, 11])
def test_huge_numeric_identity_is_rejected_not_raised(digits):
    s = server()
    identity = binascii.hexlify(b"9" * digits).decode()
    assert s.feed(f"\0AUTH EXTERNAL {identity}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"
    assert not s.failed and s.uid is None
    s.feed(b"AUTH EXTERNAL\r\n")
    assert s.feed(f"DATA {identity}\r\n".encode()) == b"REJECTED EXTERNAL\r\n"
    assert s.feed(f"AUTH EXTERNAL {hexuid(UID)}\r\n".encode()) == ok_line()


def test_leading_zeros_still_name_the_uid():
    s = server()
    assert s.feed(f"\0AUTH EXTERNAL {hexuid('0' * 30 + str(UID))}\r\n".encode()) == ok_line()


class _Keyring:
    def best_cookie(self):
        return ("org_freedesktop_general", 7, "ab" * 24)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_WORDS = st.sampled_from(["AUTH", "DATA", "BEGIN", "CANCEL", "ERROR", "NEGOTIATE_UNIX_FD", "OK",
                          "REJECTED", "AGREE_UNIX_FD", "EXTERNAL", "ANONYMOUS", "DBUS_COOKIE_SHA1",
                          "BOGUS", "", " "])
_ARGS = st.one_of(
    st.text(max_size=30),
    st.binary(max_size=30).map(lambda b: b.hex()),
    st.text(alphabet="0123456789", min_size=1, max_size=6000).map(lambda d: d.encode().hex()),
    st.text(alphabet="0123456789abcdefABCDEFxyz ", max_size=40),
)
_LINES = st.one_of(
    st.tuples(_WORDS, _WORDS, _ARGS).map(lambda t: " ".join(t).encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
)
_REPLIES = (b"OK ", b"REJECTED", b"ERROR", b"DATA", b"AGREE_UNIX_FD")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(_LINES, max_size=12), nul=st.booleans(), anonymous=st.booleans(),
       split=st.integers(1, 7))
def test_random_lines_never_raise(lines, nul, anonymous, split):
    s = SaslServer(GUID, UID, allow_anonymous=anonymous,
                   mechanisms=("EXTERNAL", "DBUS_COOKIE_SHA1", "ANONYMOUS"),
                   cookie_keyring=_Keyring(), bus_uid=UID,
                   user_lookup=lambda name: UID if name == str(UID) else None)
    stream = (b"\0" if nul else b"") + b"".join(line.replace(b"\r\n", b"") + b"\r\n" for line in lines)
    out = b""
    for i in range(0, len(stream), split):  # in pieces, as a socket delivers them
        out += s.feed(stream[i:i + split])
    for reply in out.split(b"\r\n")[:-1]:
        assert reply.startswith(_REPLIES), reply
    assert s.done or s.failed or out.endswith(b"\r\n") or out == b""
