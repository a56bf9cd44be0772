"""sandbus-dbus-proxy, xdg-dbus-proxy's command line: the native back end
(a container instance of type org.flatpak listening on PATH), Flatpak's
--fd protocol (`x` when ready, EOF without it on failure, exit on hang-up),
--args=FD, and bad input answered with one line on stderr."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from containers_util import SKIP_REFERENCE, ContainerBus, ccall
from dbusproxy_util import SANDBUS_PROXY, ProxyProcess, dbus_daemon, sandbus_proxy, write_flatpak_info
from itutil import BUS_NAME, BUS_PATH, Client, Service, wait_until

pytestmark = [SKIP_REFERENCE]

NOTIF = "org.freedesktop.Notifications"
NOTIF_PATH = "/org/freedesktop/Notifications"
APP = "org.example.App"
SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
NAME_HAS_NO_OWNER = "org.freedesktop.DBus.Error.NameHasNoOwner"
PROXY_BIN = shutil.which("xdg-dbus-proxy")


@pytest.fixture(scope="module")
def bus():
    b = ContainerBus()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def info(tmp_path):
    return write_flatpak_info(tmp_path / "flatpak-info", APP, "987654321")


@pytest.fixture
def notif(bus):
    svc = Service(bus.address, NOTIF, {"Notify": lambda m: ("u", (7,)),
                                       "GetCapabilities": lambda m: ("as", (["body"],))})
    try:
        yield svc
    finally:
        svc.stop()


def _env(bus, info, **extra):
    return bus.env(SANDBUS_FLATPAK_INFO=str(info), **extra)


def _start(bus, info, tmp_path, *options, name="bus"):
    socket_path = tmp_path / name
    socket_path.write_text("")  # flatpak's mkstemp placeholder
    p = sandbus_proxy([bus.address, str(socket_path), *options], env=_env(bus, info))
    return p, f"unix:path={socket_path}"


def _instances(bus):
    with Client(bus.address) as c:
        return ccall(c, "ListInstances")[0]


def test_native_instance_identifies_the_app_and_filters(bus, info, tmp_path, notif):
    before = len(_instances(bus))
    p, address = _start(bus, info, tmp_path, "--filter", f"--own={APP}.*",
                        f"--call={NOTIF}={NOTIF}.Notify@{NOTIF_PATH}")
    try:
        assert p.ready, p.stderr_text()
        with Client(address) as app, Client(bus.address) as outside:
            # the app's own connection is on the bus: its own pid, its instance
            assert app.bus("GetConnectionUnixProcessID", "s", app.unique_name) == (os.getpid(),)
            path, creds, ctype, name, metadata = ccall(outside, "GetConnectionInstance", "s", app.unique_name)
            assert (ctype, name) == ("org.flatpak", APP)
            assert metadata["Instance"][1]["instance-id"] == ("s", "987654321")
            assert metadata["Application"][1]["name"] == ("s", APP)
            assert metadata["Context"][1]["shared"] == ("s", "network;ipc;")
            # --call=NAME=iface.Member@/path: exactly that method
            assert app.call(NOTIF, NOTIF_PATH, NOTIF, "Notify") == (7,)
            r = app.call_msg(_method(NOTIF, NOTIF_PATH, NOTIF, "GetCapabilities"))
            assert _error(r) == ACCESS_DENIED
            r = app.call_msg(_method(NOTIF, "/elsewhere", NOTIF, "Notify"))
            assert _error(r) == ACCESS_DENIED
            # own names below APP, nothing else
            assert app.bus("RequestName", "su", f"{APP}.Tool", 4) == (1,)
            r = app.call_msg(_method(BUS_NAME, BUS_PATH, BUS_NAME, "RequestName", "su", ("org.example.Nope", 4)))
            assert _error(r) == ACCESS_DENIED
            assert len(_instances(bus)) == before + 1
    finally:
        p.close_sync()
    # the sandbox is gone: the proxy exits and the instance goes with it
    assert p.wait() == 0
    wait_until(lambda: len(_instances(bus)) == before, what="instance removed")
    assert not (tmp_path / "bus").exists()
    p.stop()


def test_without_filter_the_app_is_identified_but_unrestricted(bus, info, tmp_path, notif):
    p, address = _start(bus, info, tmp_path)
    try:
        assert p.ready, p.stderr_text()
        with Client(address) as app, Client(bus.address) as outside:
            assert app.call(NOTIF, NOTIF_PATH, NOTIF, "GetCapabilities") == (["body"],)
            assert app.bus("RequestName", "su", "org.example.Anything", 4) == (1,)
            assert ccall(outside, "GetConnectionInstance", "s", app.unique_name)[2:4] == ("org.flatpak", APP)
    finally:
        p.stop()


def test_sloppy_names_shows_unique_names_only(bus, info, tmp_path, notif):
    p, address = _start(bus, info, tmp_path, "--filter", "--sloppy-names")
    q, address2 = _start(bus, info, tmp_path, "--filter", name="bus2")
    try:
        assert p.ready and q.ready
        with Client(address) as sloppy, Client(address2) as strict:
            assert sloppy.bus("NameHasOwner", "s", notif.unique_name) == (True,)
            assert sloppy.bus("NameHasOwner", "s", NOTIF) == (False,)
            assert strict.bus("NameHasOwner", "s", notif.unique_name) == (False,)
    finally:
        p.stop()
        q.stop()


def test_several_groups_and_args_from_an_fd(bus, info, tmp_path, notif):
    """Flatpak's way: `--args=FD` with NUL-separated arguments in a memfd,
    two buses in one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    data = b"\0".join(a.encode() for a in [bus.address, str(one), "--filter", f"--talk={NOTIF}",
                                           bus.address, str(two), "--filter"]) + b"\0"
    fd = os.memfd_create("args")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        r, w = os.pipe()
        proc = subprocess.Popen([*SANDBUS_PROXY, f"--fd={w}", f"--args={fd}"], pass_fds=(w, fd),
                                env=_env(bus, info), stderr=subprocess.PIPE, text=True)
        os.close(w)
    finally:
        os.close(fd)
    try:
        assert os.read(r, 1) == b"x", proc.stderr.read()
        with Client(f"unix:path={one}") as a, Client(f"unix:path={two}") as b:
            assert a.call(NOTIF, NOTIF_PATH, NOTIF, "Notify") == (7,)
            assert _error(b.call_msg(_method(NOTIF, NOTIF_PATH, NOTIF, "Notify"))) == SERVICE_UNKNOWN
    finally:
        os.close(r)
        assert proc.wait(timeout=10) == 0
        proc.stderr.close()


def test_log_turns_on_the_denial_log(bus, info, tmp_path):
    quiet_svc = Service(bus.address, "org.example.QuietTarget", {})
    loud_svc = Service(bus.address, "org.example.LoudTarget", {})
    p, address = _start(bus, info, tmp_path, "--filter", "--log")
    q, address2 = _start(bus, info, tmp_path, "--filter", name="quiet")
    try:
        assert p.ready and q.ready
        with Client(address2) as quiet:
            quiet.call_msg(_method("org.example.QuietTarget", "/", "org.example.I", "M"))
        with Client(address) as loud:
            loud.call_msg(_method("org.example.LoudTarget", "/", "org.example.I", "M"))

        def denials():
            return [ln for ln in bus.daemon.stderr_text().splitlines() if "denied:" in ln]
        wait_until(lambda: any("org.example.LoudTarget" in ln for ln in denials()), what="the denial logged")
        assert not any("org.example.QuietTarget" in ln for ln in denials())
    finally:
        p.stop()
        q.stop()
        quiet_svc.stop()
        loud_svc.stop()


def test_the_bus_going_away_ends_the_proxy(info, tmp_path):
    b = ContainerBus()
    try:
        p, _address = _start(b, info, tmp_path, "--filter")
        assert p.ready, p.stderr_text()
    finally:
        b.stop(check=False)
    try:
        assert p.wait() == 1
        err = p.stderr_text().strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sandbus-dbus-proxy: lost the bus at"), err
    finally:
        p.stop()


def test_help_and_version_match_xdg_dbus_proxy():
    out = subprocess.run([*SANDBUS_PROXY, "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "--call=NAME=RULE" in out.stdout and "--sloppy-names" in out.stdout
    if PROXY_BIN:
        theirs = subprocess.run([PROXY_BIN, "--help"], capture_output=True, text=True, timeout=10).stdout
        # the same options, in the same words
        for line in theirs.splitlines()[1:]:
            assert line in out.stdout, line
    out = subprocess.run([*SANDBUS_PROXY, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith("sandbus-dbus-proxy ")


# -- bad input: one line on stderr, EOF on --fd without x, exit 1 -----------------------------------


def _fails(p: ProxyProcess, *words):
    assert p.sync == b"", f"expected EOF on --fd, got {p.sync!r}"
    assert p.wait() == 1
    err = p.stderr_text()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sandbus-dbus-proxy: ")
    for w in words:
        assert w in lines[0], lines[0]
    p.stop()
    return lines[0]


def test_unknown_option(bus, info, tmp_path):
    _fails(sandbus_proxy([bus.address, str(tmp_path / "s"), "--filter", "--bogus"]), "Unknown argument --bogus")
    _fails(sandbus_proxy(["--bogus"]), "Unknown argument --bogus")


def test_bad_names_and_rules(bus, tmp_path):
    _fails(sandbus_proxy([bus.address, str(tmp_path / "s"), "--talk=:1.5"]), "not a valid dbus name")
    _fails(sandbus_proxy([bus.address, str(tmp_path / "s"), "--call=org.a.B"]), "not a valid name + rule")
    _fails(sandbus_proxy([bus.address]), "No socket path given")


def test_path_that_cannot_be_bound(bus, info, tmp_path):
    before = len(_instances(bus))
    line = _fails(sandbus_proxy([bus.address, str(tmp_path / "no" / "such" / "dir"), "--filter"],
                                env=_env(bus, info)), "Failed to listen on", "no/such/dir")
    assert "No such file" in line
    assert len(_instances(bus)) == before


def test_unreachable_address(tmp_path):
    _fails(sandbus_proxy([f"unix:path={tmp_path}/nobus", str(tmp_path / "s"), "--filter"]),
           "Failed to connect to bus", "nobus")


def test_malformed_address(tmp_path):
    _fails(sandbus_proxy(["nonsense", str(tmp_path / "s"), "--filter"]), "Failed to connect to bus nonsense")
    _fails(sandbus_proxy(["tcp:host=localhost,port=1", str(tmp_path / "s")]), "Failed to connect to bus")


def test_bus_that_refuses_add_server(info, tmp_path):
    b = ContainerBus('<limit name="max_containers">0</limit>')
    try:
        _fails(sandbus_proxy([b.address, str(tmp_path / "s"), "--filter"], env=_env(b, info)),
               "refused AddServer", "LimitsExceeded")
        assert not (tmp_path / "s").exists()
    finally:
        b.stop()


def test_a_later_group_failing_takes_the_earlier_ones_down(bus, info, tmp_path):
    before = len(_instances(bus))
    _fails(sandbus_proxy([bus.address, str(tmp_path / "ok"), "--filter",
                          bus.address, str(tmp_path / "no" / "dir")], env=_env(bus, info)),
           "Failed to listen on")
    wait_until(lambda: len(_instances(bus)) == before, what="the first group's instance stopped")
    assert not (tmp_path / "ok").exists()


def test_a_bus_without_containers1_needs_no_xdg_dbus_proxy(tmp_path):
    """Without Containers1 the group is proxied by sandbus-dbus-proxy
    itself: no xdg-dbus-proxy anywhere on PATH is needed."""
    with dbus_daemon(tmp_path) as address:
        sock = tmp_path / "s"
        p = sandbus_proxy([address, str(sock), "--filter"], env=dict(os.environ, PATH="/nonexistent"))
        try:
            assert p.ready, p.stderr_text()
            with Client(f"unix:path={sock}") as app:
                assert app.bus("NameHasOwner", "s", BUS_NAME) == (True,)
        finally:
            p.stop()


# -- helpers ------------------------------------------------------------------------------------------


def _method(dest, path, iface, member, sig=None, body=()):
    from jeepney import DBusAddress, new_method_call
    return new_method_call(DBusAddress(path, bus_name=dest, interface=iface), member, sig, tuple(body))


def _error(reply):
    from jeepney import HeaderFields, MessageType
    if reply.header.message_type != MessageType.error:
        return None
    return reply.header.fields.get(HeaderFields.error_name)


def test_a_bus_without_containers1_is_proxied_by_us(tmp_path):
    """dbus-daemon has no Containers1: the group gets our own filtering
    proxy, in this process (its pid is the bus's view of the app), ready
    before our x; the socket is gone when --fd hangs up."""
    with dbus_daemon(tmp_path) as address:
        svc = Service(address, NOTIF, {"Notify": lambda m: ("u", (7,))})
        other = Service(address, "org.example.Other", {})
        sock = tmp_path / "proxied"
        p = sandbus_proxy([address, str(sock), "--filter", f"--talk={NOTIF}"])
        try:
            assert p.ready, p.stderr_text()
            with Client(f"unix:path={sock}") as app:
                assert app.call(NOTIF, NOTIF_PATH, NOTIF, "Notify") == (7,)
                assert app.bus("NameHasOwner", "s", "org.example.Other") == (False,)
                # proxied: the bus sees our connection
                assert app.bus("GetConnectionUnixProcessID", "s", app.unique_name) == (p.proc.pid,)
            p.close_sync()
            assert p.wait() == 0
            assert not sock.exists()
        finally:
            p.stop()
            svc.stop()
            other.stop()
