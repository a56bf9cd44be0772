"""The per-binary table of dbus's installed tests
(tests/installed/test_dbus_installed.py): each case records both daemons'
outcomes as user properties, which pytest-xdist carries back from its
workers, and the summary adds them up.  It lives here, not next to those
tests, because under xdist the controlling process loads only this
top-level conftest and never collects the subdirectories."""

from __future__ import annotations

import collections


def pytest_terminal_summary(terminalreporter):
    per_binary = collections.OrderedDict()
    differences = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            props = dict(getattr(rep, "user_properties", ()) or ())
            if "dbus_installed_binary" not in props or getattr(rep, "when", "call") != "call":
                continue
            row = per_binary.setdefault(props["dbus_installed_binary"],
                                        {d: collections.Counter() for d in ("dbus-daemon", "sandbus")})
            for daemon in ("dbus-daemon", "sandbus"):
                status = props.get(f"dbus_installed_{daemon}")
                if status:
                    row[daemon][status] += 1
            if props.get("dbus_installed_exception"):
                differences.append((props["dbus_installed_case"], props["dbus_installed_exception"]))
    if not per_binary:
        return
    tr = terminalreporter
    tr.section("dbus installed tests (passed/failed/skipped)")
    tr.write_line(f"{'binary':30} {'dbus-daemon':>14} {'sandbus':>14}")
    total = {d: collections.Counter() for d in ("dbus-daemon", "sandbus")}
    for binary in sorted(per_binary):
        row = per_binary[binary]
        cells = []
        for daemon in ("dbus-daemon", "sandbus"):
            c = row[daemon]
            total[daemon].update(c)
            cells.append(f"{c['passed']}/{c['failed']}/{c['skipped']}")
        tr.write_line(f"{binary:30} {cells[0]:>14} {cells[1]:>14}")
    cells = [f"{t['passed']}/{t['failed']}/{t['skipped']}" for t in total.values()]
    tr.write_line(f"{'total':30} {cells[0]:>14} {cells[1]:>14}")
    for case, reason in sorted(differences):
        tr.write_line(f"{case}: {reason}")
