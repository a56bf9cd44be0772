"""Ratios to dbus-daemon, the text table, the JSON file and the PNG plot.

JSON shape::

  {"meta": {...}, "metrics": {name: {"unit", "better", "label"}},
   "systems": {name: {"status": "ok"|"skipped", "description", "note"?}},
   "results": {workload: {system: {"median": {metric: value},
                                   "ratio":  {metric: value / baseline},
                                   "runs": [{metric: value}, ...],
                                   "error"?: "..."}}}}
"""

import json
import os
import sys

from .systems import BASELINE

# name -> (column label, unit, which direction is better)
METRICS = {
    "ops_per_s": ("ops/s", "operations per second", "higher"),
    "cpu_us_per_op": ("cpu us/op", "broker CPU microseconds per operation", "lower"),
    "sys_us_per_op": ("sys us/op", "the kernel's part of cpu us/op (stime)", "lower"),
    "p50_us": ("p50 us", "median latency, microseconds", "lower"),
    "p99_us": ("p99 us", "99th percentile latency, microseconds", "lower"),
    "rss_kib": ("rss KiB", "broker RSS at the end, KiB", "lower"),
    "rss_per_conn_b": ("B/conn", "broker RSS growth per idle connection, bytes", "lower"),
    "cpu_us_low": ("cpu us@1", "scaling workloads: CPU per op at the small end", "lower"),
    "flatness": ("flat", "scaling workloads: CPU per op at the large end / at the small end (1.0 = flat)", "lower"),
}


def add_ratios(doc):
    for per_system in doc["results"].values():
        base = per_system.get(BASELINE, {}).get("median", {})
        for entry in per_system.values():
            med = entry.get("median")
            if med:
                entry["ratio"] = {k: v / base[k] for k, v in med.items()
                                  if k in METRICS and base.get(k)}
    doc["metrics"] = {k: {"label": l, "unit": u, "better": b}
                      for k, (l, u, b) in METRICS.items()}
    return doc


def _fmt(v):
    if v is None:
        return "-"
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def _fmt_ratio(r):
    return "-" if r is None else "x%.2f" % r


def table(doc):
    """The results as plain text: one block per workload, one row per system."""
    lines = []
    cols = list(METRICS)
    for wname, per_system in doc["results"].items():
        present = [m for m in cols
                   if any(m in e.get("median", {}) for e in per_system.values())]
        lines.append("")
        lines.append("== %s" % wname)
        head = "%-18s" % "system" + "".join(
            " %11s %6s" % (METRICS[m][0], "/dd") for m in present)
        lines.append(head)
        for sname, entry in per_system.items():
            if doc["systems"][sname].get("status") == "skipped":
                continue
            med, ratio = entry.get("median", {}), entry.get("ratio", {})
            if not med:
                lines.append("%-18s %s" % (sname, entry.get("error", "no result")))
                continue
            row = "%-18s" % sname
            for m in present:
                row += " %11s %6s" % (_fmt(med.get(m)), _fmt_ratio(ratio.get(m)))
            if entry.get("error"):
                row += "  (" + entry["error"] + ")"
            lines.append(row)
    lines.append("")
    lines.append("/dd = value / dbus-daemon's value. Better is higher for ops/s, "
                 "lower for everything else.")
    skipped = [(n, s.get("note", "")) for n, s in doc["systems"].items()
               if s.get("status") == "skipped"]
    for name, note in skipped:
        lines.append("skipped %s: %s" % (name, note))
    return "\n".join(lines)


def write_json(doc, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=False)
        f.write("\n")


def write_plot(doc, path):
    """Bar charts of throughput and CPU ratios; skipped without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written "
              "(pip install matplotlib)", file=sys.stderr)
        return None
    workloads = list(doc["results"])
    systems = [s for s in doc["systems"] if doc["systems"][s].get("status") == "ok"]
    panels = [("ops_per_s", "throughput / dbus-daemon (higher is better)"),
              ("cpu_us_per_op", "broker CPU per op / dbus-daemon (lower is better)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 1.3 * len(workloads)), 8))
    width = 0.8 / max(1, len(systems))
    for ax, (metric, title) in zip(axes, panels):
        for i, sname in enumerate(systems):
            vals = [doc["results"][w][sname].get("ratio", {}).get(metric, 0)
                    for w in workloads]
            xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(workloads))]
            ax.bar(xs, vals, width, label=sname)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(workloads)))
        ax.set_xticklabels(workloads, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# The rows of the README's table (README.md, "Benchmarks"), in its order.
ROW_LABELS = {
    "sequential": "sequential calls",
    "inflight": "64 calls in flight",
    "two_clients": "2 clients",
    "broadcast_10": "broadcast to 10, 10k rules",
    "broadcast_100": "broadcast to 100, 10k rules",
    "payload_1mib": "1 MiB payloads",
    "fd_passing": "fd passing",
    "connect_hello": "connect + Hello",
    "jeepney_sequential": "jeepney client, sequential",
    "idle_connections": "idle connection, RSS growth",
    "scaling_rules": "100k rules vs none, broadcast (flat)",
    "scaling_connections": "10k connections vs none, sequential (flat)",
}
# Column headings for the systems, as the README names them; sandbus's
# own columns come first.
COLUMN_LABELS = {
    "xdg-dbus-proxy": "dbus-daemon + xdg-dbus-proxy",
    "sandbus-contained": "sandbus, mediated container (100 rules)",
}
# The figure each row shows: CPU per operation, except where the workload
# measures something else.
_ROW_METRIC = {"idle_connections": ("rss_per_conn_b", " B/conn"),
               "scaling_rules": ("flatness", ""), "scaling_connections": ("flatness", "")}


def _cell(entry, metric, unit):
    med = entry.get("median", {})
    if metric not in med:
        return ""
    ratio = entry.get("ratio", {}).get(metric)
    if metric == "flatness" or ratio is None:
        return _fmt(med[metric]) + unit
    return "%s%s (%.2f×)" % (_fmt(med[metric]), unit, ratio)


def markdown(doc):
    """The README's table: one row per workload, the throughput of sandbus
    as pip installs it (compiled, else pure), then every other bus's CPU per
    operation with its ratio to dbus-daemon's."""
    shown = [n for n, s in doc["systems"].items() if s.get("status") == "ok" and n != BASELINE]
    # the shipped build first, the pure one beside it; the rest keep the run's order
    shown.sort(key=lambda n: {"sandbus-compiled": 0, "sandbus": 1}.get(n, 2))
    lead = shown[0] if shown and shown[0] in ("sandbus-compiled", "sandbus") else None
    head = ["workload"]
    if lead:
        head.append("%s ops/s" % lead)
    head += ["%s CPU" % COLUMN_LABELS.get(n, n) for n in shown]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = [w for w in ROW_LABELS if w in doc["results"]]
    order += [w for w in doc["results"] if w not in ROW_LABELS]
    for wname in order:
        per_system = doc["results"][wname]
        metric, unit = _ROW_METRIC.get(wname, ("cpu_us_per_op", " µs"))
        row = [ROW_LABELS.get(wname, wname)]
        if lead:
            row.append(_cell(per_system.get(lead, {}), "ops_per_s", "")
                       if metric == "cpu_us_per_op" else "")
        row += [_cell(per_system.get(n, {}), metric, unit) for n in shown]
        lines.append("| " + " | ".join(row) + " |")
    meta = doc.get("meta", {})
    lines.append("")
    lines.append("%s runs (medians), %s, %s CPUs; CPU = the bus's own CPU per operation "
                 "(/proc), ratios to %s." % (meta.get("runs", "?"), meta.get("date", "?"),
                                             meta.get("cpus", "?"), BASELINE))
    return "\n".join(lines) + "\n"


def write_markdown(doc, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(markdown(doc))


def main(argv=None):
    """python -m bench.report FILE.json [OUT.md]: re-render a saved run."""
    argv = sys.argv[1:] if argv is None else argv
    if not 1 <= len(argv) <= 2:
        sys.exit("usage: python -m bench.report FILE.json [OUT.md]")
    with open(argv[0]) as f:
        doc = json.load(f)
    if len(argv) == 2:
        write_markdown(doc, argv[1])
    else:
        sys.stdout.write(markdown(doc))


if __name__ == "__main__":
    main()
