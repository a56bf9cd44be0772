"""Syscalls the bus makes per sequential call, counted by ``strace -c -f``.

    python -m bench.syscalls [--systems dbus-daemon,dbus-broker,sandbus,sandbus-compiled] [--calls N]
                             [--workload sequential|connect_hello]

Each bus is started as ``python -m bench`` starts it (bench/systems.py), with
the same echo service and raw client; after a warm-up, strace attaches to
the measured processes (``broker_pids``), N calls are made one at a time,
and strace is detached.  A call is two messages through the bus (the call
and its reply), so the figure is what routing both costs in kernel entries.
A bus at rest blocks in epoll_wait, so the idle time around the calls adds
next to nothing.  Prints the total per call and the syscalls behind it.
``--workload connect_hello``: per connection instead (connect, SASL
EXTERNAL, Hello, disconnect, as the benchmark's workload of that name).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

from . import systems, workloads
from .runner import EchoService

DEFAULT_SYSTEMS = "dbus-daemon,dbus-broker,sandbus,sandbus-compiled"
ATTACH_WAIT = 1.0


def parse_summary(text):
    """{syscall: calls} from the table ``strace -c`` writes."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) < 5 or not parts[0].replace(".", "", 1).isdigit():
            continue
        name = parts[-1]
        if name == "total":
            continue
        try:
            counts[name] = int(parts[3])
        except ValueError:
            continue
    return counts


def measure(system_cls, calls, workload="sequential"):
    system = system_cls()
    system.start()
    echo = None
    tracer = None
    try:
        echo = EchoService(system.service_address)
        conn = workloads.client(system)
        run = workloads.repeat(system, conn, workload)
        run(500)  # warm-up: caches, allocator
        out = system.path("strace.out")
        argv = ["strace", "-c", "-f", "-o", out]
        for pid in system.broker_pids:
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        time.sleep(ATTACH_WAIT)
        run(calls)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        tracer = None
        conn.close()
        with open(out) as f:
            return parse_summary(f.read())
    finally:
        if tracer is not None:
            tracer.kill()
            tracer.wait()
        if echo:
            echo.stop()
        system.stop()


def table(rows, calls):
    lines = ["| bus | syscalls/call | of which |", "|---|---|---|"]
    for name, counts in rows:
        total = sum(counts.values()) / calls
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        detail = ", ".join("%s %.2f" % (k, v / calls) for k, v in top if v / calls >= 0.05)
        lines.append("| %s | %.1f | %s |" % (name, total, detail))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--workload", choices=("sequential", "connect_hello"), default="sequential")
    args = ap.parse_args(argv)
    if not shutil.which("strace"):
        sys.exit("strace is not installed (apt-get install strace)")
    rows = []
    for name in args.systems.split(","):
        try:
            counts = measure(systems.BY_NAME[name], args.calls, args.workload)
        except systems.Unavailable as e:
            print("%s skipped: %s" % (name, e), file=sys.stderr)
            continue
        rows.append((name, counts))
        print("%-18s %.1f syscalls per %s" % (name, sum(counts.values()) / args.calls,
                                              "connection" if args.workload == "connect_hello" else "call"),
              file=sys.stderr, flush=True)
    print(table(rows, args.calls))


if __name__ == "__main__":
    main()
