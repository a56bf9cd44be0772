"""Starting sandbus-dbus-proxy (and xdg-dbus-proxy) the way Flatpak does:
`--fd=W` of a pipe whose read end we keep, one byte `x` when ready, EOF
without it on failure, and exit once the read end is closed."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time

import pytest

SANDBUS_PROXY = [sys.executable, "-m", "sandbus.proxy"]


class ProxyProcess:
    def __init__(self, argv, env=None, timeout=15.0):
        r, w = os.pipe()
        self.sync_r = r
        try:
            self.proc = subprocess.Popen([*argv, f"--fd={w}"], pass_fds=(w,), env=env,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True, start_new_session=True)
        finally:
            os.close(w)
        self.started = time.monotonic()
        ready, _, _ = select.select([r], [], [], timeout)
        self.sync = os.read(r, 1) if ready else None  # b"x", b"" (EOF) or None (timed out)
        self.ready_after = time.monotonic() - self.started

    @property
    def ready(self) -> bool:
        return self.sync == b"x"

    def close_sync(self) -> None:
        """What happens when the app's sandbox is gone."""
        if self.sync_r is not None:
            os.close(self.sync_r)
            self.sync_r = None

    def wait(self, timeout=10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr_text(self) -> str:
        return self.proc.stderr.read()

    def stop(self) -> None:
        self.close_sync()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stderr:
            self.proc.stderr.close()


def sandbus_proxy(args, env=None, **kw) -> ProxyProcess:
    return ProxyProcess([*SANDBUS_PROXY, *args], env=env, **kw)


def write_flatpak_info(path, app_id="org.example.App", instance_id="1234567890"):
    path.write_text(
        "[Application]\n"
        f"name={app_id}\n"
        "runtime=runtime/org.example.Platform/x86_64/stable\n\n"
        "[Instance]\n"
        f"instance-id={instance_id}\n"
        "app-path=/var/lib/flatpak/app/x\n\n"
        "[Context]\n"
        "shared=network;ipc;\n\n"
        "[Session Bus Policy]\n"
        "org.freedesktop.Notifications=talk\n")
    return path


@contextlib.contextmanager
def dbus_daemon(tmp_path, config=None):
    """A plain dbus-daemon session bus (no Containers1); its address.
    With config (a file), that configuration instead of session.conf."""
    binary = shutil.which("dbus-daemon")
    if binary is None:
        pytest.skip("dbus-daemon is not installed")
    conf = [f"--config-file={config}"] if config else ["--session"]
    proc = subprocess.Popen([binary, *conf, "--nofork", f"--address=unix:path={tmp_path}/dbus-daemon-bus",
                             "--print-address=1"], stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
