"""Another client's latency while one peer floods the bus:
``python -m bench.flood [--quick] [--systems dbus-daemon,sandbus] [--calls N]``.

A victim makes sequential calls to the echo service and records each round
trip.  Scenarios, each on a fresh bus:

* ``none``: no flood (the reference);
* ``slow-service``: the flooder pipelines calls to a service that reads
  them slowly and never answers;
* ``broadcasts``: the flooder emits signals as fast as it can, and one
  subscriber reads them all;
* ``never-reads``: the flooder emits signals that a peer which never reads
  has subscribed to.

The flooder and the slow service run in processes of their own, so they do
not share an interpreter with the victim.  Prints p50/p99 per system and
scenario, and each p99 as a multiple of that system's ``none``.
"""

import argparse
import os
import subprocess
import sys
import time

from . import systems, wire
from .conn import BusError, Conn, request_name
from .names import ECHO_IFACE, ECHO_NAME, ECHO_PATH
from .runner import EchoService

SLOW_NAME = "org.sandbus.Bench.Slow"
FLOOD_IFACE = "org.sandbus.Bench.Flood"
SCENARIOS = ("none", "slow-service", "broadcasts", "never-reads")


def _percentile(sorted_values, q):
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def victim_latencies(address, calls):
    conn = Conn(address)
    msg = wire.method_call(ECHO_NAME, ECHO_PATH, ECHO_IFACE, "Echo", "s", ("ping",))
    out = []
    try:
        for _ in range(calls):
            t0 = time.perf_counter()
            conn.call(msg)
            out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


# -- the flooding side, in a child process ------------------------------------------


def _drain(sock):
    try:
        while sock.recv(1 << 20):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _flood_forever(address, kind):
    """Child process: flood until killed.  Prints READY once flooding."""
    keep = []  # connections that must stay open (the never-reader)
    if kind == "slow-service":
        slow = Conn(address)
        request_name(slow, SLOW_NAME)
        keep.append(slow)
        msg = wire.method_call(SLOW_NAME, "/", FLOOD_IFACE, "Slow", "s", ("x" * 64,))
    else:
        if kind == "never-reads":
            sleeper = Conn(address)
            sleeper.call(wire.bus_call("AddMatch", "s", ("type='signal',interface='%s'" % FLOOD_IFACE,)))
            keep.append(sleeper)  # and never read again
        else:
            reader = Conn(address)
            reader.call(wire.bus_call("AddMatch", "s", ("type='signal',interface='%s'" % FLOOD_IFACE,)))
            reader.sock.setblocking(False)
            keep.append(reader)
        msg = wire.message(wire.SIGNAL, path="/", interface=FLOOD_IFACE, member="Noise",
                           signature="s", body_values=("x" * 64,), flags=wire.NO_REPLY_EXPECTED)
    flooder = Conn(address)
    flooder.sock.setblocking(False)
    batch = bytes(msg) * 64
    print("READY", flush=True)
    last_slow_read = 0.0
    while True:
        try:
            flooder.sock.send(batch)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.0005)
        except OSError:
            # the bus cut the flooder off (a limit): come back, as a flooder would
            flooder.close()
            flooder = Conn(address)
            flooder.sock.setblocking(False)
        _drain(flooder.sock)
        now = time.monotonic()
        if kind == "slow-service" and now - last_slow_read > 0.01:
            last_slow_read = now
            keep[0].sock.setblocking(False)
            try:
                keep[0].sock.recv(4096)  # a little, slowly; never an answer
            except (BlockingIOError, InterruptedError):
                pass
        elif kind == "broadcasts":
            _drain(keep[0].sock)


class Flooder:
    def __init__(self, address, kind):
        env = dict(os.environ, PYTHONPATH=systems._bench_pythonpath())
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.flood", "--flooder", kind, address],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        line = systems._read_line(self.proc, 10.0)
        if line != "READY":
            self.stop()
            raise RuntimeError("flooder %s did not start" % kind)
        time.sleep(0.2)  # let the flood build up

    def stop(self):
        systems._stop_process(self.proc)


def run_one(system_name, scenario, calls):
    sysobj = systems.BY_NAME[system_name]()
    try:
        sysobj.start()
    except systems.Unavailable as e:
        return {"error": str(e)}
    echo = flooder = None
    try:
        echo = EchoService(sysobj.service_address)
        if scenario != "none":
            flooder = Flooder(sysobj.client_address, scenario)
        lat = sorted(victim_latencies(sysobj.client_address, calls))
        alive = sysobj.procs[0].poll() is None
        return {"p50_us": _percentile(lat, 0.5) * 1e6, "p99_us": _percentile(lat, 0.99) * 1e6,
                "calls": len(lat), "bus_alive": alive}
    except (OSError, ConnectionError, BusError, RuntimeError) as e:
        return {"error": "%s: %s" % (type(e).__name__, e)}
    finally:
        if flooder:
            flooder.stop()
        if echo:
            echo.stop()
        sysobj.stop()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="few calls (CI smoke)")
    p.add_argument("--systems", default="dbus-daemon,sandbus")
    p.add_argument("--calls", type=int, default=None)
    p.add_argument("--flooder", nargs=2, metavar=("KIND", "ADDRESS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.flooder:
        _flood_forever(args.flooder[1], args.flooder[0])
        return 0
    calls = args.calls or (50 if args.quick else 2000)
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    results = {}
    print("%-12s %-13s %10s %10s %9s" % ("system", "flood", "p50 us", "p99 us", "p99 x"))
    for name in names:
        for scenario in SCENARIOS:
            r = results[(name, scenario)] = run_one(name, scenario, calls)
            if "error" in r:
                print("%-12s %-13s  error: %s" % (name, scenario, r["error"]))
                continue
            base = results.get((name, "none"), {})
            ratio = r["p99_us"] / base["p99_us"] if base.get("p99_us") else float("nan")
            print("%-12s %-13s %10.0f %10.0f %9.1f%s" % (name, scenario, r["p50_us"], r["p99_us"], ratio,
                                                        "" if r["bus_alive"] else "  (bus died)"),
                  flush=True)
    return results


if __name__ == "__main__":
    out = main()
    sys.exit(0 if isinstance(out, (dict, int)) else 1)
