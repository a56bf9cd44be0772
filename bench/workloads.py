"""The workloads. Each one is a function ``fn(target, size) -> metrics``.

``target`` is a started system (``service_address``, ``client_address``,
``broker_pids``) with the echo service already running; ``size`` is the
number of operations (calls, signals, connections) to time, from
``SIZES``. Metrics (all optional except ``ops_per_s``):

  ops_per_s        operations per second (higher is better)
  cpu_us_per_op    broker CPU (utime+stime, summed over broker_pids) per
                   operation, in microseconds (lower is better)
  p50_us, p99_us   per-operation latency (lower is better)
  rss_kib          broker RSS at the end of the workload (lower is better)
  rss_per_conn_b   broker RSS growth per idle connection (lower is better)

The load side is deliberately cheap: messages are marshalled once,
only the serial is patched, writes are batched, and replies are framed
from the fixed 16-byte header without being parsed.
"""

import multiprocessing
import os
import resource
import selectors
import socket
import struct
import time
import types

from . import wire
from .conn import BusError, Conn, recv_with_fds, request_name
from .names import ECHO_IFACE, ECHO_NAME, ECHO_PATH, EMITTER_NAME, SIGNAL_IFACE
from .procstat import Meter

SETTLE_S = 0.05       # let the broker finish trailing work before reading CPU
NOISE_RULES = 10000   # non-matching match rules in the broadcast workloads
BROADCAST_BATCH = 8   # signals emitted per write in the broadcast workloads
IDLE_BUDGET_S = 60    # stop opening idle connections after this long
IO_TIMEOUT_S = 30     # give up on a stalled bus after this long without data

_pack_serial = struct.Struct("<I").pack_into
_head = struct.Struct("<4xIII")


def echo_call(signature="s", values=("hello",), **kw):
    return wire.method_call(ECHO_NAME, ECHO_PATH, ECHO_IFACE, "Echo",
                            signature, values, **kw)


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[i]


def _finish(meter, ops, elapsed, latencies_ns=None, **extra):
    time.sleep(SETTLE_S)
    cpu = meter.stop()
    out = {"ops_per_s": ops / elapsed, "cpu_us_per_op": cpu * 1e6 / ops,
           "sys_us_per_op": meter.system_seconds * 1e6 / ops,
           "rss_kib": meter.rss() / 1024.0}
    if latencies_ns:
        lat = sorted(latencies_ns)
        out["p50_us"] = percentile(lat, 50) / 1000.0
        out["p99_us"] = percentile(lat, 99) / 1000.0
    out.update(extra)
    return out


def client(target, **kw):
    c = Conn(target.client_address, **kw)
    sync(c)
    return c


def sync(conn):
    """Round trip to the bus so everything it queued for us (NameAcquired)
    has arrived; then forget it."""
    # GetId, except where it is refused: a mediated container connection may
    # not learn the bus id (and xdg-dbus-proxy refuses Peer.Ping instead).
    try:
        conn.call(wire.bus_call("GetId"))
    except BusError:
        conn.call(wire.bus_call("Ping", interface="org.freedesktop.DBus.Peer"))
    conn.drain()


# --------------------------------------------------------------------------
# Hot loops
# --------------------------------------------------------------------------

def _read_one_reply(sock, buf, with_fds=False):
    """Block until one whole message is in ``buf``; return (buf_rest, type)."""
    while True:
        if len(buf) >= 16:
            body_len, _serial, fields_len = _head.unpack_from(buf)
            n = 16 + fields_len + (-fields_len % 8) + body_len
            if len(buf) >= n:
                return buf[n:], buf[1]
        if with_fds:
            data, fds = recv_with_fds(sock, 1 << 20)
            for fd in fds:
                os.close(fd)
        else:
            data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("bus closed the connection")
        buf += data


def sequential_calls(conn, msg, n, fd=None):
    """n calls, one at a time. Returns (elapsed_s, latencies_ns, errors)."""
    sock, serial = conn.sock, conn.serial
    perf = time.perf_counter_ns
    lat = []
    errors = 0
    buf = b""
    anc = None
    if fd is not None:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
    t_start = perf()
    for _ in range(n):
        serial += 1
        _pack_serial(msg, 8, serial)
        t0 = perf()
        if anc:
            if sock.sendmsg([msg], anc) != len(msg):
                raise ConnectionError("short write with fd")
        else:
            sock.sendall(msg)
        buf, mtype = _read_one_reply(sock, buf, with_fds=anc is not None)
        lat.append(perf() - t0)
        if mtype != wire.METHOD_RETURN:
            errors += 1
    elapsed = (perf() - t_start) / 1e9
    conn.serial = serial
    return elapsed, lat, errors


def pipelined_calls(conn, msg, n, window):
    """n calls with up to ``window`` in flight. Returns (elapsed_s, errors)."""
    sock, serial = conn.sock, conn.serial
    sent = done = errors = 0
    buf = bytearray()
    t0 = time.perf_counter()
    while done < n:
        k = min(window - (sent - done), n - sent)
        if k > 0:
            out = bytearray()
            for _ in range(k):
                serial += 1
                _pack_serial(msg, 8, serial)
                out += msg
            sock.sendall(out)
            sent += k
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("bus closed the connection")
        buf += data
        off, have = 0, len(buf)
        while have - off >= 16:
            body_len, _s, fields_len = _head.unpack_from(buf, off)
            m = 16 + fields_len + (-fields_len % 8) + body_len
            if have - off < m:
                break
            if buf[off + 1] != wire.METHOD_RETURN:
                errors += 1
            done += 1
            off += m
        del buf[:off]
    conn.serial = serial
    return time.perf_counter() - t0, errors


def _check(errors, what="calls"):
    if errors:
        raise RuntimeError("%d %s got an error reply" % (errors, what))


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

def sequential(target, size):
    """One client, one call at a time (client -> echo service -> reply)."""
    conn = client(target)
    msg = echo_call()
    sequential_calls(conn, msg, min(200, size))          # warm-up
    meter = Meter(target.broker_pids)
    meter.start()
    elapsed, lat, errors = sequential_calls(conn, msg, size)
    _check(errors)
    conn.close()
    return _finish(meter, size, elapsed, lat)


def inflight(target, size, window=64):
    """One client keeping 64 calls in flight."""
    conn = client(target)
    msg = echo_call()
    pipelined_calls(conn, msg, min(500, size), window)
    meter = Meter(target.broker_pids)
    meter.start()
    elapsed, errors = pipelined_calls(conn, msg, size, window)
    _check(errors)
    conn.close()
    return _finish(meter, size, elapsed)


def _two_clients_worker(address, size, barrier, results):
    conn = client(types.SimpleNamespace(client_address=address))
    msg = echo_call()
    sequential_calls(conn, msg, min(200, size))
    barrier.wait()
    elapsed, lat, errors = sequential_calls(conn, msg, size)
    results.put((time.time(), elapsed, lat[::max(1, len(lat) // 2000)], errors))
    conn.close()


def two_clients(target, size, nclients=2):
    """Two client processes making sequential calls at the same time."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(nclients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_two_clients_worker,
                         args=(target.client_address, size, barrier, results))
             for _ in range(nclients)]
    for p in procs:
        p.start()
    meter = Meter(target.broker_pids)
    barrier.wait(timeout=60)
    meter.start()
    t0 = time.time()
    got = [results.get(timeout=IO_TIMEOUT_S + size) for _ in procs]
    for p in procs:
        p.join()
    wall = max(end for end, *_ in got) - t0
    _check(sum(e for *_, e in got))
    lat = [x for *_, l, _e in got for x in l]
    return _finish(meter, size * nclients, wall, lat)


def _broadcast(target, size, nsubs, noise=NOISE_RULES):
    # The emitter owns its name before anyone subscribes, so no
    # NameOwnerChanged (xdg-dbus-proxy synthesizes some) lands mid-run.
    emitter = Conn(target.service_address)
    request_name(emitter, EMITTER_NAME)
    sync(emitter)
    per_sub = noise // nsubs
    subs = []
    for i in range(nsubs):
        c = client(target)
        rules = [wire.bus_call("AddMatch", "s", (
            "type='signal',interface='%s',member='Noise%d'" % (SIGNAL_IFACE, i * per_sub + j),))
            for j in range(per_sub)]
        rules.append(wire.bus_call("AddMatch", "s", (
            "type='signal',interface='%s',member='Tick'" % SIGNAL_IFACE,)))
        c.call_many(rules)
        subs.append(c)
    signal_msg = wire.message(wire.SIGNAL, path=ECHO_PATH, interface=SIGNAL_IFACE,
                              member="Tick", signature="s", body_values=("tick",))

    # One warm-up signal tells us the delivered size (the bus adds SENDER);
    # from then on subscribers only count bytes.
    emitter.send(signal_msg)
    sizes = set()
    for c in subs:
        frames = list(c.pending)
        while not any(_is_tick(f) for f in frames):
            frames += c.read_frames()
        if not _is_tick(frames[-1]):
            raise RuntimeError("unexpected traffic on a subscriber after the warm-up signal")
        sizes.add(len(frames[-1]))
        c.sock.setblocking(False)
    if len(sizes) != 1:
        raise RuntimeError("subscribers saw different signal sizes: %r" % sizes)
    delivered_size = sizes.pop()

    sel = selectors.DefaultSelector()
    received = {}
    for c in subs:
        sel.register(c.sock, selectors.EVENT_READ, c)
        received[c] = 0
    sock, serial = emitter.sock, emitter.serial
    meter = Meter(target.broker_pids)
    meter.start()
    t0 = time.perf_counter()
    sent = 0
    while sent < size:
        k = min(BROADCAST_BATCH, size - sent)
        out = bytearray()
        for _ in range(k):
            serial += 1
            _pack_serial(signal_msg, 8, serial)
            out += signal_msg
        sock.sendall(out)
        sent += k
        want = sent * delivered_size
        lagging = sum(1 for c in subs if received[c] < want)
        while lagging:
            ready = sel.select(timeout=IO_TIMEOUT_S)
            if not ready:
                raise TimeoutError("%d subscribers stopped receiving signals" % lagging)
            for key, _ in ready:
                c = key.data
                try:
                    n = len(c.sock.recv(1 << 20))
                except BlockingIOError:
                    continue
                if not n:
                    raise ConnectionError("subscriber disconnected")
                before = received[c]
                received[c] = before + n
                if before < want <= received[c]:
                    lagging -= 1
    elapsed = time.perf_counter() - t0
    if any(v != size * delivered_size for v in received.values()):
        raise RuntimeError("subscribers received extra or partial messages")
    result = _finish(meter, size, elapsed, subscribers=nsubs)
    for c in subs:
        c.close()
    emitter.close()
    return result


def _is_tick(frame):
    return frame[1] == wire.SIGNAL and wire.header_fields(frame).get(wire.F_MEMBER) == "Tick"


def broadcast_10(target, size):
    """A signal to 10 subscribers (10k non-matching rules installed)."""
    return _broadcast(target, size, 10)


def broadcast_100(target, size):
    """A signal to 100 subscribers (10k non-matching rules installed)."""
    return _broadcast(target, size, 100)


def payload_1mib(target, size):
    """Sequential calls with a 1 MiB ``ay`` body, echoed back."""
    conn = client(target)
    msg = echo_call("ay", (bytes(1 << 20),))
    sequential_calls(conn, msg, 2)
    meter = Meter(target.broker_pids)
    meter.start()
    elapsed, lat, errors = sequential_calls(conn, msg, size)
    _check(errors)
    conn.close()
    return _finish(meter, size, elapsed, lat)


def fd_passing(target, size):
    """Sequential calls carrying one unix fd (echoed back with the reply)."""
    conn = client(target, unix_fds=True)
    msg = echo_call("h", (0,), unix_fds=1)
    r, w = os.pipe()
    try:
        sequential_calls(conn, msg, min(100, size), fd=r)     # warm-up
        meter = Meter(target.broker_pids)
        meter.start()
        elapsed, lat, errors = sequential_calls(conn, msg, size, fd=r)
        _check(errors)
    finally:
        os.close(r)
        os.close(w)
        conn.close()
    return _finish(meter, size, elapsed, lat)


def repeat(target, conn, workload):
    """run(n): n operations of workload ("sequential" calls on conn, or
    "connect_hello" connections), for the counting tools
    (bench/instructions.py, bench/syscalls.py)."""
    if workload == "connect_hello":
        def run(n):
            for _ in range(n):
                Conn(target.client_address).close()
    else:
        msg = echo_call()

        def run(n):
            sequential_calls(conn, msg, n)
    return run


def connect_hello(target, size):
    """Connect, authenticate, Hello, disconnect: connections per second."""
    for _ in range(min(20, size)):
        Conn(target.client_address).close()
    meter = Meter(target.broker_pids)
    meter.start()
    perf = time.perf_counter_ns
    lat = []
    t0 = perf()
    for _ in range(size):
        t = perf()
        Conn(target.client_address).close()
        lat.append(perf() - t)
    elapsed = (perf() - t0) / 1e9
    return _finish(meter, size, elapsed, lat)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft < want:
        for new_hard in (max(hard, want), hard):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
                break
            except (ValueError, OSError):
                continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def idle_connections(target, size):
    """Open ``size`` idle connections (Hello'd); broker RSS growth per connection.

    Capped by RLIMIT_NOFILE (a proxy needs two fds per connection) and by
    IDLE_BUDGET_S; the JSON records how many were actually opened."""
    # A proxy in front holds two fds per client connection.
    fd_cost = 2 if target.client_address != target.service_address else 1
    soft = raise_nofile(size)
    size = min(size, (soft - 256) // fd_cost)
    meter = Meter(target.broker_pids)
    time.sleep(SETTLE_S)
    rss0 = meter.rss()
    meter.start()
    conns = []
    t0 = time.perf_counter()
    try:
        for _ in range(size):
            try:
                conns.append(Conn(target.client_address))
            except (OSError, ConnectionError) as e:
                raise RuntimeError("connection #%d failed: %s" % (len(conns) + 1, e)) from e
            if time.perf_counter() - t0 > IDLE_BUDGET_S:
                break       # a slow broker (or proxy): measure what we have
        elapsed = time.perf_counter() - t0
        size = len(conns)
        sync(conns[-1])
        time.sleep(0.2)
        rss1 = meter.rss()
        return _finish(meter, size, elapsed, connections=size,
                       rss_per_conn_b=(rss1 - rss0) / size)
    finally:
        for c in conns:
            c.close()


def jeepney_sequential(target, size):
    """Blocking jeepney client, sequential calls (a stock client library)."""
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection
    conn = open_dbus_connection(bus=target.client_address)
    addr = DBusAddress(ECHO_PATH, bus_name=ECHO_NAME, interface=ECHO_IFACE)
    try:
        for _ in range(min(100, size)):
            conn.send_and_get_reply(new_method_call(addr, "Echo", "s", ("hello",)))
        meter = Meter(target.broker_pids)
        meter.start()
        perf = time.perf_counter_ns
        lat = []
        t0 = perf()
        for _ in range(size):
            t = perf()
            reply = conn.send_and_get_reply(new_method_call(addr, "Echo", "s", ("hello",)))
            lat.append(perf() - t)
            if reply.header.message_type.value != wire.METHOD_RETURN:
                raise RuntimeError("error reply: %r" % (reply.body,))
        elapsed = (perf() - t0) / 1e9
    finally:
        conn.close()
    return _finish(meter, size, elapsed, lat)


def _noise_rule_holders(target, count, per_conn=25000):
    """Connections holding ``count`` match rules that never match (spread
    out: a bus limits rules per connection)."""
    holders, done = [], 0
    while done < count:
        k = min(per_conn, count - done)
        c = client(target)
        c.call_many([wire.bus_call("AddMatch", "s", (
            "type='signal',interface='%s',member='Idle%d'" % (SIGNAL_IFACE, done + j),))
            for j in range(k)])
        holders.append(c)
        done += k
    return holders


def _flatness(low, high, scale_name, scale):
    high = dict(high)
    high["cpu_us_low"] = low["cpu_us_per_op"]
    high["flatness"] = high["cpu_us_per_op"] / low["cpu_us_per_op"] if low["cpu_us_per_op"] else float("nan")
    high[scale_name] = scale
    return high


def scaling_rules(target, size):
    """Broadcast to one subscriber with no other rules, then with 100k
    (10k in quick mode) non-matching rules installed: flatness = cost ratio."""
    scale = 100000 if size >= 1000 else 10000
    low = _broadcast(target, size, 1, noise=0)
    holders = _noise_rule_holders(target, scale)
    try:
        high = _broadcast(target, size, 1, noise=0)
    finally:
        for c in holders:
            c.close()
    return _flatness(low, high, "rules", scale)


def scaling_connections(target, size):
    """Sequential calls with no other clients, then with 10k (500 in quick
    mode) idle connections open: flatness = cost ratio."""
    scale = 10000 if size >= 1000 else 500
    low = sequential(target, size)
    fd_cost = 2 if target.client_address != target.service_address else 1
    scale = min(scale, (raise_nofile(scale * fd_cost) - 256) // fd_cost)
    idle = []
    t0 = time.perf_counter()
    try:
        while len(idle) < scale and time.perf_counter() - t0 < IDLE_BUDGET_S:
            idle.append(Conn(target.client_address))
        high = sequential(target, size)
    finally:
        for c in idle:
            c.close()
    return _flatness(low, high, "connections", len(idle))


def jeepney_available():
    try:
        import jeepney.io.blocking  # noqa: F401
        return True
    except ImportError:
        return False


# name -> (function, full size, quick size, unit of one operation)
WORKLOADS = {
    "sequential": (sequential, 20000, 300, "call"),
    "inflight": (inflight, 50000, 500, "call"),
    "two_clients": (two_clients, 10000, 200, "call"),
    "broadcast_10": (broadcast_10, 3000, 100, "signal"),
    "broadcast_100": (broadcast_100, 1000, 50, "signal"),
    "payload_1mib": (payload_1mib, 200, 10, "call"),
    "fd_passing": (fd_passing, 5000, 200, "call"),
    "connect_hello": (connect_hello, 2000, 100, "connection"),
    "idle_connections": (idle_connections, 10000, 2000, "connection"),
    "jeepney_sequential": (jeepney_sequential, 5000, 200, "call"),
    "scaling_rules": (scaling_rules, 20000, 200, "signal"),
    "scaling_connections": (scaling_connections, 20000, 300, "call"),
}
