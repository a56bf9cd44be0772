"""Does timing tell a hidden name from a missing one?  (issue 11, hole 7)
``python -m bench.hidden_timing [--samples N]``.

A mediated Containers1 instance with no rules (Allow=[]) hides every peer
outside it.  From inside, interleaved in random order, the same call goes to
a hidden unique name (an outside peer that exists) and to a unique name no
one has; likewise NameHasOwner on each.  Both answers are byte-identical
errors; this measures whether they take the same time: the difference of
the means and its z-score (|z| above ~3 means the time tells them apart).
"""

import argparse
import random
import statistics
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


def measure(samples, seed=1):
    rng = random.Random(seed)
    sysobj = systems.BY_NAME["sandbus"]()
    sysobj.start()
    try:
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
        kinds = {
            "call": lambda name: wire.method_call(name, "/", "org.example.X", "M"),
            "NameHasOwner": lambda name: wire.bus_call("NameHasOwner", "s", (name,)),
        }
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
        inside.close()
        outside.close()
        manager.close()
        return results
    finally:
        sysobj.stop()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.hidden_timing", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
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
