"""Command line: python -m bench [--quick] [--systems a,b] [--workloads x,y]
[--runs N] [--json PATH] [--plot PATH]."""

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys

from . import report, runner, systems, workloads

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _csv(value, known, what):
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError("unknown %s %s (known: %s)" % (
            what, ", ".join(unknown), ", ".join(known)))
    return names


def _version(argv):
    exe = shutil.which(argv[0])
    if not exe:
        return None
    try:
        out = subprocess.run([exe] + argv[1:], capture_output=True, text=True, timeout=5)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="a few hundred operations per workload, 1 run (CI smoke)")
    p.add_argument("--systems", type=lambda v: _csv(v, list(systems.BY_NAME), "system"),
                   default=list(systems.BY_NAME),
                   help="comma-separated, default all: " + ",".join(systems.BY_NAME))
    p.add_argument("--workloads", type=lambda v: _csv(v, list(workloads.WORKLOADS), "workload"),
                   default=list(workloads.WORKLOADS),
                   help="comma-separated, default all: " + ",".join(workloads.WORKLOADS))
    p.add_argument("--runs", type=int, default=None,
                   help="repetitions, median taken (default 5, 1 with --quick)")
    p.add_argument("--json", default=os.path.join(RESULTS_DIR, "latest.json"),
                   help="where to write the JSON results")
    p.add_argument("--plot", default=None,
                   help="where to write the PNG (default: next to --json, .png)")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    names = list(args.systems)
    if systems.BASELINE not in names:       # ratios need the baseline
        names.insert(0, systems.BASELINE)

    doc = runner.run(names, args.workloads, runs, args.quick)
    doc["meta"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "runs": runs, "baseline": systems.BASELINE,
        "host": platform.node(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {"dbus-daemon": _version(["dbus-daemon", "--version"]),
                     "dbus-broker": _version(["dbus-broker", "--version"]),
                     "xdg-dbus-proxy": _version(["xdg-dbus-proxy", "--version"])},
        "units": {w: spec[3] for w, spec in workloads.WORKLOADS.items() if w in args.workloads},
    }
    doc = {"meta": doc.pop("meta"), **doc}
    report.add_ratios(doc)
    print(report.table(doc))
    report.write_json(doc, args.json)
    print("\nJSON: %s" % args.json)
    md = os.path.splitext(args.json)[0] + ".md"
    report.write_markdown(doc, md)
    print("README table: %s (python -m bench.report %s re-renders it)" % (md, args.json))
    plot = args.plot or os.path.splitext(args.json)[0] + ".png"
    if report.write_plot(doc, plot):
        print("plot: %s" % plot)
    ok = doc["systems"][systems.BASELINE].get("status") == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
