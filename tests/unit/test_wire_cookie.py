"""DBUS_COOKIE_SHA1 (server side), ANONYMOUS and <auth> in the SASL state
machine; the keyring on disk; the system-log handler."""

import binascii
import logging
import os
import socket
import stat

import pytest

from sandbus.io.keyring import Keyring
from sandbus.wire.cookie_sha1 import (
    EXPIRE_KEYS_TIMEOUT, NEW_KEY_TIMEOUT, CookieError, parse_keyring, response_hash,
)
from sandbus.wire.sasl import SUPPORTED_MECHANISMS, SaslServer

GUID = "0123456789abcdef0123456789abcdef"
UID = 1000
ALL = "REJECTED EXTERNAL DBUS_COOKIE_SHA1 ANONYMOUS\r\n".encode()


class FakeKeyring:
    def __init__(self, cookie="c0ffee" * 8, cid=42, error=None):
        self.cookie, self.cid, self.error = cookie, cid, error

    def best_cookie(self):
        if self.error:
            raise CookieError(self.error)
        return "org_freedesktop_general", self.cid, self.cookie


def users(name):
    return {"alice": UID, str(UID): UID, "bob": 1001, "1001": 1001}.get(name)


def server(**kw):
    kw.setdefault("mechanisms", SUPPORTED_MECHANISMS)
    kw.setdefault("cookie_keyring", FakeKeyring())
    kw.setdefault("bus_uid", UID)
    kw.setdefault("user_lookup", users)
    return SaslServer(GUID, kw.pop("peer_uid", None), **kw)


def hx(text: str) -> bytes:
    return binascii.hexlify(text.encode())


def challenge(s, user="alice"):
    nul = b"\0" if s.state == 0 else b""  # the first bytes carry the NUL
    reply = s.feed(nul + b"AUTH DBUS_COOKIE_SHA1 " + hx(user) + b"\r\n")
    assert reply.startswith(b"DATA ") and reply.endswith(b"\r\n")
    context, cid, server_challenge = binascii.unhexlify(reply[5:-2]).decode().split(" ")
    assert context == "org_freedesktop_general" and cid == "42"
    assert len(server_challenge) == 32 and int(server_challenge, 16) >= 0
    return server_challenge


def test_cookie_success_by_name_and_uid():
    for user in ("alice", str(UID)):
        s = server()
        sc = challenge(s, user)
        digest = response_hash(sc, "clientchal", "c0ffee" * 8)
        assert s.feed(b"DATA " + hx(f"clientchal {digest}") + b"\r\n") == f"OK {GUID}\r\n".encode()
        s.feed(b"BEGIN\r\n")
        assert s.done and s.uid == UID and s.mechanism == "DBUS_COOKIE_SHA1"


def test_cookie_on_done_hook_runs_at_begin():
    seen = []
    s = server(on_done=seen.append)
    sc = challenge(s)
    s.feed(b"DATA " + hx(f"x {response_hash(sc, 'x', 'c0ffee' * 8)}") + b"\r\nBEGIN\r\n")
    assert seen == [s]


@pytest.mark.parametrize("response", [
    "garbage", "", " deadbeef", "client ", "client " + "0" * 40,
    "client " + response_hash("wrong", "client", "c0ffee" * 8),
])
def test_cookie_bad_response_rejected_then_retry_works(response):
    s = server()
    challenge(s)
    assert s.feed(b"DATA " + hx(response) + b"\r\n") == ALL
    assert not s.failed
    sc = challenge(s)
    s.feed(b"DATA " + hx(f"c {response_hash(sc, 'c', 'c0ffee' * 8)}") + b"\r\n")
    assert s.feed(b"BEGIN\r\n") == b"" and s.done


def test_cookie_hash_over_other_cookie_rejected():
    # What a client with a stale or unknown cookie id computes.
    s = server()
    sc = challenge(s)
    assert s.feed(b"DATA " + hx(f"c {response_hash(sc, 'c', 'ab' * 24)}") + b"\r\n") == ALL


def test_cookie_bad_hex_is_an_error():
    s = server()
    assert s.feed(b"\0AUTH DBUS_COOKIE_SHA1 zz\r\n") == b'ERROR "Invalid hex encoding"\r\n'
    challenge(server())
    s = server()
    challenge(s)
    assert s.feed(b"DATA zz\r\n") == b'ERROR "Invalid hex encoding"\r\n'


@pytest.mark.parametrize("user", ["bob", "1001", "nosuchuser", ""])
def test_cookie_other_or_unknown_user_rejected(user):
    s = server()
    line = b"\0AUTH DBUS_COOKIE_SHA1" + (b" " + hx(user) if user else b"") + b"\r\n"
    assert s.feed(line) == ALL


def test_cookie_keyring_error_rejected():
    s = server(cookie_keyring=FakeKeyring(error="not private"))
    assert s.feed(b"\0AUTH DBUS_COOKIE_SHA1 " + hx("alice") + b"\r\n") == ALL


def test_auth_restricts_offered_mechanisms():
    s = server(mechanisms=("ANONYMOUS", "DBUS_COOKIE_SHA1"), peer_uid=UID)
    assert s.feed(b"\0AUTH\r\n") == b"REJECTED DBUS_COOKIE_SHA1 ANONYMOUS\r\n"
    assert s.feed(f"AUTH EXTERNAL {hx(str(UID)).decode()}\r\n".encode()) == \
        b"REJECTED DBUS_COOKIE_SHA1 ANONYMOUS\r\n"


def test_anonymous_not_allowed_fails_at_begin():
    s = server()
    assert s.feed(b"\0AUTH ANONYMOUS\r\n") == f"OK {GUID}\r\n".encode()
    s.feed(b"BEGIN\r\n")
    assert s.failed and not s.done


def test_anonymous_allowed_has_no_uid():
    s = server(allow_anonymous=True, peer_uid=UID)
    assert s.feed(b"\0AUTH ANONYMOUS 7472616365\r\nBEGIN\r\n") == f"OK {GUID}\r\n".encode()
    assert s.done and s.uid is None and s.anonymous


def test_no_fd_passing_where_not_allowed():
    s = server(allow_unix_fds=False)
    sc = challenge(s)
    s.feed(b"DATA " + hx(f"c {response_hash(sc, 'c', 'c0ffee' * 8)}") + b"\r\n")
    assert s.feed(b"NEGOTIATE_UNIX_FD\r\n").startswith(b"ERROR ")
    assert not s.unix_fds


def test_external_without_socket_credentials_rejected():
    s = server()
    assert s.feed(b"\0AUTH EXTERNAL " + hx("1000") + b"\r\n") == ALL


# -- keyring ------------------------------------------------------------------

def test_keyring_creates_private_dir_and_reuses_cookie(tmp_path):
    d = tmp_path / ".dbus-keyrings"
    k = Keyring(str(d), clock=lambda: 10_000)
    ctx, cid, cookie = k.best_cookie()
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / ctx).st_mode) == 0o600
    line = (d / ctx).read_text()
    assert line == f"{cid} 10000 {cookie}\n" and len(cookie) == 48
    assert not (d / f"{ctx}.lock").exists()
    assert k.best_cookie() == (ctx, cid, cookie)


def test_keyring_rotates_and_expires(tmp_path):
    d = tmp_path / "kr"
    now = [10_000]
    k = Keyring(str(d), clock=lambda: now[0])
    _, first, _ = k.best_cookie()
    now[0] += NEW_KEY_TIMEOUT + 1
    _, second, _ = k.best_cookie()
    assert second != first
    ids = [int(line.split()[0]) for line in (d / "org_freedesktop_general").read_text().splitlines()]
    assert ids == [first, second]
    now[0] += EXPIRE_KEYS_TIMEOUT + 1
    _, third, _ = k.best_cookie()
    ids = [int(line.split()[0]) for line in (d / "org_freedesktop_general").read_text().splitlines()]
    assert ids == [third]


def test_keyring_refuses_group_or_other_accessible_dir(tmp_path):
    d = tmp_path / "kr"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with pytest.raises(CookieError, match="not private"):
        Keyring(str(d)).best_cookie()


def test_keyring_takes_over_a_stale_lock(tmp_path):
    d = tmp_path / "kr"
    d.mkdir(mode=0o700)
    (d / "org_freedesktop_general.lock").write_text("")
    assert Keyring(str(d)).best_cookie()[0] == "org_freedesktop_general"
    assert not (d / "org_freedesktop_general.lock").exists()


def test_parse_keyring_skips_junk_and_time_travellers():
    text = ("1 1000 abcd\nbroken line\n2 x abcd\n3 1000 zz\n1 1000 ef01\n"
            "4 999999 abcd\n5 -50000 abcd\n6 1100 0102\n")
    assert parse_keyring(text, 1000) == [(1, 1000, "abcd"), (6, 1100, "0102")]


def test_invalid_context():
    with pytest.raises(CookieError):
        Keyring("/nonexistent", context="../etc")


# -- system log ---------------------------------------------------------------

def test_journal_handler_native_protocol(tmp_path):
    from sandbus.daemon import SystemLogHandler
    path = str(tmp_path / "journal")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    h = SystemLogHandler(journal=path, syslog=str(tmp_path / "none"))
    assert h.available and h.kind == "journal"
    h.setFormatter(logging.Formatter("%(message)s"))
    h.emit(logging.LogRecord("x", logging.WARNING, "f", 1, "hello", (), None))
    h.emit(logging.LogRecord("x", logging.ERROR, "f", 1, "two\nlines", (), None))
    one = rx.recv(4096)
    assert b"MESSAGE=hello\n" in one and b"PRIORITY=4\n" in one
    assert b"SYSLOG_IDENTIFIER=sandbus-daemon\n" in one
    two = rx.recv(4096)
    assert b"MESSAGE\n" + (9).to_bytes(8, "little") + b"two\nlines\n" in two
    h.close()
    rx.close()


def test_syslog_fallback_and_nothing(tmp_path):
    from sandbus.daemon import SystemLogHandler
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    h = SystemLogHandler(journal=str(tmp_path / "nj"), syslog=path)
    h.setFormatter(logging.Formatter("%(message)s"))
    h.emit(logging.LogRecord("x", logging.ERROR, "f", 1, "bad", (), None))
    assert rx.recv(4096) == f"<27>sandbus-daemon[{os.getpid()}]: bad".encode()
    h.close()
    rx.close()
    assert not SystemLogHandler(journal=str(tmp_path / "a"), syslog=str(tmp_path / "b")).available


def test_syslog_only_drops_stderr_when_a_system_log_exists(tmp_path, monkeypatch):
    import sys
    from sandbus import daemon
    from sandbus.cli import parse_daemon_args
    from sandbus.config.model import BusConfig
    path = str(tmp_path / "journal")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    monkeypatch.setattr(daemon, "JOURNAL_SOCKET", path)
    monkeypatch.setattr(daemon.SystemLogHandler.__init__, "__defaults__",
                        ("sandbus-daemon", path, str(tmp_path / "none")))
    for args, stderr_kept, system in ((["--syslog-only"], False, True), (["--syslog"], True, True),
                                      (["--nosyslog"], True, False), ([], True, False)):
        root = logging.Logger("t")
        root.addHandler(logging.StreamHandler(sys.stderr))
        opts, _ = parse_daemon_args(args)
        daemon.configure_logging(opts, BusConfig(), root)
        kinds = [type(h).__name__ for h in root.handlers]
        assert ("StreamHandler" in kinds) == stderr_kept, args
        assert ("SystemLogHandler" in kinds) == system, args
        for h in root.handlers:
            h.close()
    root = logging.Logger("t")
    daemon.configure_logging(parse_daemon_args([])[0], BusConfig(syslog=True), root)
    assert [type(h).__name__ for h in root.handlers] == ["SystemLogHandler"]
    root.handlers[0].close()
    rx.close()
