"""Start-up cost of `sandbus run -- true` next to bwrap alone running the
same default sandbox (launcher/sandbox.py) around `true`.

    python -m bench.run_startup [--runs N]

`sandbus run` pays for the Python interpreter, a bus connection, AddServer
and the wait for InstanceRemoved on top of bwrap; the figures say how much.
The imports of sandbus-dbus-proxy are timed too: Flatpak waits for its `x`.
Beside the wall time, the CPU time (user + sys) of the command and of every
process it waited for (bwrap's), from getrusage(RUSAGE_CHILDREN): the wall
time includes waits on the bus, the CPU time is what start-up itself costs
on a busy machine.  A sandbus session bus is started in a temporary
directory for the runs (its own CPU time is not counted: it is reaped only
after them)."""

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from sandbus.launcher.options import parse_run_args
from sandbus.launcher.sandbox import env_args, sandbox_args


def _cpu_children() -> float:
    """User + sys seconds of the reaped children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _time(argv, env, runs):
    """[(wall ms, CPU ms)] of ``runs`` runs of argv."""
    out = []
    for _ in range(runs):
        c0 = _cpu_children()
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
        wall = (time.perf_counter() - t0) * 1000
        out.append((wall, (_cpu_children() - c0) * 1000))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.run_startup", description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sbstart-") as tmp:
        r, w = os.pipe()
        daemon = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "daemon", "--session", "--nofork",
                                   "--nopidfile", f"--address=unix:dir={tmp}", f"--print-address={w}"],
                                  pass_fds=(w,), stdin=subprocess.DEVNULL)
        os.close(w)
        with os.fdopen(r) as f:
            address = f.readline().strip()
        try:
            env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address, XDG_RUNTIME_DIR=tmp)
            # bwrap alone, with the sandbox sandbus run builds (a socket to bind included)
            sock_path = os.path.join(tmp, "bus-for-bwrap")
            s = socket.socket(socket.AF_UNIX)
            s.bind(sock_path)
            inner_env = {}
            opts = parse_run_args(["--", "true"])
            bw = ["bwrap", *sandbox_args(opts, uid=os.getuid(), runtime_socket=sock_path,
                                         home=os.path.expanduser("~"), env_out=inner_env),
                  *env_args(inner_env), "--", "true"]
            run = [sys.executable, "-m", "sandbus.cli", "run", "--", "true"]
            bare = [sys.executable, "-c", "pass"]  # the interpreter alone: what no import change removes
            py = [sys.executable, "-c", "import sandbus.launcher.run"]
            # what sandbus-dbus-proxy imports before it can write `x` (Flatpak waits on it)
            proxy = [sys.executable, "-c", "import sandbus.proxy.main"]
            _time(bw, env, 2)
            _time(run, env, 2)  # warm the page cache
            results = {"bwrap ... true": _time(bw, env, args.runs),
                       "python -c pass": _time(bare, env, args.runs),
                       "python -c 'import sandbus.launcher.run'": _time(py, env, args.runs),
                       "python -c 'import sandbus.proxy.main'": _time(proxy, env, args.runs),
                       "sandbus run -- true": _time(run, env, args.runs)}
            s.close()
        finally:
            daemon.terminate()
            daemon.wait()
    base = statistics.median(wall for wall, _cpu in results["bwrap ... true"])
    print(f"start-up, median of {args.runs} runs (ms; CPU = user + sys of the command and its children)")
    print(f"{'command':<44} {'median':>8} {'min':>8} {'/bwrap':>8} {'CPU':>8} {'CPU min':>8}")
    for name, runs in results.items():
        walls = [wall for wall, _cpu in runs]
        cpus = [cpu for _wall, cpu in runs]
        med = statistics.median(walls)
        print(f"{name:<44} {med:8.1f} {min(walls):8.1f} {med / base:7.2f}x"
              f" {statistics.median(cpus):8.1f} {min(cpus):8.1f}")


if __name__ == "__main__":
    main()
