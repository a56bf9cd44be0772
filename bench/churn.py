"""RSS and open fds of the bus over connection churn:
``python -m bench.churn [--quick] [--systems dbus-daemon,sandbus] [--cycles N] [--instances M]``.

* ``connect``: N connect + Hello + disconnect cycles (default 20,000); RSS and
  fds are sampled at the start, after N/2 and after N, and the growth over
  the second half is what a leak shows up in;
* ``instances``: M Containers1 AddServer + connect + Hello + StopInstance
  cycles (default 2,000), sampled the same way (buses without Containers1
  print n/a).

Each cycle waits for the bus to have handled the previous one (a round trip
on a long-lived connection), so what is measured is what stays behind.
"""

import argparse
import os
import sys

from . import procstat, systems, wire
from .conn import BusError, Conn

CONTAINERS = "org.freedesktop.DBus.Containers1"


def _fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def _sample(pid):
    return procstat.rss_bytes(pid), _fds(pid)


def _connect_cycle(address):
    Conn(address).close()


def churn(sysobj, kind, cycles):
    pid = sysobj.broker_pids[0]
    keeper = Conn(sysobj.service_address)
    ping = wire.method_call("org.freedesktop.DBus", "/", "org.freedesktop.DBus.Peer", "Ping")
    if kind == "instances":
        try:
            keeper.call(wire.bus_call("ListInstances", interface=CONTAINERS))
        except BusError as e:
            keeper.close()
            return {"error": "n/a (%s)" % e.name}

    def one():
        if kind == "connect":
            _connect_cycle(sysobj.client_address)
        else:
            path, _sock, address = keeper.call(wire.bus_call(
                "AddServer", "ssa{sv}a{sv}", ("org.sandbus.Churn", "churn", {}, {"Allow": ("a(usos)", [])}),
                interface=CONTAINERS))
            Conn(address).close()
            keeper.call(wire.bus_call("StopInstance", "o", (path,), interface=CONTAINERS))
        keeper.call(ping)

    try:
        for _ in range(min(200, cycles)):  # warm-up: caches, allocator arenas
            one()
        samples = [_sample(pid)]
        for half in range(2):
            for _ in range(cycles // 2):
                one()
            keeper.call(ping)
            samples.append(_sample(pid))
    finally:
        keeper.close()
    (r0, f0), (r1, f1), (r2, f2) = samples
    return {"rss_start": r0, "rss_half": r1, "rss_end": r2, "fds_start": f0, "fds_half": f1, "fds_end": f2,
            "growth_second_half_pct": (r2 - r1) / r1 * 100 if r1 else float("nan")}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--systems", default="dbus-daemon,sandbus")
    p.add_argument("--cycles", type=int, default=None)
    p.add_argument("--instances", type=int, default=None)
    args = p.parse_args(argv)
    counts = {"connect": args.cycles or (200 if args.quick else 20000),
              "instances": args.instances or (40 if args.quick else 2000)}
    results = {}
    print("%-12s %-10s %7s %9s %9s %9s %13s %5s %5s %5s" % (
        "system", "churn", "cycles", "RSS0 KiB", "RSS½ KiB", "RSS1 KiB", "2nd half RSS", "fd0", "fd½", "fd1"))
    for name in [n.strip() for n in args.systems.split(",") if n.strip()]:
        for kind in ("connect", "instances"):
            sysobj = systems.BY_NAME[name]()
            try:
                sysobj.start()
                r = churn(sysobj, kind, counts[kind])
            except systems.Unavailable as e:
                r = {"error": str(e)}
            except (OSError, ConnectionError, BusError) as e:
                r = {"error": "%s: %s" % (type(e).__name__, e)}
            finally:
                sysobj.stop()
            results[(name, kind)] = r
            if "error" in r:
                print("%-12s %-10s %7d  %s" % (name, kind, counts[kind], r["error"]))
                continue
            print("%-12s %-10s %7d %9d %9d %9d %12.2f%% %5d %5d %5d" % (
                name, kind, counts[kind], r["rss_start"] // 1024, r["rss_half"] // 1024, r["rss_end"] // 1024,
                r["growth_second_half_pct"], r["fds_start"], r["fds_half"], r["fds_end"]), flush=True)
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
