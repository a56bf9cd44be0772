"""Cost of body validation (sandbus/wire/validate.py) on typical bodies:
``python -m bench.validate_cost [--quick]``.  Prints microseconds per body
for the validator and, next to it, for the strict unmarshaller (what the
bus would pay to build the values), and the throughput."""

import sys
import time

from sandbus.wire.marshal import Variant, marshal, unmarshal
from sandbus.wire.validate import validate_body


def _bodies():
    a_sv = {f"key{i}": Variant("s" if i % 2 else "u", f"value{i}" if i % 2 else i) for i in range(10)}
    return [
        ("s", "s", ["hello"]),
        ("su", "su", ["org.example.Name", 7]),
        ("a{sv} x10", "a{sv}", [a_sv]),
        ("ay 1 MiB", "ay", [b"\xa5" * (1 << 20)]),
        ("ay 16 MiB", "ay", [b"\xa5" * (16 << 20)]),
        ("as 100k", "as", [[f"item{i}" for i in range(100000)]]),
        ("ao 10k", "ao", [[f"/org/example/obj{i}" for i in range(10000)]]),
    ]


def _time(fn, budget: float) -> float:
    """Seconds per call: repeat for about ``budget`` seconds, best of 3 rounds."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(budget / 3 / once))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def main(quick: bool = False) -> list:
    budget = 0.02 if quick else 0.6
    rows = []
    print(f"{'body':<12} {'bytes':>10} {'validate us':>12} {'MB/s':>8} {'unmarshal us':>13} {'ratio':>6}")
    for label, sig, values in _bodies():
        if quick and len(marshal(sig, values)) > 2 << 20:
            continue
        data = marshal(sig, values)
        n = len(data)
        v = _time(lambda: validate_body(data, 0, n, sig, "l", 0), budget)
        u = _time(lambda: unmarshal(sig, data), budget)
        rows.append((label, n, v, u))
        print(f"{label:<12} {n:>10} {v * 1e6:>12.2f} {n / v / 1e6:>8.0f} {u * 1e6:>13.2f} {u / v:>6.1f}")
    return rows


if __name__ == "__main__":
    main("--quick" in sys.argv[1:])
