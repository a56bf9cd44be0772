"""A bounded run of bench.fuzz against the daemon under test: no crash, no
traceback in its log, nothing invalid forwarded, nothing lost or reordered
for the well-behaved peer (issue 11).  The long run is
``python -m bench.fuzz --messages 1000000``."""

import os
import re
import subprocess
import sys

import pytest

from itutil import IS_DBUS_DAEMON

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench import fuzz  # noqa: E402
from sandbus.wire.message import SIGNAL, build_message  # noqa: E402


@pytest.mark.timeout(90)
def test_fuzz_smoke_run_finds_nothing():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT,
                                                        os.environ.get("PYTHONPATH", "")]))
    system = "dbus-daemon" if IS_DBUS_DAEMON else "sandbus"
    proc = subprocess.run([sys.executable, "-m", "bench.fuzz", "--messages", "3000", "--seed", "11",
                           "--system", system],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=85)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    counts = {}
    for line in proc.stdout.splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) >= 2 and not line.startswith(" "):
            counts[parts[0]] = parts[1]
    for key in fuzz.MUST_BE_ZERO:
        assert counts[key] == "0", (key, out)
    assert int(counts["messages"]) >= 3000
    # the run exercised both sides: attackers were cut off, the good peer was served
    assert int(counts["senders disconnected"]) > 0, out
    assert int(counts["good calls"]) > 0, out


def test_the_judge_rejects_what_a_strict_unmarshaller_rejects():
    # so the smoke run's zero means something
    good = build_message(SIGNAL, 1, path="/a", interface="a.b", member="M", signature="sb", body=["x", True])
    assert fuzz.strictly_valid(good) is None
    for bad in (good[:-4] + b"\2\0\0\0", good[:-1], good + b"\0", good.replace(b"x\0", b"\xff\0")):
        assert fuzz.strictly_valid(bad) is not None, bad


def test_mutators_keep_framing_consistent_for_body_and_header_mutations():
    import random
    rng = random.Random(5)
    for _ in range(500):
        data = fuzz.seed_message(rng, 3, ":1.1")
        for mutated in (fuzz.mutate_body(rng, data), fuzz.mutate_header(rng, data)):
            # body and header mutations never change where the frame ends
            assert fuzz.FrameStream().feed(mutated) == [mutated]
