"""A mutation fuzzer against a real bus: ``python -m bench.fuzz --messages N``.

Our own mutator over valid messages: SASL scripts, framing (lengths, byte
order, version, type, split writes), header fields, bodies (bytes flipped or
set, lengths rewritten, cut, grown, bodies under the wrong signature) and
driver calls with random arguments.  Attack connections send them to a sink
peer (unicast), as broadcasts, and to the driver.  Alongside, a well-behaved
peer keeps making calls to the sink, which echoes them.

Printed counts (``must be 0`` ones make the exit status non-zero):

* crashes: the daemon exited;
* tracebacks: "Traceback" lines in the daemon's log;
* senders disconnected: attack connections the bus closed (expected);
* invalid frames forwarded: frames the sink received that the strict
  unmarshaller (sandbus.wire.marshal.Reader, header and body) rejects;
* lost / reordered / corrupted: the well-behaved peer's replies that did not
  come back, came back out of order, or came back changed.
"""

import argparse
import os
import random
import socket
import struct
import sys
import threading
import time

from sandbus.wire.marshal import MarshalError, Variant, marshal, unmarshal
from sandbus.wire.message import (
    METHOD_CALL, METHOD_RETURN, NO_REPLY_EXPECTED, SIGNAL, ERROR, ProtocolError, build_message,
    message_length,
)
from sandbus.wire.signature import SignatureError, split_signature

from . import systems
from .conn import Conn, parse_address

SINK = "org.sandbus.FuzzSink"
SINK_PATH = "/org/sandbus/FuzzSink"
ECHO_IFACE = "org.sandbus.FuzzEcho"
DRIVER = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"
STOP_TIMEOUT = 30.0

# -- random values for a signature ------------------------------------------------

_SIGNATURES = ["s", "u", "b", "y", "o", "g", "v", "as", "ay", "ai", "ab", "ad", "at", "a{sv}", "a{us}",
               "(su)", "(a{sv}as)", "sa{sv}as", "ssu", "aay", "a(oa{sa{sv}})", "av", "a{sa{sv}}",
               "(yv)", "vvv", "nqxt", "ah"]
_STRINGS = ["", "x", "org.example.Name", ":1.1", "/", "Grüße", "a" * 300, SINK, DRIVER,
            "type='signal'", "arg0='x'", "org.freedesktop.DBus", "\u2603"]
_PATHS = ["/", "/a", "/org/example/obj_1", SINK_PATH, DRIVER_PATH, "/a/b/c"]


def random_signature(rng, depth=0):
    if depth > 3 or rng.random() < 0.6:
        return rng.choice("ybnqiuxtdsogv")
    kind = rng.random()
    if kind < 0.4:
        return "a" + random_signature(rng, depth + 1)
    if kind < 0.7:
        return "a{" + rng.choice("ysuo") + random_signature(rng, depth + 1) + "}"
    return "(" + "".join(random_signature(rng, depth + 1) for _ in range(rng.randint(1, 3))) + ")"


def random_value(rng, t, depth=0):
    c = t[0]
    if c == "y":
        return rng.randrange(256)
    if c == "b":
        return rng.random() < 0.5
    if c in "nqiuxth":
        bits = {"n": 15, "q": 16, "i": 31, "u": 32, "x": 63, "t": 64, "h": 0}[c]
        if c == "h":
            return 0
        signed = c in "nix"
        v = rng.choice([0, 1, 2**bits - 1, rng.getrandbits(bits)])
        return -v - 1 if signed and rng.random() < 0.3 else v
    if c == "d":
        return rng.choice([0.0, -1.5, 1e300, float("inf")])
    if c == "s":
        return rng.choice(_STRINGS)
    if c == "o":
        return rng.choice(_PATHS)
    if c == "g":
        return rng.choice(_SIGNATURES[:12])
    if c == "v":
        sig = random_signature(rng, depth + 1) if depth < 3 else "s"
        return Variant(sig, random_value(rng, sig, depth + 1))
    if c == "a":
        elem = t[1:]
        n = rng.choice([0, 1, 2, 3, 8])
        if elem == "y":
            return bytes(rng.getrandbits(8) for _ in range(n))
        if elem == "h":
            return []  # attackers pass no fds, so only an empty array of them is valid
        if elem[0] == "{":
            k, v = split_signature(elem[1:-1])
            return {random_value(rng, k, depth + 1): random_value(rng, v, depth + 1) for _ in range(n)}
        return [random_value(rng, elem, depth + 1) for _ in range(n)]
    if c == "(":
        return tuple(random_value(rng, x, depth + 1) for x in split_signature(t[1:-1]))
    raise ValueError(t)


def random_body(rng, sig=None):
    sig = sig or rng.choice(_SIGNATURES + [random_signature(rng) for _ in range(3)])
    values = [random_value(rng, t) for t in split_signature(sig)]
    return sig, values


# -- seed messages -----------------------------------------------------------------

_DRIVER_METHODS = [
    ("Hello", ""), ("RequestName", "su"), ("ReleaseName", "s"), ("AddMatch", "s"), ("RemoveMatch", "s"),
    ("GetNameOwner", "s"), ("NameHasOwner", "s"), ("ListNames", ""), ("ListActivatableNames", ""),
    ("ListQueuedOwners", "s"), ("GetConnectionUnixUser", "s"), ("GetConnectionUnixProcessID", "s"),
    ("GetConnectionCredentials", "s"), ("GetAdtAuditSessionData", "s"),
    ("GetConnectionSELinuxSecurityContext", "s"), ("StartServiceByName", "su"),
    ("UpdateActivationEnvironment", "a{ss}"), ("GetId", ""), ("ReloadConfig", ""),
]
_OTHER_DRIVER = [
    ("org.freedesktop.DBus.Peer", "Ping", ""), ("org.freedesktop.DBus.Peer", "GetMachineId", ""),
    ("org.freedesktop.DBus.Introspectable", "Introspect", ""),
    ("org.freedesktop.DBus.Properties", "GetAll", "s"), ("org.freedesktop.DBus.Properties", "Get", "ss"),
    ("org.freedesktop.DBus.Properties", "Set", "ssv"),
    ("org.freedesktop.DBus.Containers1", "AddServer", "ssa{sv}a{sv}"),
    ("org.freedesktop.DBus.Containers1", "StopInstance", "o"),
    ("org.freedesktop.DBus.Containers1", "GetInstanceInfo", "o"),
    ("org.freedesktop.DBus.Monitoring", "BecomeMonitor", "asu"),
]
_NAMES = ["org.sandbus.Fuzz%d" % i for i in range(4)] + [SINK, DRIVER, ":1.1", "org.x", "a..b", ""]


def _driver_args(rng, member, sig, expected=None):
    if not sig:
        return sig, []
    if expected is not None and sig != expected:
        return sig, [random_value(rng, t) for t in split_signature(sig)]
    if member in ("RequestName", "StartServiceByName"):
        return sig, [rng.choice(_NAMES), rng.choice([0, 1, 2, 4, 7, 2**32 - 1])]
    if member in ("AddMatch", "RemoveMatch"):
        rule = rng.choice(["type='signal'", "arg0='x'", "arg3path='/a/'", "arg0namespace='org'",
                           "sender='%s'" % SINK, "eavesdrop=true", "member='M',path_namespace='/a'",
                           "type='nope'", "arg64='x'", "'", "interface='a.b'," * 20])
        return sig, [rule]
    if sig == "s":
        return sig, [rng.choice(_NAMES)]
    return sig, [random_value(rng, t) for t in split_signature(sig)]


def seed_message(rng, serial, sink_unique):
    """A valid message for an attacker to send (and to mutate)."""
    kind = rng.random()
    flags = NO_REPLY_EXPECTED if rng.random() < 0.7 else 0
    if kind < 0.35:
        sig, values = random_body(rng)
        return build_message(METHOD_CALL, serial, path=rng.choice(_PATHS), interface="org.sandbus.Attack",
                             member="Call", destination=rng.choice([SINK, sink_unique]),
                             signature=sig, body=values, flags=flags)
    if kind < 0.6:
        sig, values = random_body(rng)
        if rng.random() < 0.5 and sig[0] == "s":
            values[0] = rng.choice(["x", "y", "org.example"])
        return build_message(SIGNAL, serial, path=rng.choice(_PATHS), interface="org.sandbus.Attack",
                             member="Signal", signature=sig, body=values, flags=flags)
    if kind < 0.85:
        member, expected = rng.choice(_DRIVER_METHODS)
        sig = random_signature(rng) if rng.random() < 0.2 else expected  # sometimes the wrong arguments
        sig, values = _driver_args(rng, member, sig, expected)
        return build_message(METHOD_CALL, serial, path=DRIVER_PATH, interface=DRIVER, member=member,
                             destination=DRIVER, signature=sig, body=values, flags=flags)
    if kind < 0.93:
        iface, member, sig = rng.choice(_OTHER_DRIVER)
        if member == "BecomeMonitor":
            # a monitor may send nothing more; keep it rare, and wrong
            sig = "asus"
        sig, values = _driver_args(rng, member, sig, None if member != "BecomeMonitor" else sig)
        if member == "BecomeMonitor":
            values = [[], 0, "x"]
        return build_message(METHOD_CALL, serial, path=DRIVER_PATH, interface=iface, member=member,
                             destination=DRIVER, signature=sig, body=values, flags=flags)
    mtype = rng.choice([METHOD_RETURN, ERROR])
    sig, values = random_body(rng)
    return build_message(mtype, serial, reply_serial=rng.randint(1, 1000), destination=sink_unique,
                         error_name="org.sandbus.Error" if mtype == ERROR else None,
                         signature=sig, body=values)


# -- mutations -----------------------------------------------------------------------

_INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF,
                    0x80000000, 0xFFFFFFFF, 64 * 1024 * 1024, 64 * 1024 * 1024 + 1]


def _body_start(data):
    endian = "<" if data[0:1] == b"l" else ">"
    fields_len = struct.unpack_from(endian + "I", data, 12)[0]
    return 16 + fields_len + (-fields_len % 8), endian


def _set_body(data, body):
    start, endian = _body_start(data)
    out = bytearray(data[:start]) + body
    struct.pack_into(endian + "I", out, 4, len(body))
    return bytes(out)


def mutate_body(rng, data):
    start, endian = _body_start(data)
    body = bytearray(data[start:])
    how = rng.random()
    if how < 0.3 and body:
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(body))
            body[i] = rng.choice([body[i] ^ (1 << rng.randrange(8)), rng.randrange(256), 0, 0xFF, 0x80])
    elif how < 0.5 and len(body) >= 4:
        i = rng.randrange(0, len(body) - 3) & ~3
        struct.pack_into(endian + "I", body, i, rng.choice(_INTERESTING_U32))
    elif how < 0.65 and body:
        del body[rng.randrange(len(body)):]
    elif how < 0.8:
        body += bytes(rng.choice([0, 1, 0xFF]) for _ in range(rng.randint(1, 9)))
    else:
        # a valid body of another signature under this one's signature
        other_sig, values = random_body(rng)
        body = bytearray(marshal(other_sig, values, "l" if endian == "<" else "B"))
    return _set_body(data, bytes(body))


def mutate_header(rng, data):
    start, endian = _body_start(data)
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(16, max(17, start))
        out[i] = rng.choice([out[i] ^ (1 << rng.randrange(8)), rng.randrange(256), 0])
    return bytes(out)


def mutate_frame(rng, data):
    """Framing: the fixed header.  Returns bytes whose lengths may lie."""
    out = bytearray(data)
    how = rng.random()
    if how < 0.2:
        out[0] = rng.choice(b"lBxX\0")
    elif how < 0.35:
        out[1] = rng.choice([0, 1, 2, 3, 4, 5, 0xFF])
    elif how < 0.45:
        out[3] = rng.choice([0, 2, 0xFF])
    elif how < 0.55:
        out[8:12] = b"\0\0\0\0"  # serial 0
    elif how < 0.8:
        endian = "<" if out[0:1] == b"l" else ">"
        struct.pack_into(endian + "I", out, rng.choice([4, 12]),
                         rng.choice([0, 1, 7, 8, 0xFFFF, 0x7FFFFFF, 0x8000000, 0xFFFFFFFF]))
    else:
        del out[rng.randrange(len(out)):]
    return bytes(out)


def sasl_script(rng):
    uid = str(os.getuid()).encode().hex().encode()
    lines = [b"AUTH EXTERNAL " + uid, b"AUTH EXTERNAL", b"DATA " + uid, b"DATA", b"AUTH ANONYMOUS",
             b"AUTH ANONYMOUS 6869", b"AUTH DBUS_COOKIE_SHA1 " + b"root".hex().encode(), b"CANCEL", b"ERROR",
             b"ERROR \"x\"", b"NEGOTIATE_UNIX_FD", b"BEGIN", b"AUTH", b"AUTH BOGUS", b"OK 1234",
             b"AUTH EXTERNAL " + (b"9" * rng.choice([10, 11, 5000])).hex().encode(),
             b"AUTH EXTERNAL zz", b"DATA " + bytes(rng.getrandbits(8) for _ in range(8)).hex().encode()]
    out = bytearray(b"\0" if rng.random() < 0.9 else bytes([rng.randrange(256)]))
    for _ in range(rng.randint(1, 6)):
        line = bytearray(rng.choice(lines))
        if rng.random() < 0.3 and line:
            line[rng.randrange(len(line))] = rng.randrange(256)
        if rng.random() < 0.05:
            line += b"A" * rng.choice([100, 17000])
        out += line + rng.choice([b"\r\n", b"\r\n", b"\r\n", b"\n", b""])
    return bytes(out)


# -- the strict judge of what the bus forwards ---------------------------------------


def strictly_valid(frame):
    """Header fields and body through the strict unmarshaller; None if fine,
    else why not.  Independent of wire/validate.py, which is under test."""
    try:
        endian = "l" if frame[0:1] == b"l" else "B" if frame[0:1] == b"B" else None
        if endian is None or frame[3] != 1:
            return "bad fixed header"
        e = "<" if endian == "l" else ">"
        body_len, serial, fields_len = struct.unpack_from(e + "III", frame, 4)
        start = 16 + fields_len + (-fields_len % 8)
        if start + body_len != len(frame) or serial == 0:
            return "lengths do not add up"
        (fields,) = unmarshal("a(yv)", frame, endian, 12, 16 + fields_len)
        if any(frame[16 + fields_len:start]):
            return "non-zero header padding"
        sig = ""
        for code, value in fields:
            if code == 8:
                sig = value.value
        values = unmarshal(sig, frame, endian, start, len(frame)) if sig else []
        if not sig and body_len:
            return "body without signature"
        del values
    except (MarshalError, SignatureError, ValueError, IndexError, struct.error) as e:
        return str(e) or type(e).__name__
    return None


class FrameStream:
    """Whole frames out of a byte stream, either byte order."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            try:
                n = message_length(self.buf)
            except ProtocolError as e:
                raise ConnectionError("unframeable bytes from the bus: %s" % e) from None
            if n is None or len(self.buf) < n:
                break
            out.append(bytes(self.buf[:n]))
            del self.buf[:n]
        return out


# -- the peers ----------------------------------------------------------------------


class Sink(threading.Thread):
    """Owns SINK, matches every signal, echoes the good peer's calls and
    judges every frame it receives."""

    def __init__(self, address):
        super().__init__(daemon=True)
        self.conn = Conn(address)
        self.unique_name = self.conn.unique_name
        self.conn.call(_bus("RequestName", "su", [SINK, 4]))
        for rule in ("type='signal'", "type='signal',arg0='x'", "type='signal',arg1path='/a/'",
                     "type='signal',arg0namespace='org'"):
            self.conn.call(_bus("AddMatch", "s", [rule]))
        self.good_peer = None
        self.frames = 0
        self.invalid = []
        self.stop = False
        self.error = None
        self.serial = 1000

    def run(self):
        stream = FrameStream()
        sock = self.conn.sock
        sock.settimeout(0.5)
        for frame in self.conn.pending:
            self._judge(frame)
        try:
            while not self.stop:
                try:
                    data = sock.recv(1 << 20)
                except socket.timeout:
                    continue
                if not data:
                    raise ConnectionError("the bus closed the sink's connection")
                replies = []
                for frame in stream.feed(data):
                    self._judge(frame)
                    if frame[1] == METHOD_CALL and self.good_peer is not None:
                        reply = self._echo(frame)
                        if reply:
                            replies.append(reply)
                if replies:
                    sock.settimeout(None)
                    sock.sendall(b"".join(replies))
                    sock.settimeout(0.5)
        except (OSError, ConnectionError) as e:
            if not self.stop:
                self.error = str(e)

    def _judge(self, frame):
        self.frames += 1
        why = strictly_valid(frame)
        if why is not None:
            self.invalid.append((why, frame[:200]))

    def _echo(self, frame):
        try:
            from sandbus.wire.message import Message
            m = Message(frame)
        except ProtocolError:
            return None
        if m.sender != self.good_peer or m.interface != ECHO_IFACE:
            return None
        self.serial += 1
        return build_message(METHOD_RETURN, self.serial, reply_serial=m.serial, destination=m.sender,
                             signature=m.signature, body=m.body())


class GoodPeer(threading.Thread):
    """Calls the sink with numbered payloads, a few in flight, and checks
    every reply: present, in order, unchanged."""

    WINDOW = 4

    def __init__(self, address, reply_timeout):
        super().__init__(daemon=True)
        self.conn = Conn(address)
        self.unique_name = self.conn.unique_name
        self.reply_timeout = reply_timeout
        self.calls = self.lost = self.reordered = self.corrupted = 0
        self.stop = False
        self.error = None
        self.latencies = []
        self.pause = 0.02

    def run(self):
        stream = FrameStream()
        sock = self.conn.sock
        seq = 0
        try:
            while not self.stop:
                sent = []
                batch = []
                for _ in range(self.WINDOW):
                    seq += 1
                    serial = self.conn.next_serial()
                    payload = ["n%d" % seq, seq, Variant("as", ["x"] * (seq % 5))]
                    batch.append(build_message(METHOD_CALL, serial, path=SINK_PATH, interface=ECHO_IFACE,
                                               member="Echo", destination=SINK, signature="suv", body=payload))
                    sent.append((serial, payload))
                t0 = time.monotonic()
                sock.sendall(b"".join(batch))
                self.calls += len(sent)
                got = []
                deadline = t0 + self.reply_timeout
                while len(got) < len(sent):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    sock.settimeout(left)
                    try:
                        data = sock.recv(1 << 16)
                    except socket.timeout:
                        break
                    if not data:
                        raise ConnectionError("the bus closed the good peer's connection")
                    for frame in stream.feed(data):
                        if frame[1] in (METHOD_RETURN, ERROR):
                            got.append(frame)
                self.latencies.append(time.monotonic() - t0)
                self._check(sent, got)
                time.sleep(self.pause)  # leave the bus to the attackers most of the time
        except (OSError, ConnectionError) as e:
            if not self.stop:
                self.error = str(e)

    def _check(self, sent, got):
        from sandbus.wire.message import Message
        serials = [s for s, _ in sent]
        seen = []
        for frame in got:
            m = Message(frame)
            if m.reply_serial not in serials:
                continue
            seen.append(m.reply_serial)
            want = dict(sent)[m.reply_serial]
            if m.type != METHOD_RETURN or m.body() != want:
                self.corrupted += 1
        self.lost += len(set(serials) - set(seen))
        if seen != sorted(seen):
            self.reordered += 1


def _bus(member, sig="", body=()):
    return bytearray(build_message(METHOD_CALL, 1, path=DRIVER_PATH, interface=DRIVER, member=member,
                                   destination=DRIVER, signature=sig, body=list(body)))


class Attacker:
    """One attack connection, reopened whenever the bus closes it."""

    def __init__(self, address):
        self.address = address
        self.conn = None
        self.serial = 1

    def ensure(self):
        if self.conn is None:
            self.conn = Conn(self.address, timeout=10)
            self.conn.sock.setblocking(False)
        return self.conn

    def send(self, data):
        """Send; drain what came back.  False if the bus closed us."""
        conn = self.ensure()
        sock = conn.sock
        view = memoryview(data)
        deadline = time.monotonic() + 10
        while view:
            try:
                n = sock.send(view)
                view = view[n:]
            except BlockingIOError:
                if not self.drain():
                    return False
                if time.monotonic() > deadline:
                    self.close()  # the bus stopped reading us without closing: not what we test
                    return True
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                self.close()
                return False
        return self.drain()

    def sync(self, timeout=10.0):
        """Round trip to the driver, so that everything sent before has been
        handled; False if the bus closed the connection instead."""
        serial = self.next_serial()
        ping = build_message(METHOD_CALL, serial, path="/", interface="org.freedesktop.DBus.Peer",
                             member="Ping", destination=DRIVER)
        if not self.send(ping):
            return False
        sock = self.conn.sock
        stream = FrameStream()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            except OSError:
                self.close()
                return False
            if not data:
                self.close()
                return False
            try:
                frames = stream.feed(data)
            except ConnectionError:
                self.close()
                return True
            for frame in frames:
                if frame[1] in (METHOD_RETURN, ERROR) and _reply_serial(frame) == serial:
                    return True
        self.close()  # no answer: a connection we can no longer use, not a disconnect
        return True

    def drain(self):
        sock = self.conn.sock
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                return True
            except (ConnectionResetError, OSError):
                self.close()
                return False
            if not data:
                self.close()
                return False

    def closed_by_bus(self, wait=2.0):
        """After a message that must end the connection: did the bus close it?"""
        sock = self.conn.sock
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.002)
                continue
            except OSError:
                self.close()
                return True
            if not data:
                self.close()
                return True
        return False

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def next_serial(self):
        self.serial = self.serial % 0xFFFFFFF0 + 1
        return self.serial


def _reply_serial(frame):
    from sandbus.wire.message import Message
    try:
        return Message(frame).reply_serial
    except ProtocolError:
        return None


def _sasl_attack(rng, address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(parse_address(address))
        s.sendall(sasl_script(rng))
        s.shutdown(socket.SHUT_WR) if rng.random() < 0.3 else None
        try:
            while s.recv(65536):
                pass
        except socket.timeout:
            pass
    except OSError:
        pass
    finally:
        s.close()


def run(messages, seed=1, system="sandbus", quiet=False, attackers=3, progress=0):
    """progress: print running counts every that many messages (0: every 10 s)."""
    rng = random.Random(seed)
    sysobj = systems.BY_NAME[system]()
    sysobj.start()
    counts = {"messages": 0, "sasl scripts": 0, "senders disconnected": 0}
    try:
        proc = sysobj.procs[0]
        address = sysobj.client_address
        sink = Sink(address)
        good = GoodPeer(address, reply_timeout=STOP_TIMEOUT)
        sink.good_peer = good.unique_name
        sink.start()
        good.start()
        pool = [Attacker(address) for _ in range(attackers)]
        t0 = time.monotonic()
        last = t0
        mark = progress
        crashed = False
        while counts["messages"] < messages:
            if proc.poll() is not None:
                crashed = True
                break
            r = rng.random()
            if r < 0.03:
                _sasl_attack(rng, address)
                counts["sasl scripts"] += 1
                counts["messages"] += 1
                continue
            a = rng.choice(pool)
            a.ensure()
            batch = []
            ends_connection = False
            for _ in range(rng.randint(1, 40)):
                data = seed_message(rng, a.next_serial(), sink.unique_name)
                r = rng.random()
                if r < 0.04:
                    data = mutate_frame(rng, data)
                    ends_connection = True  # lengths may lie: nothing after it is framed as meant
                elif r < 0.25:
                    data = mutate_header(rng, data)
                elif r < 0.6:
                    data = mutate_body(rng, data)
                batch.append(data)
                counts["messages"] += 1
                if ends_connection:
                    break
            if rng.random() < 0.1 and len(batch) > 1:
                # split writes at random places
                blob = b"".join(batch)
                cut = rng.randrange(1, len(blob))
                ok = a.send(blob[:cut]) and a.send(blob[cut:])
            else:
                ok = a.send(b"".join(batch))
            if ok and a.conn is not None:
                if ends_connection:
                    # its lengths may lie, so a Ping could be swallowed: wait for the close a while
                    ok = not a.closed_by_bus(0.05)
                    a.close()
                else:
                    ok = a.sync()
            if not ok:
                counts["senders disconnected"] += 1
            now = time.monotonic()
            if quiet:
                continue
            if progress:
                if counts["messages"] < mark:
                    continue
                while mark <= counts["messages"]:
                    mark += progress
            elif now - last <= 10:
                continue
            last = now
            print("  %d messages, %.0f/s, %d sasl scripts, %d senders disconnected, sink got %d frames "
                  "(%d invalid), good peer %d calls (lost %d, reordered %d, corrupted %d)"
                  % (counts["messages"], counts["messages"] / (now - t0), counts["sasl scripts"],
                     counts["senders disconnected"], sink.frames, len(sink.invalid), good.calls, good.lost,
                     good.reordered, good.corrupted), flush=True)
        # let the good peer finish what is in flight, then stop everyone
        calls_at_end = good.calls
        deadline = time.monotonic() + STOP_TIMEOUT
        while good.calls < calls_at_end + 2 * GoodPeer.WINDOW and time.monotonic() < deadline \
                and good.is_alive():
            time.sleep(0.05)
        for a in pool:
            a.close()
        good.stop = sink.stop = True
        good.join(STOP_TIMEOUT)
        sink.join(STOP_TIMEOUT)
        elapsed = time.monotonic() - t0
        crashed = crashed or proc.poll() is not None
        for p in reversed(sysobj.procs):
            systems._stop_process(p)
        tracebacks = _tracebacks(sysobj.path("daemon.log"))
    finally:
        sysobj.stop()
    result = dict(counts)
    result.update({
        "seconds": round(elapsed, 1),
        "crashes": int(crashed),
        "tracebacks in the daemon log": tracebacks,
        "frames at the sink": sink.frames,
        "invalid frames forwarded": len(sink.invalid),
        "good calls": good.calls,
        "lost": good.lost,
        "reordered": good.reordered,
        "corrupted": good.corrupted,
        "sink error": sink.error,
        "good peer error": good.error,
    })
    return result, sink.invalid


def _tracebacks(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"Traceback")
    except OSError:
        return -1


MUST_BE_ZERO = ("crashes", "tracebacks in the daemon log", "invalid frames forwarded", "lost", "reordered",
                "corrupted")


def failures(result):
    bad = [k for k in MUST_BE_ZERO if result[k]]
    if result["sink error"] or result["good peer error"]:
        bad.append("peer errors")
    return bad


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--system", default="sandbus", choices=["sandbus", "dbus-daemon"])
    p.add_argument("--attackers", type=int, default=3)
    p.add_argument("--progress", type=int, default=0, metavar="N",
                   help="print running counts every N messages (default: every 10 s)")
    args = p.parse_args(argv)
    result, invalid = run(args.messages, args.seed, args.system, attackers=args.attackers,
                          progress=args.progress)
    width = max(len(k) for k in result)
    for k, v in result.items():
        note = "  (must be 0)" if k in MUST_BE_ZERO else ""
        print("%-*s  %s%s" % (width, k, v, note))
    for why, head in invalid[:5]:
        print("  forwarded invalid frame: %s: %r" % (why, head[:80]))
    bad = failures(result)
    if bad:
        print("FAILED: " + ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
