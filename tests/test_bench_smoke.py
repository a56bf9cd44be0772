"""Smoke test of the benchmark harness (bench/): it runs, and it produces
numbers. It never asserts anything about speed."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon not installed")
@pytest.mark.timeout(120)
def test_bench_quick_produces_numbers(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick",
         "--systems", "dbus-daemon,sandbus",
         "--workloads", "sequential,inflight",
         "--json", str(out), "--plot", str(tmp_path / "bench.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())

    expected = ["dbus-daemon"]
    if shutil.which("sandbus-daemon"):
        expected.append("sandbus")
    for system in expected:
        status = doc["systems"][system]
        assert status["status"] == "ok", status.get("note")
    for workload in ("sequential", "inflight"):
        for system in expected:
            entry = doc["results"][workload][system]
            assert "error" not in entry, entry.get("error")
            median = entry["median"]
            assert median["ops_per_s"] > 0
            assert median["cpu_us_per_op"] >= 0
        base = doc["results"][workload]["dbus-daemon"]
        assert base["ratio"]["ops_per_s"] == pytest.approx(1.0)
    assert doc["results"]["sequential"]["dbus-daemon"]["median"]["p99_us"] > 0
    assert "== sequential" in proc.stdout


def test_core_cost_runs():
    """bench.core_cost drives the sans-I/O core in-process; keep it working."""
    from bench import core_cost
    assert core_cost.main(200) > 0
