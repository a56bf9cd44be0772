"""User-space instructions per sequential call, counted by valgrind's
callgrind: deterministic, so it shows a change of a few percent that the
timed benchmark's noise hides, and it is not disturbed by other load.

    python -m bench.instructions [--systems dbus-daemon,sandbus,sandbus-compiled] [--keep DIR]
                                 [--workload sequential|connect_hello]

``--workload connect_hello`` counts per connection instead (connect, SASL
EXTERNAL, Hello, disconnect).  ``--keep DIR`` leaves each long run's profile as DIR/callgrind.<system>, for
``callgrind_annotate --inclusive=yes DIR/callgrind.sandbus-compiled``.

Each bus runs under callgrind twice, for a short and a long sequential run
(the same echo service and raw client as ``python -m bench``); the
difference in instructions divided by the difference in calls is the cost
of one call (two messages routed) with start-up and shutdown cancelled out.
Kernel work (the syscalls themselves) is not counted: that is what the
``sys`` half of the CPU time in the timed benchmark is.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys

from . import systems, workloads
from .runner import EchoService

CALLS = (1000, 5000)
START_TIMEOUT = 120.0


class _UnderCallgrind:
    """Wraps a daemon-like system so that its daemon runs under callgrind."""

    def __init__(self, system):
        self.system = system
        system_command = system.command

        def command():
            out = os.path.join(system.tmpdir, "callgrind.out")
            return ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                    *_resolve_interpreter(system_command())]
        system.command = command

    def profiles(self):
        return glob.glob(os.path.join(self.system.tmpdir, "callgrind.out*"))

    def instructions(self):
        total = 0
        for path in self.profiles():
            with open(path) as f:
                for line in f:
                    if line.startswith("totals:"):
                        total += int(line.split()[1])
        return total


def _resolve_interpreter(argv):
    """valgrind must see the real interpreter, not a wrapper script (pyenv
    shims, console-script launchers) that would exec it out of its sight."""
    exe = argv[0]
    with open(exe, "rb") as f:
        head = f.read(2)
    if head != b"#!":
        return argv
    return [sys.executable, os.path.realpath(exe), *argv[1:]]


def count(system_cls, calls, keep=None, workload="sequential"):
    system = system_cls()
    wrapped = _UnderCallgrind(system)
    old_timeout = systems.START_TIMEOUT
    systems.START_TIMEOUT = START_TIMEOUT
    try:
        system.start()
    finally:
        systems.START_TIMEOUT = old_timeout
    echo = None
    try:
        echo = EchoService(system.service_address)
        conn = workloads.client(system)
        run = workloads.repeat(system, conn, workload)
        run(200)      # warm-up, in both runs
        run(calls)
        conn.close()
        echo.stop()
        echo = None
        for proc in system.procs:
            proc.terminate()
            proc.wait(timeout=60)
        if keep:
            os.makedirs(keep, exist_ok=True)
            for i, path in enumerate(sorted(wrapped.profiles())):
                shutil.copy(path, os.path.join(keep, "callgrind.%s%s" % (system.name, ".%d" % i if i else "")))
        return wrapped.instructions()
    finally:
        if echo:
            echo.stop()
        system.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default="dbus-daemon,sandbus,sandbus-compiled")
    ap.add_argument("--keep", metavar="DIR", help="keep the long runs' callgrind profiles in DIR")
    ap.add_argument("--workload", choices=("sequential", "connect_hello"), default="sequential")
    args = ap.parse_args(argv)
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    low, high = CALLS
    rows = []
    for name in args.systems.split(","):
        cls = systems.BY_NAME[name]
        if not hasattr(cls, "command"):
            print("%-18s skipped: not a daemon with dbus-daemon's command line" % name)
            continue
        try:
            a = count(cls, low, workload=args.workload)
            b = count(cls, high, args.keep, args.workload)
        except systems.Unavailable as e:
            print("%-18s skipped: %s" % (name, e))
            continue
        per_call = (b - a) / (high - low)
        rows.append((name, per_call))
        print("%-18s %9.0f instructions per %s" % (
            name, per_call, "connection" if args.workload == "connect_hello" else "call"), flush=True)
    base = dict(rows).get(systems.BASELINE)
    if base:
        print()
        for name, per_call in rows:
            print("%-18s x%.2f dbus-daemon" % (name, per_call / base))


if __name__ == "__main__":
    main()
