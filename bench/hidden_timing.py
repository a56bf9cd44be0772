"""Does timing tell a hidden name from a missing one?  (issue 11, hole 7)
``python -m bench.hidden_timing [--samples N] [--instructions CALLS [--rounds R]]``.

A mediated Containers1 instance with no rules (Allow=[]) hides every peer
outside it.  From inside, interleaved in random order, the same call goes to
a hidden unique name (an outside peer that exists) and to a unique name no
one has; likewise NameHasOwner on each.  Both answers are byte-identical
errors; this measures whether they take the same time: the difference of
the means and its z-score (|z| above ~3 means the time tells them apart).
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from . import systems, wire
from .conn import Conn

CONTAINERS = "org.freedesktop.DBus.Containers1"


def _z(a, b):
    va, vb = statistics.variance(a), statistics.variance(b)
    se = (va / len(a) + vb / len(b)) ** 0.5
    return (statistics.fmean(a) - statistics.fmean(b)) / se if se else 0.0


def _trim(values, keep=0.98):
    """Drop the slowest 2% (scheduler noise on a shared machine) from both alike."""
    values = sorted(values)
    return values[:max(2, int(len(values) * keep))]


KINDS = {
    "call": lambda name: wire.method_call(name, "/", "org.example.X", "M"),
    "NameHasOwner": lambda name: wire.bus_call("NameHasOwner", "s", (name,)),
}


def _setup(sysobj):
    """(manager, outside, inside, hidden name, missing name) on a started bus."""
    manager = Conn(sysobj.service_address)
    outside = Conn(sysobj.service_address)  # exists, and is hidden from the instance
    _path, _sock, address = manager.call(wire.bus_call(
        "AddServer", "ssa{sv}a{sv}", ("org.sandbus.Timing", "timing", {}, {"Allow": ("a(usos)", [])}),
        interface=CONTAINERS))
    inside = Conn(address)
    hidden = outside.unique_name
    # a unique name of the same length that nobody has
    prefix, _, number = hidden.rpartition(".")
    missing = prefix + "." + "9" * len(number)
    return manager, outside, inside, hidden, missing


def _close(*conns):
    for c in conns:
        c.close()


def measure(samples, seed=1):
    rng = random.Random(seed)
    sysobj = systems.BY_NAME["sandbus"]()
    sysobj.start()
    try:
        manager, outside, inside, hidden, missing = _setup(sysobj)
        kinds = KINDS
        results = {}
        for kind, build in kinds.items():
            msgs = {"hidden": build(hidden), "missing": build(missing)}
            answers = {}
            for label, msg in msgs.items():  # warm-up, and the answers must be equal
                name = hidden if label == "hidden" else missing
                serial = inside.send(msg)
                mtype, _, _, fields, body = wire.parse(inside.wait_replies({serial})[serial])
                text = [v.replace(name, "NAME") if isinstance(v, str) else v for v in body]
                answers[label] = (mtype, fields.get(wire.F_ERROR_NAME), text)
            times = {"hidden": [], "missing": []}
            for _ in range(samples):
                order = ["hidden", "missing"]
                rng.shuffle(order)
                for label in order:
                    t0 = time.perf_counter()
                    serial = inside.send(msgs[label])
                    inside.wait_replies({serial})
                    times[label].append(time.perf_counter() - t0)
            h, m = _trim(times["hidden"]), _trim(times["missing"])
            results[kind] = {
                "hidden_us": statistics.fmean(h) * 1e6, "missing_us": statistics.fmean(m) * 1e6,
                "diff_us": (statistics.fmean(h) - statistics.fmean(m)) * 1e6, "z": _z(h, m),
                "same_answer": answers["hidden"] == answers["missing"], "samples": samples,
            }
        _close(inside, outside, manager)
        return results
    finally:
        sysobj.stop()


def _dumped(out_file, number):
    """The instructions counted in callgrind's dump number (since the one before)."""
    with open(f"{out_file}.{number}") as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}.{number}")


def instructions(calls, rounds, seed=1):
    """User-space instructions the bus spends per probe, hidden vs missing,
    counted by callgrind (bench/instructions.py): the bus runs under it and
    is told to dump its counters (callgrind_control -d) before and after
    each run of ``calls`` probes of one kind, in random order."""
    from . import instructions as ins
    rng = random.Random(seed)
    sysobj = systems.BY_NAME["sandbus"]()
    ins._UnderCallgrind(sysobj)
    old_timeout = systems.START_TIMEOUT
    systems.START_TIMEOUT = ins.START_TIMEOUT
    try:
        sysobj.start()
    finally:
        systems.START_TIMEOUT = old_timeout
    out_file = os.path.join(sysobj.tmpdir, "callgrind.out")
    dumps = [0]

    def dump():
        subprocess.run(["callgrind_control", "-d", str(sysobj.broker_pids[0])], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dumps[0] += 1
        # the dump is written by the bus when it notices the request
        deadline = time.monotonic() + 60
        while not os.path.exists(f"{out_file}.{dumps[0]}"):
            assert time.monotonic() < deadline, "callgrind did not dump"
            time.sleep(0.05)
        time.sleep(0.2)
        return _dumped(out_file, dumps[0])

    try:
        manager, outside, inside, hidden, missing = _setup(sysobj)
        results = {}
        for kind, build in KINDS.items():
            msgs = {"hidden": build(hidden), "missing": build(missing)}
            for label in msgs:  # warm-up
                for _ in range(50):
                    inside.wait_replies({inside.send(msgs[label])})
            counts = {"hidden": [], "missing": []}
            for _ in range(rounds):
                order = ["hidden", "missing"]
                rng.shuffle(order)
                for label in order:
                    dump()
                    for _ in range(calls):
                        inside.wait_replies({inside.send(msgs[label])})
                    counts[label].append(dump() / calls)
            results[kind] = counts
        _close(inside, outside, manager)
        return results
    finally:
        sysobj.stop()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.hidden_timing", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--instructions", type=int, metavar="CALLS", default=0,
                   help="count instructions under callgrind instead, CALLS probes per run")
    p.add_argument("--rounds", type=int, default=3, help="runs of each kind with --instructions")
    args = p.parse_args(argv)
    if args.instructions:
        results = instructions(args.instructions, args.rounds, args.seed)
        print("%-13s %14s %14s %9s" % ("probe", "hidden instr", "missing instr", "diff %"))
        for kind, counts in results.items():
            h, m = statistics.fmean(counts["hidden"]), statistics.fmean(counts["missing"])
            print("%-13s %14.0f %14.0f %+8.3f%%   runs: hidden %s, missing %s" % (
                kind, h, m, (h - m) / m * 100, [round(c) for c in counts["hidden"]],
                [round(c) for c in counts["missing"]]))
        return results
    results = measure(args.samples, args.seed)
    print("%-13s %8s %11s %11s %9s %7s %s" % ("probe", "samples", "hidden us", "missing us", "diff us", "z",
                                              "same answer"))
    for kind, r in results.items():
        print("%-13s %8d %11.1f %11.1f %9.1f %7.1f %s" % (kind, r["samples"], r["hidden_us"], r["missing_us"],
                                                         r["diff_us"], r["z"], r["same_answer"]))
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
