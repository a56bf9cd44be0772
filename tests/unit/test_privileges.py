"""io/privileges.py: whom the system bus becomes, and that it cannot come
back (the drop itself runs in a forked child, so the test process keeps root)."""

import os
import pwd

import pytest

from sandbus.io.privileges import PrivilegeError, daemon_user, drop_to


def test_no_user_or_already_it_changes_nothing():
    assert daemon_user(None) is None
    assert daemon_user("") is None
    me = pwd.getpwuid(os.getuid())
    assert daemon_user(me.pw_name) is None
    assert daemon_user(str(me.pw_uid)) is None


def test_not_root_stays_who_it_is(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert daemon_user("nobody") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, another user is to become")
def test_root_becomes_the_user():
    assert daemon_user("nobody").pw_name == "nobody"
    assert daemon_user("0") is None


def test_unknown_user_is_an_error():
    with pytest.raises(PrivilegeError, match='Could not get UID and GID for username "no-such-user-xyz"'):
        daemon_user("no-such-user-xyz")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping needs root")
def test_drop_is_for_good():
    nobody = daemon_user("nobody")
    assert nobody is not None and nobody.pw_uid != 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            drop_to(nobody)
            ids = (os.getresuid(), os.getresgid(), os.getgroups())
            try:
                os.setuid(0)
                back = "regained"
            except PermissionError:
                back = "refused"
            os.write(w, repr((ids, back)).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    ids, back = eval(data.decode())
    u, g = nobody.pw_uid, nobody.pw_gid
    assert ids == ((u, u, u), (g, g, g), [])
    assert back == "refused"
