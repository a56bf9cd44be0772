"""dbus's own installed tests (Debian package ``dbus-tests``), run one case
per process against the stock dbus-daemon and against sandbus.

Shared by the pytest module next to this file (one pytest case per GTest
case, so ``pytest -n`` runs them in parallel) and its conftest (the
per-binary table).  Usable without pytest too::

    python3 tests/installed/dbus_installed.py      # list the cases
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TEST_EXEC = Path(os.environ.get("SANDBUS_DBUS_TESTS_EXEC", "/usr/lib/dbus-1.0/installed-tests/dbus"))
TEST_DATA = TEST_EXEC / "data"
SRC = Path(__file__).resolve().parents[2] / "src"

# One case gets this long.  dbus-daemon runs each of them in well under a
# second; the binaries' own watchdog would wait 60 s, and a case that hangs
# is a failure to fix, not to wait for.
CASE_TIMEOUT = float(os.environ.get("SANDBUS_DBUS_TESTS_TIMEOUT", "20"))

# Binaries that never start a bus (they test libdbus in-process or over a
# private DBusServer): running them "against" a daemon compares nothing.
# The list is checked, not trusted: the reference run goes through a
# wrapper that records every daemon start, and a case of a binary listed
# here that starts one fails (see run_case).
NO_BUS = frozenset({
    "test-assertions", "test-atomic", "test-corrupt", "test-desktop-file",
    "test-fdpass", "test-hash", "test-loopback", "test-marshal", "test-message",
    "test-misc-internals", "test-printf", "test-refs", "test-relay",
    "test-server-oom", "test-service", "test-shell", "test-sleep-forever",
    "test-syntax", "test-sysdeps", "test-syslog", "test-userdb", "test-variant",
    # needs AppArmor in the kernel; skips itself everywhere else
    "test-apparmor-activation",
    # helpers started by other tests, not tests
    "test-apparmor-activation.sh",
})

# Cases dbus-daemon passes and sandbus deliberately does not, each with the
# reason.  A listed case that starts passing on sandbus fails, so the list
# stays short and true.
EXCEPTIONS: dict = {
    # Debian builds dbus 1.14 without Containers1; test-containers then
    # checks that the interface is absent, which a bus that has it cannot be.
    "test-containers:/containers/get-supported-arguments":
        "asserts the Containers1 SupportedArguments property is absent (Debian's dbus has no Containers1)",
    "test-containers:/containers/invalid-metadata-getters":
        "asserts that Containers1 calls about an unconfined connection answer UnknownInterface "
        "(Debian's dbus has no Containers1); sandbus answers NotContainer",
}

# Cases dbus-daemon passes and sandbus does not yet: differences to fix,
# not choices, each with what is missing.  They run like the rest (with a
# short timeout, since both hang on sandbus) and are reported in the table;
# one that starts passing fails, so that it is taken off this list.
KNOWN_GAPS: dict = {}
GAP_TIMEOUT = 5.0

# Scripts: one process, several TAP results; run whole.
SCRIPTS = ("test-dbus-daemon-fork.sh",)


@dataclass
class Outcome:
    status: str  # "passed" | "failed" | "skipped"
    detail: str
    output: str
    started_bus: bool


def available() -> bool:
    return (TEST_EXEC / "test-dbus-daemon").is_file()


def list_cases() -> list:
    """(binary, case) for every case of every binary that starts a bus;
    case is None for a script run whole."""
    cases = []
    if not available():
        return cases
    for entry in sorted(TEST_EXEC.iterdir()):
        name = entry.name
        if not name.startswith("test-") or not entry.is_file() or not os.access(entry, os.X_OK):
            continue
        if name in NO_BUS:
            continue
        if name in SCRIPTS:
            cases.append((name, None))
            continue
        if name.endswith(".sh"):
            continue
        try:
            out = subprocess.run([str(entry), "-l"], capture_output=True, text=True,
                                 timeout=10, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.SubprocessError):
            cases.append((name, "<cannot list>"))
            continue
        cases.extend((name, line.strip()) for line in out.splitlines() if line.startswith("/"))
    return cases


_workdir: Optional[Path] = None


def _shared_dir() -> Path:
    """A directory every uid can read: test-uid-permissions starts the daemon
    as nobody and as messagebus, so the daemon wrappers must be reachable
    for them (pytest's tmp_path is private to root)."""
    global _workdir
    if _workdir is None:
        _workdir = Path(tempfile.mkdtemp(prefix="sandbus-dbus-tests-"))
        _workdir.chmod(0o755)
        atexit.register(shutil.rmtree, _workdir, True)
    return _workdir


def _python_for_all_users() -> str:
    # The test's own interpreter may live under a private home (pyenv in
    # /root); the daemon started as another uid needs one it can execute.
    for candidate in (sys.executable, "/usr/bin/python3"):
        st = None
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if _world_reachable(Path(candidate)) and st.st_mode & 0o001:
            return candidate
    return sys.executable


def _world_reachable(path: Path) -> bool:
    path = path.resolve()
    for parent in path.parents:
        try:
            if not os.stat(parent).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def daemon_wrapper(daemon: str) -> Path:
    """An executable that records its start (in $SANDBUS_DBUS_TESTS_MARK) and
    then runs the daemon.  The binaries take $DBUS_TEST_DAEMON as one path."""
    d = _shared_dir()
    path = d / f"{daemon}.sh"
    if path.exists():
        return path
    if daemon == "dbus-daemon":
        run = f'exec {shutil.which("dbus-daemon") or "dbus-daemon"} "$@"'
    else:
        run = (f'PYTHONPATH={SRC}${{PYTHONPATH:+:$PYTHONPATH}} '
               f'exec {_python_for_all_users()} -c "import sys; from sandbus.cli import daemon_main; '
               f'sys.exit(daemon_main())" "$@"')
    tmp = d / f".{daemon}.sh.{os.getpid()}"
    tmp.write_text('#!/bin/sh\n'
                   '[ -n "$SANDBUS_DBUS_TESTS_MARK" ] && echo "$$" >> "$SANDBUS_DBUS_TESTS_MARK" 2>/dev/null\n'
                   f'{run}\n')
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path


_TAP = re.compile(r"^(not ok|ok)\b[^#]*(#\s*(SKIP|TODO)\b(.*))?", re.IGNORECASE)


def parse_tap(output: str, returncode: int) -> tuple:
    results = []
    plan_skip = None
    for line in output.splitlines():
        m = _TAP.match(line)
        if m:
            ok = m.group(1).lower() == "ok"
            directive = (m.group(3) or "").upper()
            results.append((ok, directive, (m.group(4) or "").strip(), line))
        elif re.match(r"^1\.\.0\b", line):
            plan_skip = line
    failed = [r for r in results if not r[0] and r[1] != "TODO"]
    if returncode != 0:
        last = failed[0][3] if failed else _last_lines(output)
        return "failed", f"exit status {returncode}: {last}"
    if failed:
        return "failed", failed[0][3]
    if not results:
        if plan_skip:
            return "skipped", plan_skip
        return "failed", "no TAP result: " + _last_lines(output)
    if all(r[1] == "SKIP" for r in results):
        return "skipped", results[0][2] or results[0][3]
    return "passed", ""


def _last_lines(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def run_case(binary: str, case: Optional[str], daemon: str, timeout: Optional[float] = None) -> Outcome:
    """Run one case with $DBUS_TEST_DAEMON = daemon ("dbus-daemon" or "sandbus"),
    set up as the .test files under /usr/share/installed-tests/dbus/ do."""
    # TMPDIR for the test and its daemon, which may run as another uid
    tmpdir = Path(tempfile.mkdtemp(prefix="case-", dir=_shared_dir()))
    tmpdir.chmod(0o1777)
    runtime = tmpdir / "runtime"
    runtime.mkdir(mode=0o700)
    try:
        return _run(binary, case, daemon, tmpdir, runtime, timeout or CASE_TIMEOUT)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _run(binary, case, daemon, tmpdir: Path, runtime: Path, timeout: float) -> Outcome:
    mark = _shared_dir() / f"mark.{os.getpid()}.{abs(hash((binary, case, daemon, str(tmpdir))))}"
    mark.unlink(missing_ok=True)
    # the daemon may run as another uid: it must be able to leave its mark
    mark.touch()
    mark.chmod(0o666)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DBUS_") and k not in ("SANDBUS_TEST_DAEMON",)}
    env.update(
        DBUS_TEST_EXEC=str(TEST_EXEC),
        DBUS_TEST_DATA=str(TEST_DATA),
        DBUS_TEST_DAEMON=str(daemon_wrapper(daemon)),
        SANDBUS_DBUS_TESTS_MARK=str(mark),
        TMPDIR=str(tmpdir),
        # the binaries' own watchdog: far beyond our timeout, so ours decides
        DBUS_TEST_TIMEOUT="1",
    )
    env["XDG_RUNTIME_DIR"] = str(runtime)
    argv = [str(TEST_EXEC / binary), "--tap"]
    if case is not None:
        argv += ["-p", case]
    # Output to a file, not a pipe: a daemon left behind by a test that
    # aborted would hold a pipe open, and we would wait for it.
    log = tmpdir / "output"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(tmpdir),
                                start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc.pid)
        proc.wait()
    text = log.read_bytes().decode(errors="replace")
    if timed_out:
        status, detail = "failed", f"timed out after {timeout:g} s: {_last_lines(text)}"
    else:
        status, detail = parse_tap(text, proc.returncode)
    try:
        started = mark.stat().st_size > 0
    finally:
        mark.unlink(missing_ok=True)
    return Outcome(status, detail, text, started)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    for b, c in list_cases():
        print(b, c or "(whole)")
