"""The Spawn portal of `sandbus run` (launcher/portal.py) driven without a
bus: a recording client, a real Launcher object and, where a sibling is
started, a stand-in for bwrap that writes down what it was given."""

import json
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

from sandbus.launcher import portal as P
from sandbus.launcher.options import parse_run_args
from sandbus.launcher.run import Launcher
from sandbus.wire.message import METHOD_CALL, SIGNAL, Message, build_message

INSTANCE = "/org/freedesktop/DBus/Containers1/Instance/app"
APP = ":1.7"


class Recorder:
    """What the portal sends and asks the bus; every caller it asks about
    is in INSTANCE unless listed in ``outside``."""

    def __init__(self, outside=()):
        self.sent = []
        self.asked = []
        self.outside = set(outside)
        self.serial = 0

    def next_serial(self):
        self.serial += 1
        return self.serial

    def send(self, data, fds=()):
        self.sent.append(Message(data))

    def call(self, dest, path, iface, member, sig, body, fds=()):
        assert member == "GetConnectionInstance"
        self.asked.append(body[0])
        return ["/" if body[0] in self.outside else INSTANCE]

    def add_match(self, rule):
        pass


@pytest.fixture
def portal(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    la = Launcher(parse_run_args(["--app-id=org.example.App", "--", "true"]), "/nonexistent/bwrap",
                  "unix:path=/nonexistent")
    la.client = Recorder()
    la.path = INSTANCE
    p = P.SpawnPortal(la)
    yield p
    for sib in list(p.children.values()):
        p._kill(sib)


def sleeper():
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def owner_changed(sender, name):
    return Message(build_message(SIGNAL, 5, path="/org/freedesktop/DBus", interface="org.freedesktop.DBus",
                                 member="NameOwnerChanged", sender=sender, destination=":1.1",
                                 signature="sss", body=(name, name, "")))


def test_name_owner_changed_is_believed_only_from_the_bus(portal):
    proc = sleeper()
    try:
        sib = P.Sibling(proc.pid, APP, P.SANDBOX | P.WATCH_BUS)
        portal.children[proc.pid] = sib
        portal.watched.add(APP)
        # a peer's signal of that name, unicast to the launcher, ends nothing
        portal.dispatch(owner_changed(":1.9", APP))
        assert proc.poll() is None and APP in portal.watched
        # the bus's does; the launcher's loop then sees the pidfd readable
        portal.dispatch(owner_changed("org.freedesktop.DBus", APP))
        assert APP not in portal.watched
        assert select.select([sib.pidfd], [], [], 10)[0] == [sib.pidfd]
        portal.reap(sib)
        (exited,) = portal.client.sent
        assert exited.member == "SpawnExited" and exited.body() == [proc.pid, signal.SIGKILL]
    finally:
        if proc.pid in portal.children:
            portal._kill(portal.children.pop(proc.pid))


def test_the_callers_remembered_are_bounded(portal, monkeypatch):
    monkeypatch.setattr(P, "MAX_INSTANCES", 8)
    for i in range(50):
        portal._check_caller(f":1.{100 + i}")
    assert len(portal.instances) == 8
    # the newest are kept: asking again costs no call
    asked = len(portal.client.asked)
    portal._check_caller(":1.149")
    assert len(portal.client.asked) == asked
    # one forgotten is asked again, and still judged by the bus's answer
    portal._check_caller(":1.100")
    assert portal.client.asked[-1] == ":1.100"
    portal.client.outside.add(":1.5")
    with pytest.raises(P.PortalError) as e:
        portal._check_caller(":1.5")
    assert e.value.name == P.ERR_ACCESS


def fake_bwrap(tmp_path, record):
    """A bwrap that records its argv and environment, reports a child pid on
    --info-fd as bwrap does, then sleeps (a sandbox that runs)."""
    path = tmp_path / "bwrap"
    path.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys, time
        argv = sys.argv
        with open({str(record)!r}, "w") as f:
            json.dump({{"argv": argv, "env": dict(os.environ)}}, f)
        fd = int(argv[argv.index("--info-fd") + 1])
        os.write(fd, b'{{"child-pid": 0}}')
        os.close(fd)
        time.sleep(60)
        """))
    path.chmod(0o755)
    return str(path)


def spawn_call(argv, envs, flags=P.SANDBOX):
    return Message(build_message(METHOD_CALL, 3, path=P.PORTAL_PATH, interface=P.PORTAL_IFACE, member="Spawn",
                                 sender=APP, destination=":1.1", signature="ayaaya{uh}a{ss}ua{sv}",
                                 body=(b"/\0", [a.encode() + b"\0" for a in argv], {}, envs, flags, {})))


def reply_of(portal):
    (m,) = [m for m in portal.client.sent if m.reply_serial == 3]
    return m


def test_the_callers_environment_reaches_the_sibling_never_bwrap(portal, tmp_path, monkeypatch):
    # A library in the app's sandbox directory, named in Spawn's env:
    # bwrap runs on the host before it makes any namespace, so in its own
    # environment LD_PRELOAD would load the app's code outside every sandbox.
    shared = tmp_path / ".var" / "app" / "org.example.App" / "sandbox"
    shared.mkdir(parents=True)
    evil = str(shared / "evil.so")
    record = tmp_path / "record.json"
    portal.launcher.bwrap = fake_bwrap(tmp_path, record)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(shared))  # the app's own, inherited unless CLEAR_ENV
    envs = {"LD_PRELOAD": evil, "LD_AUDIT": evil, "GREETING": "hi"}
    portal.dispatch(spawn_call(["cmd"], envs))
    (pid,) = reply_of(portal).body()
    seen = json.loads(record.read_text())
    # bwrap's environment is empty (the interpreter's loader adds nothing
    # under these names)
    assert not {"LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "GREETING"} & set(seen["env"])
    # and the sibling gets them from bwrap's options, after --clearenv
    argv = seen["argv"]
    start = argv.index("--clearenv")
    given = {argv[i + 1]: argv[i + 2] for i in range(start, argv.index("--")) if argv[i] == "--setenv"}
    assert given["LD_PRELOAD"] == evil and given["LD_AUDIT"] == evil and given["GREETING"] == "hi"
    assert given["LD_LIBRARY_PATH"] == str(shared)
    assert argv[argv.index("--") + 1:] == ["cmd"]
    assert pid in portal.children
    # CLEAR_ENV: only the caller's and the sandbox's own
    portal.client.sent.clear()
    portal.dispatch(spawn_call(["cmd"], {"LD_PRELOAD": evil}, P.SANDBOX | P.CLEAR_ENV))
    reply_of(portal).body()
    seen = json.loads(record.read_text())
    assert "LD_PRELOAD" not in seen["env"]
    argv = seen["argv"]
    given = {argv[i + 1]: argv[i + 2] for i in range(argv.index("--clearenv"), argv.index("--"))
             if argv[i] == "--setenv"}
    assert given["LD_PRELOAD"] == evil and "LD_LIBRARY_PATH" not in given


def test_a_bwrap_that_cannot_be_followed_is_ended_and_the_caller_answered(portal, tmp_path, monkeypatch):
    portal.launcher.bwrap = fake_bwrap(tmp_path, tmp_path / "record.json")
    started = []

    def no_pidfd(pid):
        started.append(pid)
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    portal.dispatch(spawn_call(["cmd"], {}))
    err = reply_of(portal)
    assert err.error_name == P.ERR_FAILED and "cannot follow" in err.body()[0]
    (pid,) = started
    # killed and reaped: no bwrap runs on unfollowed, no zombie is left
    try:
        reaped = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        reaped = None
    if reaped is not None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert reaped is None, "bwrap was left running"
    assert portal.children == {}
