"""`sandbus run` forwards signals to the app from before it can run
(launcher/run.py Launcher._release_and_wait): a Ctrl-C that comes while the
launcher is still tidying up after letting bwrap exec the command must
reach the app, not end the launcher."""

import os
import signal

from sandbus.launcher import run as run_mod
from sandbus.launcher.run import FORWARDED, Launcher


def test_signals_are_forwarded_before_the_app_is_released(monkeypatch):
    launcher = Launcher.__new__(Launcher)
    launcher.tmpdir = None
    seen = {}
    real_write = os.write

    def write(fd, data):
        if fd == block_w:
            seen["at release"] = {s: signal.getsignal(s) for s in FORWARDED}
        return real_write(fd, data)

    def wait_exit():
        seen["while waiting"] = signal.getsignal(signal.SIGINT)
        return 42

    block_r, block_w = os.pipe()
    launcher.fds = [block_w]
    before = {s: signal.getsignal(s) for s in FORWARDED}
    monkeypatch.setattr(run_mod.os, "write", write)
    monkeypatch.setattr(run_mod, "SpawnPortal", lambda launcher: None)
    monkeypatch.setattr(launcher, "wait_block_read", lambda fd, exited: None, raising=False)
    monkeypatch.setattr(launcher, "_wait_exit", wait_exit, raising=False)
    try:
        assert launcher._release_and_wait(block_w) == 42
        assert os.read(block_r, 1) == b"1"
        assert launcher.fds == []  # the block fd is closed once bwrap has read it
    finally:
        os.close(block_r)
    assert all(h == launcher._forward for h in seen["at release"].values()), seen["at release"]
    assert seen["while waiting"] == launcher._forward
    # and the launcher's own handlers are back afterwards
    assert {s: signal.getsignal(s) for s in FORWARDED} == before
