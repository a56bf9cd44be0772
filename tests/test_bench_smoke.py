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
            assert 0 <= median["sys_us_per_op"] <= median["cpu_us_per_op"]
        base = doc["results"][workload]["dbus-daemon"]
        assert base["ratio"]["ops_per_s"] == pytest.approx(1.0)
    assert doc["results"]["sequential"]["dbus-daemon"]["median"]["p99_us"] > 0
    assert "== sequential" in proc.stdout

    # the README's table, next to the JSON, and the same again from the JSON
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("| workload | sandbus ops/s | sandbus CPU |") or "sandbus" not in expected
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| sequential calls", "| 64 calls in flight"]
    again = subprocess.run([sys.executable, "-m", "bench.report", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert again.stdout == md


def test_core_cost_runs():
    """bench.core_cost drives the sans-I/O core in-process; keep it working."""
    from bench import core_cost
    assert core_cost.main(200) > 0


@pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon not installed")
@pytest.mark.timeout(300)
def test_compiled_variant_builds_and_runs(tmp_path):
    """The compiled build (the one pip installs, measured side by side with
    the pure one) builds from the same .py files and serves the same workload."""
    pytest.importorskip("Cython")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--systems", "dbus-daemon,sandbus-compiled",
         "--workloads", "sequential", "--json", str(out), "--plot", str(tmp_path / "b.png")],
        cwd=ROOT, capture_output=True, text=True, timeout=290)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    status = doc["systems"]["sandbus-compiled"]
    assert status["status"] == "ok", status.get("note")
    assert doc["results"]["sequential"]["sandbus-compiled"]["median"]["ops_per_s"] > 0


def test_instructions_runs_wrapper_scripts_through_the_interpreter(tmp_path):
    """valgrind must be given the interpreter, not a #! script it would lose sight of."""
    from bench.instructions import _resolve_interpreter
    script = tmp_path / "sandbus-daemon"
    script.write_text("#!/usr/bin/python3\nprint('hi')\n")
    assert _resolve_interpreter([str(script), "--session"]) == \
        [sys.executable, os.path.realpath(script), "--session"]
    assert _resolve_interpreter([sys.executable, "-c", "pass"]) == [sys.executable, "-c", "pass"]


def _run_module(args, timeout=100):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT,
                                                        os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon not installed")
@pytest.mark.timeout(120)
def test_flood_runs_and_prints_every_scenario():
    out = _run_module(["bench.flood", "--quick", "--calls", "20"])
    for system in ("dbus-daemon", "sandbus"):
        for scenario in ("none", "slow-service", "broadcasts", "never-reads"):
            line = next(l for l in out.splitlines() if l.split()[:2] == [system, scenario])
            assert "error" not in line, out


@pytest.mark.skipif(not shutil.which("dbus-daemon"), reason="dbus-daemon not installed")
@pytest.mark.timeout(120)
def test_churn_runs_and_prints_both_kinds():
    out = _run_module(["bench.churn", "--quick", "--cycles", "40", "--instances", "10"])
    rows = {tuple(l.split()[:2]): l for l in out.splitlines()}
    assert "%" in rows[("sandbus", "connect")] and "%" in rows[("sandbus", "instances")], out
    assert "%" in rows[("dbus-daemon", "connect")], out
    assert "n/a" in rows[("dbus-daemon", "instances")], out


@pytest.mark.timeout(120)
def test_hidden_timing_runs_and_prints_z_scores():
    out = _run_module(["bench.hidden_timing", "--samples", "20"])
    rows = {l.split()[0]: l.split() for l in out.splitlines()[1:]}
    for probe in ("call", "NameHasOwner"):
        assert rows[probe][-1] == "True", out  # the answers themselves are identical
        float(rows[probe][-2])  # a z-score is printed


def test_validate_cost_runs():
    from bench import validate_cost
    rows = validate_cost.main(quick=True)
    assert {r[0] for r in rows} >= {"s", "su", "a{sv} x10", "ay 1 MiB"}


@pytest.mark.skipif(not (shutil.which("dbus-daemon") and shutil.which("strace")),
                    reason="dbus-daemon or strace not installed")
@pytest.mark.timeout(120)
def test_syscalls_per_connection(tmp_path):
    """bench.syscalls counts per connection too: a connection costs at
    least an accept and a close in any bus."""
    from bench import syscalls, systems
    counts = syscalls.measure(systems.BY_NAME["dbus-daemon"], 50, "connect_hello")
    assert counts.get("accept4", 0) + counts.get("accept", 0) >= 50
    assert counts.get("close", 0) >= 50
