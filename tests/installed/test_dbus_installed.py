"""dbus 1.14's own installed tests against sandbus, next to dbus-daemon.

One pytest case per GTest case (each in its own process, with a timeout).
A case fails when dbus-daemon passes it and sandbus does not, unless it is
one of the deliberate differences in dbus_installed.EXCEPTIONS or the
gaps still to fix in dbus_installed.KNOWN_GAPS.  The table
per binary is printed at the end (conftest.py)."""

from __future__ import annotations

import shutil

import pytest

import dbus_installed as di

CASES = di.list_cases()

pytestmark = [
    pytest.mark.skipif(not di.available(), reason="Debian package dbus-tests is not installed "
                       "(scripts/test installs it)"),
    pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon is not installed"),
    # each daemon gets CASE_TIMEOUT; a little more for both runs together
    pytest.mark.timeout(int(2 * di.CASE_TIMEOUT + 15)),
]


def _id(case):
    binary, name = case
    return binary if name is None else f"{binary}:{name}"


@pytest.mark.parametrize("case", CASES or [("none", None)], ids=_id if CASES else None)
def test_installed(case, record_property):
    binary, name = case
    if binary == "none":
        pytest.skip("no installed tests found")
    case_id = _id(case)
    record_property("dbus_installed_binary", binary)
    record_property("dbus_installed_case", case_id)

    ref = di.run_case(binary, name, "dbus-daemon")
    record_property("dbus_installed_dbus-daemon", ref.status)
    assert ref.started_bus or ref.status == "skipped", (
        f"{case_id} did not start a bus under dbus-daemon; add {binary} to NO_BUS if that is "
        f"right\n{ref.output}")
    gap = di.KNOWN_GAPS.get(case_id)
    ours = di.run_case(binary, name, "sandbus", timeout=di.GAP_TIMEOUT if gap else None)
    record_property("dbus_installed_sandbus", ours.status)

    if ref.status != "passed":
        return  # nothing to match: the table shows both outcomes
    for reason, kind in ((di.EXCEPTIONS.get(case_id), "deliberate difference"), (gap, "known gap")):
        if reason is not None:
            assert ours.status != "passed", (
                f"{case_id} passes on sandbus now: take it off dbus_installed's {kind} list")
            record_property("dbus_installed_exception", f"{kind}: {reason}")
            return
    assert ours.status == "passed", (
        f"dbus-daemon passes {case_id}, sandbus: {ours.status}: {ours.detail}\n"
        f"--- sandbus output ---\n{ours.output}")
