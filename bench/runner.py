"""Runs workloads x systems x repetitions, interleaved, and takes medians.

For every repetition, for every workload, each system in turn gets a
fresh bus and a fresh echo service, so no run inherits another's heap,
match rules or connections, and slow drift of the machine (other load,
thermal) spreads over all systems alike.
"""

import os
import statistics
import subprocess
import sys
import time
import traceback

from . import systems as systems_mod
from . import workloads as workloads_mod
from .names import ECHO_NAME
from .systems import Unavailable


class EchoService:
    """The echo service as a child process."""

    def __init__(self, address):
        env = dict(os.environ, PYTHONPATH=systems_mod._bench_pythonpath())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.echo_service", address, ECHO_NAME],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        line = systems_mod._read_line(self.proc, 10.0)
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError("echo service did not start")

    def stop(self):
        systems_mod._stop_process(self.proc)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(system_names, workload_names, runs, quick):
    """Returns the results document (see report.py for its shape)."""
    status = {}
    for name in system_names:
        status[name] = {"status": "pending",
                        "description": systems_mod.BY_NAME[name].description}
    raw = {w: {s: [] for s in system_names} for w in workload_names}
    errors = {w: {} for w in workload_names}
    if "jeepney_sequential" in workload_names and not workloads_mod.jeepney_available():
        for s in system_names:
            errors["jeepney_sequential"][s] = "jeepney is not installed (pip install jeepney)"

    for rep in range(runs):
        for wname in workload_names:
            fn, full, small, _unit = workloads_mod.WORKLOADS[wname]
            size = small if quick else full
            for sname in system_names:
                if status[sname]["status"] == "skipped" or sname in errors[wname]:
                    continue
                system = systems_mod.BY_NAME[sname]()
                try:
                    system.start()
                except Unavailable as e:
                    status[sname] = dict(status[sname], status="skipped", note=str(e))
                    log("[skip] %s: %s" % (sname, e))
                    continue
                status[sname]["status"] = "ok"
                echo = None
                t0 = time.monotonic()
                try:
                    echo = EchoService(system.service_address)
                    result = fn(system, size)
                    raw[wname][sname].append(result)
                    log("[run %d/%d] %-18s %-18s %10.0f ops/s  %7.1f us/op cpu  (%.1fs)" % (
                        rep + 1, runs, wname, sname, result["ops_per_s"],
                        result["cpu_us_per_op"], time.monotonic() - t0))
                except Exception as e:     # one failure must not end the run
                    errors[wname][sname] = "%s: %s" % (type(e).__name__, e)
                    log("[fail] %s on %s: %s" % (wname, sname, errors[wname][sname]))
                    if os.environ.get("BENCH_DEBUG"):
                        traceback.print_exc()
                finally:
                    if echo:
                        echo.stop()
                    system.stop()

    results = {}
    for wname in workload_names:
        results[wname] = {}
        for sname in system_names:
            entry = {"runs": raw[wname][sname]}
            if raw[wname][sname]:
                entry["median"] = median_metrics(raw[wname][sname])
            if sname in errors[wname]:
                entry["error"] = errors[wname][sname]
            results[wname][sname] = entry
    return {"systems": status, "results": results}


def median_metrics(run_list):
    keys = sorted({k for r in run_list for k in r})
    return {k: statistics.median([r[k] for r in run_list if r.get(k) is not None])
            for k in keys if any(r.get(k) is not None for r in run_list)}
