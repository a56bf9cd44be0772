"""Shared helpers for the sandbus integration tests.

Every test in this directory runs against the daemon named by the
environment variable ``SANDBUS_TEST_DAEMON`` (default ``sandbus-daemon``).
The tests are written and verified against the reference implementation
(``SANDBUS_TEST_DAEMON=dbus-daemon``) so that each one encodes real
dbus-daemon 1.14 behaviour.

Nothing here sleeps for a fixed time where waiting for a condition works;
every subprocess and every blocking receive has a timeout.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterable, Optional

from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageType,
    new_error,
    new_method_call,
    new_method_return,
)
from jeepney.bus import get_bus
from jeepney.io.common import MessageFilters
from jeepney.io.blocking import DBusConnection, DBusConnectionBase, prep_socket

DAEMON = os.environ.get("SANDBUS_TEST_DAEMON", "sandbus-daemon")
DAEMON_NAME = os.path.basename(DAEMON.split()[0])
IS_DBUS_DAEMON = DAEMON_NAME == "dbus-daemon"
IS_SANDBUS = not IS_DBUS_DAEMON

# Default timeout for subprocesses and waits (seconds).
TIMEOUT = 10.0

SYSTEM_PYTHON = "/usr/bin/python3"

BUS_NAME = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
BUS_IFACE = "org.freedesktop.DBus"
DRIVER = DBusAddress(BUS_PATH, bus_name=BUS_NAME, interface=BUS_IFACE)

# RequestName flags and replies (D-Bus specification).
ALLOW_REPLACEMENT = 1
REPLACE_EXISTING = 2
DO_NOT_QUEUE = 4
PRIMARY_OWNER = 1
IN_QUEUE = 2
EXISTS = 3
ALREADY_OWNER = 4
# ReleaseName replies
RELEASED = 1
NON_EXISTENT = 2
NOT_OWNER = 3

MINIMAL_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  {extra}
</busconfig>
"""


def daemon_argv() -> list:
    return DAEMON.split()


def daemon_available() -> bool:
    return shutil.which(daemon_argv()[0]) is not None


# ---------------------------------------------------------------------------
# Starting and stopping a bus
# ---------------------------------------------------------------------------


class BusStartError(AssertionError):
    pass


class DaemonBus:
    """A running message bus under test."""

    def __init__(self, workdir: Path, config_file: Optional[Path] = None,
                 extra_args: Iterable[str] = ()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.socket_path = self.workdir / "bus"
        self.config_file = config_file
        self.stderr_path = self.workdir / "daemon.stderr"
        argv = daemon_argv()
        if config_file is None:
            argv.append("--session")
        else:
            argv.append(f"--config-file={config_file}")
        argv += [
            "--nofork",
            f"--address=unix:path={self.socket_path}",
            "--print-address=1",
            *extra_args,
        ]
        self.argv = argv
        self._stderr = open(self.stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                start_new_session=True,
            )
        except FileNotFoundError as e:
            self._stderr.close()
            raise BusStartError(f"cannot start {argv!r}: {e}") from None
        self.pid = self.proc.pid
        self.address = self._read_address()
        self.stopped = False

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _fail(self, what: str):
        rc = self.proc.poll()
        raise BusStartError(
            f"{what} (argv={self.argv!r}, returncode={rc})\n"
            f"--- daemon stderr ---\n{self.stderr_text()}"
        )

    def _read_address(self) -> str:
        deadline = time.monotonic() + TIMEOUT
        buf = b""
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                self._fail("daemon did not print its address in time")
            r, _, _ = select.select([fd], [], [], remaining)
            if not r:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                self.proc.wait(timeout=TIMEOUT)
                self._fail("daemon exited before printing its address")
            buf += chunk
        line = buf.split(b"\n", 1)[0].decode().strip()
        if not line.startswith("unix:"):
            self.kill()
            self._fail(f"unexpected address line {line!r}")
        return line

    def env(self, **extra) -> dict:
        return env_for(self, **extra)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT)

    def stop(self, check: bool = True):
        """SIGTERM the daemon; with check, assert a clean shutdown."""
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.proc.poll() is not None:
                if check:
                    self._fail("daemon died during the test")
                return
            # dbus-daemon prints its address before installing its SIGTERM
            # handler; one SASL round trip proves the main loop is running
            try:
                sasl_ping(str(self.socket_path))
            except OSError:
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
                if check:
                    self._fail("daemon did not exit within 5 s of SIGTERM")
                return
            if check:
                if self.proc.returncode != 0:
                    self._fail("daemon exited non-zero after SIGTERM")
                if self.socket_path.exists():
                    self._fail(f"socket {self.socket_path} not removed at exit")
        finally:
            if self.proc.stdout:
                self.proc.stdout.close()
            self._stderr.close()

    def alive(self) -> bool:
        return self.proc.poll() is None


def sasl_ping(path: str, timeout: float = TIMEOUT):
    """Authenticate on the socket (no Hello, so no unique name is used up)
    and hang up: shows the daemon's main loop is serving."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        buf = recv_line(s)
        if not buf.startswith(b"OK "):
            raise OSError(f"unexpected SASL reply {buf!r}")
    finally:
        s.close()


def env_for(bus: DaemonBus, **extra) -> dict:
    env = dict(os.environ)
    env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    env.pop("DBUS_STARTER_ADDRESS", None)
    env.update(extra)
    return env


def write_config(path: Path, extra: str = "", full: Optional[str] = None) -> Path:
    path = Path(path)
    path.write_text(full if full is not None else MINIMAL_CONFIG.format(extra=extra))
    return path


# ---------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------


def run(argv, bus: Optional[DaemonBus] = None, *, timeout: float = TIMEOUT,
        check: bool = True, input: Optional[str] = None, env=None):
    """Run a client tool against the bus. Failure messages include the
    tool's and the daemon's output."""
    if env is None:
        env = env_for(bus) if bus is not None else dict(os.environ)
    try:
        cp = subprocess.run(argv, env=env, capture_output=True, text=True,
                            timeout=timeout, input=input,
                            stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"{argv!r} timed out after {timeout}s\nstdout: {e.stdout!r}\n"
            f"stderr: {e.stderr!r}\n{_daemon_stderr(bus)}") from None
    if check and cp.returncode != 0:
        raise AssertionError(
            f"{argv!r} exited {cp.returncode}\nstdout: {cp.stdout}\n"
            f"stderr: {cp.stderr}\n{_daemon_stderr(bus)}")
    return cp


def _daemon_stderr(bus) -> str:
    if bus is None:
        return ""
    return f"--- daemon stderr ---\n{bus.stderr_text()}"


def run_dbus_python(bus: DaemonBus, code: str, *, timeout: float = TIMEOUT,
                    check: bool = True):
    """Run a dbus-python (python3-dbus) script under the system python. The
    script gets ``ADDRESS`` and a ready ``conn`` (dbus.bus.BusConnection)."""
    prelude = (
        "import os, sys, dbus\n"
        "ADDRESS = os.environ['DBUS_SESSION_BUS_ADDRESS']\n"
        "conn = dbus.bus.BusConnection(ADDRESS)\n"
    )
    return run([SYSTEM_PYTHON, "-c", prelude + code], bus, timeout=timeout,
               check=check)


class Background:
    """A long-running client subprocess (dbus-monitor, gdbus monitor...).
    Output is collected by a thread so the test can wait for lines."""

    def __init__(self, argv, bus: DaemonBus, env=None):
        self.argv = argv
        self.bus = bus
        self.proc = subprocess.Popen(
            argv, env=env or env_for(bus), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, start_new_session=True)
        self.lines: list = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()

    def _reader(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pred: Callable[[str], bool], timeout: float = TIMEOUT,
                 what: str = "output"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = "\n".join(self.lines)
                if pred(text):
                    return text
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None
                                      and not self._thread.is_alive()):
                    raise AssertionError(
                        f"{self.argv!r}: timed out waiting for {what}\n"
                        f"output so far:\n{text}\n{_daemon_stderr(self.bus)}")
                self._cond.wait(min(remaining, 0.2))

    def wait_for_text(self, needle: str, timeout: float = TIMEOUT):
        return self.wait_for(lambda t: needle in t, timeout, repr(needle))

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------
# A jeepney-based test client with an inbox
# ---------------------------------------------------------------------------


class DBusErrorReply(Exception):
    def __init__(self, msg: Message):
        self.msg = msg
        self.name = msg.header.fields.get(HeaderFields.error_name)
        self.text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
        super().__init__(f"{self.name}: {self.text}")


class Client:
    """A blocking jeepney connection that never loses messages: everything
    that is not the reply being waited for goes into ``inbox``."""

    def __init__(self, address: str, enable_fds: bool = False):
        # Like jeepney's open_dbus_connection, but Hello has a timeout too.
        sock = prep_socket(get_bus(address), enable_fds, timeout=TIMEOUT)
        conn = DBusConnection.__new__(DBusConnection)
        DBusConnectionBase.__init__(conn, sock, enable_fds)
        conn._filters = MessageFilters()
        self.conn = conn
        self.inbox: deque = deque()
        reply = self.call_msg(new_method_call(DRIVER, "Hello"))
        if reply.header.message_type != MessageType.method_return:
            conn.close()
            raise DBusErrorReply(reply)
        conn.unique_name = self.unique_name = reply.body[0]

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_serial(self) -> int:
        return next(self.conn.outgoing_serial)

    def send(self, msg: Message, serial: Optional[int] = None) -> int:
        if serial is None:
            serial = self.next_serial()
        self.conn.send(msg, serial=serial)
        return serial

    def receive(self, timeout: float = TIMEOUT) -> Message:
        if self.inbox:
            return self.inbox.popleft()
        return self.conn.receive(timeout=timeout)

    def call_msg(self, msg: Message, timeout: float = TIMEOUT) -> Message:
        """Send a method call, return the reply message (return or error)."""
        serial = self.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {msg.header.fields}")
            m = self.conn.receive(timeout=remaining)
            if (m.header.message_type in (MessageType.method_return, MessageType.error)
                    and m.header.fields.get(HeaderFields.reply_serial) == serial):
                return m
            self.inbox.append(m)

    def call(self, dest, path, iface, member, signature=None, body=(),
             timeout: float = TIMEOUT, flags: int = 0):
        """Call a method; return the reply body or raise DBusErrorReply."""
        addr = DBusAddress(path, bus_name=dest, interface=iface)
        msg = new_method_call(addr, member, signature, tuple(body))
        msg.header.flags |= flags
        reply = self.call_msg(msg, timeout)
        if reply.header.message_type == MessageType.error:
            raise DBusErrorReply(reply)
        return reply.body

    def bus(self, member, signature=None, *body, timeout: float = TIMEOUT):
        """Call a method on the bus driver."""
        return self.call(BUS_NAME, BUS_PATH, BUS_IFACE, member, signature, body,
                         timeout=timeout)

    def bus_error(self, member, signature=None, *body, iface=BUS_IFACE,
                  path=BUS_PATH) -> DBusErrorReply:
        try:
            r = self.call(BUS_NAME, path, iface, member, signature, body)
        except DBusErrorReply as e:
            return e
        raise AssertionError(f"{member} unexpectedly succeeded: {r!r}")

    def add_match(self, rule: str):
        self.bus("AddMatch", "s", rule)

    def wait_for(self, pred: Callable[[Message], bool], timeout: float = TIMEOUT,
                 what: str = "message") -> Message:
        """Wait for a matching message; earlier non-matching ones stay queued."""
        for i, m in enumerate(self.inbox):
            if pred(m):
                del self.inbox[i]
                return m
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out waiting for {what}; inbox: "
                    f"{[describe(m) for m in self.inbox]}")
            try:
                m = self.conn.receive(timeout=remaining)
            except TimeoutError:
                continue
            if pred(m):
                return m
            self.inbox.append(m)

    def wait_signal(self, member, timeout: float = TIMEOUT, **kw) -> Message:
        return self.wait_for(lambda m: is_signal(m, member, **kw), timeout,
                             f"signal {member} {kw}")

    def assert_no(self, pred: Callable[[Message], bool], sync: bool = True,
                  what: str = "message"):
        """Assert no matching message arrived. With sync, first round-trip a
        Ping to the bus: the bus processes messages in order, so anything it
        was going to send us before that reply has arrived by then."""
        if sync:
            self.bus("GetId")
        bad = [m for m in self.inbox if pred(m)]
        assert not bad, f"unexpected {what}: {[describe(m) for m in bad]}"

    def drain(self):
        """Round-trip to the bus and drop whatever was queued."""
        self.bus("GetId")
        self.inbox.clear()


def is_signal(m: Message, member=None, interface=None, path=None, sender=None,
              body0=None) -> bool:
    h = m.header
    if h.message_type != MessageType.signal:
        return False
    f = h.fields
    if member is not None and f.get(HeaderFields.member) != member:
        return False
    if interface is not None and f.get(HeaderFields.interface) != interface:
        return False
    if path is not None and f.get(HeaderFields.path) != path:
        return False
    if sender is not None and f.get(HeaderFields.sender) != sender:
        return False
    if body0 is not None and (not m.body or m.body[0] != body0):
        return False
    return True


def describe(m: Message) -> str:
    f = m.header.fields
    return (f"{m.header.message_type.name} {f.get(HeaderFields.sender)}->"
            f"{f.get(HeaderFields.destination)} {f.get(HeaderFields.path)} "
            f"{f.get(HeaderFields.interface)}.{f.get(HeaderFields.member)} "
            f"err={f.get(HeaderFields.error_name)} body={m.body!r}")


def error_name(m: Message) -> Optional[str]:
    return m.header.fields.get(HeaderFields.error_name)


def wait_until(pred: Callable[[], bool], timeout: float = TIMEOUT,
               what: str = "condition", interval: float = 0.01):
    """Poll pred (typically a bus round trip) until true."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def assert_bus_alive(bus: DaemonBus):
    """A fresh, well-behaved client can still use the bus."""
    assert bus.alive(), f"daemon died\n{bus.stderr_text()}"
    with Client(bus.address) as c:
        assert c.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Peer", "Ping") == ()
        names = c.bus("ListNames")[0]
        assert BUS_NAME in names and c.unique_name in names


# ---------------------------------------------------------------------------
# A service running in a thread (jeepney)
# ---------------------------------------------------------------------------


class ServiceError(Exception):
    def __init__(self, name: str, text: str = ""):
        super().__init__(text)
        self.name = name
        self.text = text


class Service:
    """Owns ``name`` and answers method calls from a thread.

    ``handlers`` maps member name -> f(msg) returning (signature, body) or
    raising ServiceError. Unknown members get UnknownMethod. ``calls``
    records (sender, member, body) for every call received."""

    def __init__(self, address: str, name: Optional[str], handlers: dict,
                 enable_fds: bool = False):
        self.client = Client(address, enable_fds=enable_fds)
        self.unique_name = self.client.unique_name
        self.name = name
        self.handlers = handlers
        self.calls: list = []
        if name is not None:
            r = self.client.bus("RequestName", "su", name, DO_NOT_QUEUE)
            assert r == (PRIMARY_OWNER,), r
        self._stop = threading.Event()
        self.errors: list = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        conn = self.client.conn
        while not self._stop.is_set():
            try:
                msg = conn.receive(timeout=0.05)
            except TimeoutError:
                continue
            except (OSError, ValueError) as e:  # closed
                if not self._stop.is_set():
                    self.errors.append(e)
                return
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            self.calls.append((msg.header.fields.get(HeaderFields.sender), member, msg.body))
            handler = self.handlers.get(member)
            try:
                if handler is None:
                    reply = new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod",
                                      "s", (f"No such method {member}",))
                else:
                    result = handler(msg)
                    if result is None:  # handler sends nothing (no reply)
                        continue
                    sig, body = result
                    reply = new_method_return(msg, sig, tuple(body))
            except ServiceError as e:
                reply = new_error(msg, e.name, "s", (e.text,))
            except Exception as e:  # pragma: no cover - test bug
                self.errors.append(e)
                reply = new_error(msg, "org.freedesktop.DBus.Error.Failed", "s", (repr(e),))
            if msg.header.flags & 1:  # NO_REPLY_EXPECTED
                continue
            try:
                conn.send(reply, serial=next(conn.outgoing_serial))
            except OSError as e:
                self.errors.append(e)
                return

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def echo_service(address: str, name: str, enable_fds: bool = False) -> Service:
    """Service at /Test, interface com.example.Test: Echo(s)->s,
    Add(ii)->i, Fail() -> com.example.Error.Failed("it broke")."""
    def echo(msg):
        return "s", (msg.body[0],)

    def add(msg):
        a, b = msg.body
        return "i", (a + b,)

    def fail(msg):
        raise ServiceError("com.example.Error.Failed", "it broke")

    return Service(address, name, {"Echo": echo, "Add": add, "Fail": fail},
                   enable_fds=enable_fds)


# ---------------------------------------------------------------------------
# Raw sockets
# ---------------------------------------------------------------------------


def socket_path_of(address: str) -> str:
    for part in address.split(";")[0].split(":", 1)[1].split(","):
        k, _, v = part.partition("=")
        if k == "path":
            return v
    raise ValueError(address)


def raw_connect(bus: DaemonBus, timeout: float = TIMEOUT) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(socket_path_of(bus.address))
    return s


def recv_line(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\r\n"):
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf


def raw_auth(s: socket.socket, unix_fd: bool = False) -> None:
    """Do SASL EXTERNAL on a raw socket and send BEGIN."""
    s.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    line = recv_line(s)
    assert line.startswith(b"OK "), line
    if unix_fd:
        s.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        assert recv_line(s) == b"AGREE_UNIX_FD\r\n"
    s.sendall(b"BEGIN\r\n")


def hello_bytes(serial: int = 1) -> bytes:
    return new_method_call(DRIVER, "Hello").serialise(serial=serial)


def read_until_closed(s: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Read until EOF/reset; AssertionError if the peer keeps it open."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise AssertionError(f"connection not closed; got {data!r}")
        try:
            c = s.recv(65536)
        except socket.timeout:
            raise AssertionError(f"connection not closed; got {data!r}") from None
        except (ConnectionResetError, BrokenPipeError):
            return data
        if not c:
            return data
        data += c


def is_closed(s: socket.socket, timeout: float = TIMEOUT) -> bool:
    try:
        read_until_closed(s, timeout)
        return True
    except AssertionError:
        return False




# ---------------------------------------------------------------------------
# Hand-built (possibly invalid) messages, independent of any client library
# ---------------------------------------------------------------------------


def _pad(buf: bytearray, align: int):
    while len(buf) % align:
        buf.append(0)


def _marshal_basic(buf: bytearray, code: str, value, e: str):
    if code in "so":
        _pad(buf, 4)
        raw = value.encode() if isinstance(value, str) else value
        buf += struct.pack(e + "I", len(raw)) + raw + b"\0"
    elif code == "g":
        raw = value.encode() if isinstance(value, str) else value
        buf += bytes([len(raw)]) + raw + b"\0"
    elif code == "u":
        _pad(buf, 4)
        buf += struct.pack(e + "I", value)
    else:
        raise ValueError(code)


def raw_message(mtype: int = 1, *, fields=(), body: bytes = b"", serial: int = 1,
                flags: int = 0, version: int = 1, endian: bytes = b"l",
                body_len: Optional[int] = None) -> bytes:
    """Build a message by hand. ``fields`` is a list of (code, typechar,
    value) header fields, written in that order, so invalid headers (wrong
    types, missing or bogus fields) can be produced."""
    e = "<" if endian == b"l" else ">"
    arr = bytearray()
    for code, tc, value in fields:
        _pad(arr, 8)
        arr.append(code)
        arr += bytes([1]) + tc.encode() + b"\0"
        _marshal_basic(arr, tc, value, e)
    # the array starts at offset 16 (after the length word at 12); its
    # elements are 8-aligned relative to the message start, which is the
    # same as relative to offset 16
    head = bytearray(endian + bytes([mtype, flags, version]))
    head += struct.pack(e + "III", len(body) if body_len is None else body_len,
                        serial, len(arr))
    msg = head + arr
    _pad(msg, 8)
    return bytes(msg + body)


def driver_call_fields(member: str = "GetId", **overrides):
    """Header fields of a method call to the bus driver (code, type, value)."""
    f = {1: ("o", BUS_PATH), 2: ("s", BUS_IFACE), 3: ("s", member), 6: ("s", BUS_NAME)}
    for code, v in overrides.items():
        code = int(code.lstrip("f"))
        if v is None:
            f.pop(code, None)
        else:
            f[code] = v
    return [(c, t, v) for c, (t, v) in f.items()]
