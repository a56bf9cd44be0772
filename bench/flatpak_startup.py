"""Wall time of `flatpak run --command=true APP` with Flatpak's own
xdg-dbus-proxy and with sandbus-dbus-proxy (FLATPAK_DBUSPROXY), on a
sandbus and on a dbus-daemon session bus, side by side.

    python -m bench.flatpak_startup [--runs N]

The app and its runtime are the tiny offline ones the Flatpak integration
test builds (tests/integration/flatpak_util.py), installed in a temporary
directory.  The buses have no service directories, so nothing is activated
while flatpak starts (no session helper, no a11y bus)."""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))

from flatpak_util import FLATPAK, FlatpakWorld, userns_problem  # noqa: E402
from itutil import MINIMAL_CONFIG  # noqa: E402

# The test suite's minimal bus configuration: no service directories.
CONFIG = MINIMAL_CONFIG.format(extra="")


def _start_bus(argv, tmp: Path, name: str):
    r, w = os.pipe()
    proc = subprocess.Popen([*argv, f"--config-file={tmp / 'bus.conf'}", "--nofork",
                             f"--address=unix:path={tmp / name}", f"--print-address={w}"],
                            pass_fds=(w,), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    with os.fdopen(r) as f:
        return proc, f.readline().strip()


def _time(world, address, proxy, runs):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = world.run(address, proxy=proxy, command="true")
        out.append((time.perf_counter() - t0) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"flatpak run failed: {r.stderr}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.flatpak_startup", description=__doc__)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                   help="the interpreter sandbus-dbus-proxy runs under (default: /usr/bin/python3)")
    args = p.parse_args(argv)
    if FLATPAK is None:
        raise SystemExit("flatpak is not installed")
    why = userns_problem()
    if why:
        raise SystemExit(why)
    tmp = Path(tempfile.mkdtemp(prefix="sbfpbench-"))
    buses = []
    try:
        (tmp / "bus.conf").write_text(CONFIG)
        world_root = tmp / "flatpak"
        world_root.mkdir()
        # the interpreter a system-wide install (pip install . as root) runs under
        world = FlatpakWorld(world_root, python=args.python)
        world.build()
        sandbus, sandbus_address = _start_bus([sys.executable, "-m", "sandbus.cli", "daemon"], tmp, "sandbus")
        buses.append(sandbus)
        dbus_daemon, dbus_address = _start_bus(["dbus-daemon"], tmp, "dbus-daemon")
        buses.append(dbus_daemon)
        systems = [
            ("dbus-daemon + xdg-dbus-proxy", dbus_address, None),
            ("dbus-daemon + sandbus-dbus-proxy (proxy back end)", dbus_address, world.sandbus_proxy),
            ("sandbus + xdg-dbus-proxy", sandbus_address, None),
            ("sandbus + sandbus-dbus-proxy (native)", sandbus_address, world.sandbus_proxy),
        ]
        for _label, address, proxy in systems:
            _time(world, address, proxy, 2)  # warm caches
        results = {label: _time(world, address, proxy, args.runs) for label, address, proxy in systems}
        base = statistics.median(results[systems[0][0]])
        print(f"flatpak run --command=true, median of {args.runs} (ms):")
        for label, times in results.items():
            m = statistics.median(times)
            print(f"  {label:48s} {m:7.0f}   x{m / base:.2f}   (min {min(times):.0f})")
        print(f"(sandbus-dbus-proxy under {args.python})")
    finally:
        for b in buses:
            b.terminate()
            b.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
