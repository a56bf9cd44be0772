"""`sandbus --help`, `sandbus status` and `sandbus monitor` against a real
bus (src/sandbus/tools/).  Status and monitor work on dbus-daemon too,
without the parts only sandbus has (container instances, denial counts)."""

import os
import re
import select
import subprocess
import sys
import time

import pytest

from containers_util import add_server, cbus, cbus_factory  # noqa: F401  (fixtures)
from itutil import IS_SANDBUS, TIMEOUT, Client

DENY_XML = ('<policy context="default"><deny send_destination="com.example.Status" '
            'send_interface="com.example.I" send_member="Forbidden"/></policy>')


def sandbus(*args, check=True):
    done = subprocess.run([sys.executable, "-m", "sandbus.cli", *args], capture_output=True, text=True,
                          timeout=TIMEOUT)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def section(out: str, title: str) -> list:
    """The table lines under `title:` up to the next blank line."""
    lines = out.splitlines()
    start = lines.index(title + ":") + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


COMMANDS = ["daemon", "session", "run", "container", "status", "monitor", "install", "uninstall", "version"]


def test_help_lists_every_subcommand():
    out = sandbus("--help").stdout
    listed = re.findall(r"^  (\w+)", out, re.M)
    assert listed == COMMANDS
    # and none is listed that the dispatcher does not know
    for command in COMMANDS:
        done = sandbus(command, "--help")
        assert "unknown command" not in done.stderr and done.stdout.strip(), command
    assert "unknown command 'nosuch'" in sandbus("nosuch", check=False).stderr


def test_status_shows_connections_names_rules(bus_factory):
    b = bus_factory(DENY_XML)
    owner = Client(b.address)
    owner.bus("RequestName", "su", "com.example.Status", 4)
    owner.add_match("type='signal',interface='com.example.I'")
    owner.add_match("type='signal',interface='com.example.J'")
    other = Client(b.address)
    try:
        out = sandbus("status", f"--address={b.address}").stdout
        conns = {r[0]: r for r in section(out, "connections")[1:]}
        assert set(conns) == {owner.unique_name, other.unique_name}
        row = conns[owner.unique_name]
        assert row[1] == str(os.getuid()) and row[2] == str(os.getpid())
        assert row[-1] == "com.example.Status"
        header = section(out, "connections")[0]
        assert row[header.index("RULES")] == "2" and row[header.index("QUEUED")] == "0"
        (uid_row,) = section(out, "by uid")[1:]
        assert uid_row[:4] == [str(os.getuid()), "root" if os.getuid() == 0 else uid_row[1], "2", "1"]
        assert "well-known names: 1;" in out
    finally:
        owner.close()
        other.close()


@pytest.mark.skipif(not IS_SANDBUS, reason="denial counts are sandbus's (Debug.Stats DenialsLastMinute)")
def test_status_counts_denials(bus_factory):
    b = bus_factory(DENY_XML)
    svc = Client(b.address)
    svc.bus("RequestName", "su", "com.example.Status", 4)
    bad = Client(b.address)
    try:
        for _ in range(2):
            r = bad.call_msg(_call("Forbidden"))
            assert r.header.fields.get(4) == "org.freedesktop.DBus.Error.AccessDenied"
        out = sandbus("status", f"--address={b.address}").stdout
        assert "denials in the last minute: 2 (since start: 2)" in out
        conns = {r[0]: r for r in section(out, "connections")[1:]}
        header = section(out, "connections")[0]
        assert conns[bad.unique_name][header.index("DENIED/MIN")] == "2"
        assert conns[svc.unique_name][header.index("DENIED/MIN")] == "0"
    finally:
        svc.close()
        bad.close()


def _call(member):
    from jeepney import DBusAddress, new_method_call
    return new_method_call(DBusAddress("/", bus_name="com.example.Status", interface="com.example.I"), member)


@pytest.mark.skipif(not IS_SANDBUS, reason="Containers1")
def test_status_by_container_instance(cbus):
    creator = cbus.client()
    path, _, address = add_server(creator, "org.example.Tool", "status-app")
    inner = cbus.client(address)
    inner2 = cbus.client(address)
    out = sandbus("status", f"--address={cbus.address}").stdout
    rows = {r[0]: r for r in section(out, "by container instance")[1:]}
    assert rows[path][1:4] == ["org.example.Tool", "status-app", creator.unique_name]
    assert rows[path][4] == "2" and rows[path][5] == "yes"
    assert rows["(none)"][1] == "1"     # the creator (the tool itself is not listed)
    conns = {r[0]: r for r in section(out, "connections")[1:]}
    assert conns[inner.unique_name][3] == conns[inner2.unique_name][3] == path.rsplit("/", 1)[1]
    assert conns[creator.unique_name][3] == "-"


class Monitor:
    def __init__(self, address, *rules):
        self.proc = subprocess.Popen([sys.executable, "-m", "sandbus.cli", "monitor", f"--address={address}",
                                      *rules], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._line(self.proc.stderr)
        assert line.startswith("monitoring "), line
        self.out = ""

    def _line(self, stream):
        r, _, _ = select.select([stream], [], [], TIMEOUT)
        assert r, "sandbus monitor said nothing"
        return stream.readline()

    def wait_for(self, text):
        deadline = time.monotonic() + TIMEOUT
        fd = self.proc.stdout.fileno()
        while text not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not in monitor output:\n{self.out}"
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536).decode()
                assert chunk, f"monitor exited:\n{self.out}\n{self.proc.stderr.read()}"
                self.out += chunk
        return self.out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=TIMEOUT)


def test_monitor_pretty_prints_traffic(bus):
    mon = Monitor(bus.address)
    c = Client(bus.address)
    try:
        c.bus("GetNameOwner", "s", "org.freedesktop.DBus")
        mon.wait_for("org.freedesktop.DBus.GetNameOwner")
        out = mon.wait_for('return org.freedesktop.DBus -> ' + c.unique_name)
        line = next(line for line in out.splitlines() if "GetNameOwner" in line)
        assert re.match(r"\d\d:\d\d:\d\d\.\d{6} call   " + re.escape(c.unique_name) +
                        r" -> org\.freedesktop\.DBus  /org/freedesktop/DBus org\.freedesktop\.DBus\.GetNameOwner"
                        r"  serial=\d+$", line), line
        after = out.split(line + "\n", 1)[1].splitlines()
        assert after[0] == '    "org.freedesktop.DBus"'
        assert "container:" not in mon.out
    finally:
        c.close()
        mon.stop()


def test_monitor_rules_filter(bus):
    mon = Monitor(bus.address, "type='signal',interface='com.example.Mon'")
    c = Client(bus.address)
    try:
        c.bus("GetId")
        from jeepney import new_signal, DBusAddress
        c.send(new_signal(DBusAddress("/a", interface="com.example.Mon"), "Ping"))
        out = mon.wait_for("com.example.Mon.Ping")
        assert "GetId" not in out and " call " not in out
    finally:
        c.close()
        mon.stop()


@pytest.mark.skipif(not IS_SANDBUS, reason="Containers1")
def test_monitor_names_each_senders_container_instance(cbus):
    creator = cbus.client()
    path, _, address = add_server(creator, "org.example.Mon", "mon-app")
    mon = Monitor(cbus.address, "type='method_call'")
    inner = cbus.client(address)
    outer = cbus.client()
    try:
        inner.bus("GetId")
        outer.bus("ListNames")
        inner_name = inner.unique_name
        inner.close()      # gone before the monitor could ask about it
        out = mon.wait_for("org.freedesktop.DBus.ListNames")
        blocks = re.split(r"\n(?=\d\d:\d\d)", out)
        get_id = next(b for b in blocks if "GetId" in b and inner_name in b)
        assert f'    container: {path} (org.example.Mon "mon-app")' in get_id.splitlines()
        list_names = next(b for b in blocks if "ListNames" in b)
        assert "container:" not in list_names
    finally:
        outer.close()
        mon.stop()


def test_status_without_a_bus_says_so(tmp_path):
    done = sandbus("status", f"--address=unix:path={tmp_path}/none", check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("sandbus status: cannot connect to unix:path=")
