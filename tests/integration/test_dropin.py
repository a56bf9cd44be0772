"""Drop-in details: tcp listeners, DBUS_COOKIE_SHA1 and ANONYMOUS, <auth>,
no fd passing on tcp, GTestDBus, --fork, <pidfile>, NOTIFY_SOCKET.
Verified against dbus-daemon 1.14 (SANDBUS_TEST_DAEMON=dbus-daemon)."""

import binascii
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from itutil import (
    SYSTEM_PYTHON, TIMEOUT, daemon_argv, driver_call_fields, hello_bytes,
    raw_message, wait_until,
)

HERE = os.path.dirname(__file__)
POLICY = """<policy context="default">
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/>
  </policy>"""
UID = os.getuid()


class Bus:
    def __init__(self, tmp_path, listen, extra="", args=(), env=None):
        self.home = tmp_path / "home"
        self.home.mkdir(exist_ok=True)
        listens = "".join(f"<listen>{a}</listen>" for a in listen)
        conf = tmp_path / "bus.conf"
        conf.write_text(f"<busconfig><type>session</type>{listens}{extra}{POLICY}</busconfig>")
        self.env = dict(os.environ, HOME=str(self.home), **(env or {}))
        self.proc = subprocess.Popen(daemon_argv() + [f"--config-file={conf}", "--nofork",
                                                      "--print-address=1", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=self.env, start_new_session=True)
        line = self.proc.stdout.readline().decode().strip()
        assert line, "daemon printed no address"
        self.address = line
        self.addresses = line.split(";")

    def tcp(self):
        a = next(x for x in self.addresses if x.startswith("tcp:"))
        return dict(kv.split("=", 1) for kv in a.split(":", 1)[1].split(","))

    def connect(self, unix=False):
        if unix:
            a = next(x for x in self.addresses if x.startswith("unix:"))
            params = dict(kv.split("=", 1) for kv in a.split(":", 1)[1].split(","))
            s = socket.socket(socket.AF_UNIX)
            s.connect(params["path"])
        else:
            p = self.tcp()
            s = socket.create_connection((p["host"], int(p["port"])))
        s.settimeout(TIMEOUT)
        s.sendall(b"\0")
        return s

    def stop(self):
        if self.proc.poll() is None:
            ping(self.address)
            self.proc.terminate()
        assert self.proc.wait(TIMEOUT) == 0


@pytest.fixture
def make_bus(tmp_path):
    buses = []

    def make(*a, **kw):
        b = Bus(tmp_path, *a, **kw)
        buses.append(b)
        return b
    yield make
    for b in buses:
        b.stop()


def ping(address: str) -> None:
    """Wait until the bus answers SASL (its loop runs and handles SIGTERM)."""
    a = address.split(";")[0]
    params = dict(kv.split("=", 1) for kv in a.split(":", 1)[1].split(","))
    if a.startswith("tcp:"):
        s = socket.create_connection((params["host"], int(params["port"])), timeout=TIMEOUT)
    else:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(TIMEOUT)
        s.connect(params["path"])
    with s:
        s.sendall(b"\0AUTH\r\n")
        assert line(s).startswith(b"REJECTED")


def line(s):
    buf = b""
    while not buf.endswith(b"\r\n"):
        c = s.recv(1)
        if not c:
            return buf + b"<EOF>"
        buf += c
    return buf


def cmd(s, text: bytes) -> bytes:
    s.sendall(text + b"\r\n")
    return line(s)


def cookie_auth(bus, s, user=str(UID), mangle=None):
    r = cmd(s, b"AUTH DBUS_COOKIE_SHA1 " + binascii.hexlify(user.encode()))
    if not r.startswith(b"DATA "):
        return r
    context, cid, server_challenge = binascii.unhexlify(r[5:-2]).decode().split(" ")
    assert context == "org_freedesktop_general"
    cookie = None
    for entry in (bus.home / ".dbus-keyrings" / context).read_text().splitlines():
        i, _, c = entry.split()
        if i == cid:
            cookie = c
    assert cookie
    client_challenge = "0123abcd"
    digest = hashlib.sha1(f"{server_challenge}:{client_challenge}:{cookie}".encode()).hexdigest()
    response = f"{client_challenge} {digest}"
    if mangle:
        response = mangle(response)
    return cmd(s, b"DATA " + binascii.hexlify(response.encode()))


def recv_message(s):
    head = b""
    while len(head) < 16:
        head += s.recv(16 - len(head))
    body_len, _, fields_len = struct.unpack("<III", head[4:16])
    total = 16 + fields_len + (-fields_len % 8) + body_len
    data = head
    while len(data) < total:
        data += s.recv(total - len(data))
    return data


def hello(s):
    s.sendall(b"BEGIN\r\n" + hello_bytes())
    reply = recv_message(s)
    assert reply[1] == 2  # METHOD_RETURN
    recv_message(s)  # NameAcquired
    return reply


def driver_call(s, member, name, serial):
    body = struct.pack("<I", len(name)) + name.encode() + b"\0"
    s.sendall(raw_message(fields=driver_call_fields(member, f8=("g", "s")), body=body, serial=serial))
    while True:
        m = recv_message(s)
        if m[1] in (2, 3):
            return m


def unique_name(hello_reply: bytes) -> str:
    i = hello_reply.index(b":1.")
    return hello_reply[i:hello_reply.index(b"\0", i)].decode()


ALL = b"REJECTED EXTERNAL DBUS_COOKIE_SHA1 ANONYMOUS\r\n"


# -- tcp and DBUS_COOKIE_SHA1 --------------------------------------------------

def test_tcp_port_zero_prints_real_port_family_and_guid(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    p = bus.tcp()
    assert p["host"] == "127.0.0.1" and int(p["port"]) > 0
    assert p["family"] == "ipv4" and len(p["guid"]) == 32


def test_cookie_auth_gives_the_bus_users_uid_and_keyring_is_private(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    s = bus.connect()
    assert cookie_auth(bus, s).startswith(b"OK ")
    me = unique_name(hello(s))
    reply = driver_call(s, "GetConnectionUnixUser", me, 2)
    assert reply[1] == 2 and struct.unpack("<I", reply[-4:])[0] == UID
    d = bus.home / ".dbus-keyrings"
    assert os.stat(d).st_mode & 0o777 == 0o700
    entries = (d / "org_freedesktop_general").read_text().splitlines()
    cid, created, cookie = entries[0].split()
    assert cid.isdigit() and abs(int(created) - time.time()) < 60 and len(cookie) == 48
    assert not (d / "org_freedesktop_general.lock").exists()


def test_fd_passing_refused_on_tcp(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    s = bus.connect()
    assert cookie_auth(bus, s).startswith(b"OK ")
    assert cmd(s, b"NEGOTIATE_UNIX_FD").startswith(b"ERROR")
    hello(s)


@pytest.mark.parametrize("mangle", [
    lambda r: r[:-1] + ("0" if r[-1] != "0" else "1"),  # wrong hash
    lambda r: "garbage",
    lambda r: r.split()[1],  # no client challenge
    lambda r: "0123abcd " + "0" * 40,  # hash over an unknown cookie
])
def test_bad_cookie_response_rejected_and_bus_serves_others(make_bus, mangle):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    bad = bus.connect()
    assert cookie_auth(bus, bad, mangle=mangle) == ALL
    good = bus.connect()
    assert cookie_auth(bus, good).startswith(b"OK ")
    hello(good)
    # the rejected client may still try again, correctly
    assert cookie_auth(bus, bad).startswith(b"OK ")


@pytest.mark.parametrize("user", ["nosuchuser-xyz", "65534"])
def test_cookie_for_other_user_rejected(make_bus, user):
    if user == str(UID):
        pytest.skip("running as that user")
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    s = bus.connect()
    assert cookie_auth(bus, s, user=user) == ALL
    assert cmd(s, b"AUTH DBUS_COOKIE_SHA1 zz") == b'ERROR "Invalid hex encoding"\r\n'


def test_keyring_dir_with_bad_permissions_rejected(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0", "unix:tmpdir=/tmp"])
    d = bus.home / ".dbus-keyrings"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o755)
    s = bus.connect()
    assert cmd(s, b"AUTH DBUS_COOKIE_SHA1 " + binascii.hexlify(str(UID).encode())) == ALL
    other = bus.connect(unix=True)
    assert cmd(other, b"AUTH EXTERNAL " + binascii.hexlify(str(UID).encode())).startswith(b"OK ")
    hello(other)


def test_dbus_send_gdbus_and_dbus_python_over_tcp(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    tcp = [a for a in bus.addresses if a.startswith("tcp:")][0]
    if shutil.which("dbus-send"):
        out = subprocess.run(["dbus-send", f"--bus={tcp}", "--print-reply",
                              "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus.ListNames"], env=bus.env,
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 0 and "org.freedesktop.DBus" in out.stdout, out.stderr
    if shutil.which("gdbus"):
        p = bus.tcp()
        out = subprocess.run(["gdbus", "call", "-a", f"tcp:host=127.0.0.1,port={p['port']}",
                              "-d", "org.freedesktop.DBus", "-o", "/org/freedesktop/DBus",
                              "-m", "org.freedesktop.DBus.GetId"], env=bus.env,
                             capture_output=True, text=True, timeout=TIMEOUT)
        assert out.returncode == 0 and len(out.stdout.strip().strip("(',)")) == 32, out.stderr
    code = ("import dbus; b = dbus.bus.BusConnection(%r); "
            "print(b.get_unix_user(b.get_unique_name()))" % tcp)
    out = subprocess.run([SYSTEM_PYTHON, "-c", code], env=bus.env, capture_output=True,
                         text=True, timeout=TIMEOUT)
    if "No module named" in out.stderr:
        pytest.skip("no dbus-python")
    assert out.returncode == 0 and out.stdout.strip() == str(UID), out.stderr


# -- ANONYMOUS and <auth> ------------------------------------------------------

def test_anonymous_without_allow_anonymous_dropped_at_begin(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"])
    s = bus.connect()
    assert cmd(s, b"AUTH ANONYMOUS").startswith(b"OK ")
    s.sendall(b"BEGIN\r\n" + hello_bytes())
    assert s.recv(4096) == b""
    good = bus.connect()
    assert cookie_auth(bus, good).startswith(b"OK ")
    hello(good)


def test_anonymous_allowed_has_no_unix_user(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"], extra="<allow_anonymous/>")
    s = bus.connect()
    assert cmd(s, b"AUTH ANONYMOUS 7472616365").startswith(b"OK ")
    me = unique_name(hello(s))
    reply = driver_call(s, "GetConnectionUnixUser", me, 2)
    assert reply[1] == 3 and b"org.freedesktop.DBus.Error.Failed" in reply
    assert f"Could not determine UID for '{me}'".encode() in reply


def test_auth_elements_restrict_mechanisms(make_bus):
    bus = make_bus(["tcp:host=127.0.0.1,port=0"],
                   extra="<auth>ANONYMOUS</auth><auth>DBUS_COOKIE_SHA1</auth>")
    s = bus.connect()
    assert cmd(s, b"AUTH") == b"REJECTED DBUS_COOKIE_SHA1 ANONYMOUS\r\n"
    assert cmd(s, b"AUTH EXTERNAL") == b"REJECTED DBUS_COOKIE_SHA1 ANONYMOUS\r\n"
    bus2 = make_bus(["tcp:host=127.0.0.1,port=0"], extra="<auth>EXTERNAL</auth>")
    s = bus2.connect()
    assert cookie_auth(bus2, s) == b"REJECTED EXTERNAL\r\n"


def test_unsupported_auth_mechanism_fails_startup(tmp_path):
    conf = tmp_path / "bus.conf"
    conf.write_text("<busconfig><listen>unix:tmpdir=/tmp</listen><auth>FOO</auth></busconfig>")
    out = subprocess.run(daemon_argv() + [f"--config-file={conf}", "--nofork", "--print-address"],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode != 0 and 'Unsupported auth mechanism "FOO"' in out.stderr


# -- process conventions -------------------------------------------------------

def test_gtestdbus_harness(tmp_path):
    path = shutil.which(daemon_argv()[0])
    env = dict(os.environ, G_TEST_DBUS_DAEMON=path, HOME=str(tmp_path))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    out = subprocess.run([SYSTEM_PYTHON, os.path.join(HERE, "gtestdbus_check.py")], env=env,
                         capture_output=True, text=True, timeout=30)
    if "No module named 'gi'" in out.stderr:
        pytest.skip("no python3-gi")
    assert out.returncode == 0, out.stderr
    assert "OK unix:" in out.stdout and " True :1." in out.stdout and "DOWN" in out.stdout


def test_fork_print_address_and_pid(tmp_path):
    conf = tmp_path / "bus.conf"
    conf.write_text(f"<busconfig><type>session</type><listen>unix:tmpdir={tmp_path}</listen>"
                    f"{POLICY}</busconfig>")
    ra, wa = os.pipe()
    rp, wp = os.pipe()
    proc = subprocess.Popen(daemon_argv() + [f"--config-file={conf}", "--fork",
                                             f"--print-address={wa}", f"--print-pid={wp}"],
                            pass_fds=(wa, wp), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(wa)
    os.close(wp)
    assert proc.wait(TIMEOUT) == 0
    with os.fdopen(ra) as fa, os.fdopen(rp) as fp:
        address = fa.readline().strip()
        pid = int(fp.readline())
    assert pid != proc.pid
    try:
        os.kill(pid, 0)
        path = dict(kv.split("=", 1) for kv in address.split(":", 1)[1].split(","))["path"]
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(TIMEOUT)
        s.connect(path)
        s.sendall(b"\0")
        assert cmd(s, b"AUTH EXTERNAL " + binascii.hexlify(str(UID).encode())).startswith(b"OK ")
        hello(s)
        s.close()
    finally:
        os.kill(pid, 15)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
               open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=TIMEOUT)


@pytest.mark.parametrize("nopidfile", [False, True])
def test_pidfile(tmp_path, nopidfile):
    pidfile = tmp_path / "bus.pid"
    conf = tmp_path / "bus.conf"
    conf.write_text(f"<busconfig><type>session</type><listen>unix:tmpdir={tmp_path}</listen>"
                    f"<pidfile>{pidfile}</pidfile>{POLICY}</busconfig>")
    proc = subprocess.Popen(daemon_argv() + [f"--config-file={conf}", "--nofork", "--print-address=1"]
                            + (["--nopidfile"] if nopidfile else []),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ping(proc.stdout.readline().decode().strip())
        if nopidfile:
            assert not pidfile.exists()
        else:
            assert int(pidfile.read_text()) == proc.pid
    finally:
        proc.terminate()
        assert proc.wait(TIMEOUT) == 0


def test_notify_socket_ready(tmp_path):
    path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(TIMEOUT)
    conf = tmp_path / "bus.conf"
    conf.write_text(f"<busconfig><type>session</type><listen>unix:tmpdir={tmp_path}</listen>"
                    f"{POLICY}</busconfig>")
    proc = subprocess.Popen(daemon_argv() + [f"--config-file={conf}", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, NOTIFY_SOCKET=path))
    try:
        ping(proc.stdout.readline().decode().strip())
        messages = []
        while "READY=1" not in messages:
            messages += rx.recv(4096).decode().split("\n")
        assert "READY=1" in messages
    finally:
        proc.terminate()
        assert proc.wait(TIMEOUT) == 0
        rx.close()


NOBODY = 65534


def _as_nobody(*argv):
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("listen", ["path", "tmpdir"])
def test_unix_socket_is_world_connectable(listen):
    """dbus-daemon makes every unix socket file it binds mode 0777 whatever
    the umask, and leaves the choice of who is served to authentication and
    policy: another uid connects, and the permissive policy serves it."""
    if os.getuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as nobody")
    import tempfile
    root = tempfile.mkdtemp(prefix="sbmode-")
    try:
        os.chmod(root, 0o755)
        address = f"unix:path={root}/bus" if listen == "path" else f"unix:tmpdir={root}"
        conf = os.path.join(root, "bus.conf")
        with open(conf, "w") as f:
            f.write(f"<busconfig><type>session</type><listen>{address}</listen>"
                    f"<policy context='default'><allow user='*'/></policy>{POLICY}</busconfig>")
        old = os.umask(0o077)
        try:
            proc = subprocess.Popen(daemon_argv() + [f"--config-file={conf}", "--nofork", "--print-address=1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.umask(old)
        try:
            printed = proc.stdout.readline().decode().strip()
            path = dict(kv.split("=", 1) for kv in printed.split(":", 1)[1].split(","))["path"]
            assert os.stat(path).st_mode & 0o777 == 0o777
            cp = _as_nobody("dbus-send", f"--bus={printed}", "--print-reply", "--dest=org.freedesktop.DBus",
                            "/org/freedesktop/DBus", "org.freedesktop.DBus.GetConnectionUnixUser",
                            "string:org.freedesktop.DBus")
            assert cp.returncode == 0, cp.stderr
        finally:
            proc.terminate()
            proc.wait(TIMEOUT)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("closed", [(0,), (0, 1, 2)])
def test_fork_with_standard_fds_closed(tmp_path, closed):
    """--fork started with stdin (or all of 0-2) closed, as dbus's
    test-dbus-daemon-fork.sh does (`<&-`): the bus still forks, prints its
    address and serves."""
    conf = tmp_path / "bus.conf"
    conf.write_text(f"<busconfig><type>session</type><listen>unix:tmpdir={tmp_path}</listen>"
                    f"{POLICY}</busconfig>")
    ra, wa = os.pipe()
    rp, wp = os.pipe()
    os.set_inheritable(wa, True)
    os.set_inheritable(wp, True)
    # close the standard descriptors in the child only, after the pipes are
    # placed above them (preexec_fn runs after pass_fds are set up)
    closer = (f"import os,sys; [os.close(fd) for fd in {closed!r}]; "
              f"os.execvp(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", closer, *daemon_argv(), f"--config-file={conf}", "--fork",
                             f"--print-address={wa}", f"--print-pid={wp}"],
                            pass_fds=(wa, wp), stderr=subprocess.DEVNULL)
    os.close(wa)
    os.close(wp)
    assert proc.wait(TIMEOUT) == 0
    with os.fdopen(ra) as fa, os.fdopen(rp) as fp:
        address = fa.readline().strip()
        pid = int(fp.readline())
    try:
        assert address.startswith("unix:")
        cp = subprocess.run(["dbus-send", f"--bus={address}", "--print-reply", "--dest=org.freedesktop.DBus",
                             "/", "org.freedesktop.DBus.ListNames"],
                            capture_output=True, text=True, timeout=TIMEOUT)
        assert cp.returncode == 0, cp.stderr
    finally:
        os.kill(pid, 15)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or
               open(f"/proc/{pid}/stat").read().split()[2] == "Z", timeout=TIMEOUT)
