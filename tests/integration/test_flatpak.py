"""Real Flatpak, unmodified and offline, with FLATPAK_DBUSPROXY pointing at
sandbus-dbus-proxy: a tiny app (flatpak_util.py) with --talk-name and
--own-name reaches the service it may talk to, finds other names missing,
owns only its names; on a sandbus session bus the service sees the app's
own connection in an org.flatpak instance named by the app id, with the
app's own pid; after the app exits the instance is gone.  On a dbus-daemon
session bus the same app works through sandbus-dbus-proxy's own
filtering proxy (its back end for buses without Containers1)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from containers_util import SKIP_REFERENCE, ContainerBus, ccall
from dbusproxy_util import dbus_daemon
from flatpak_util import APP, FLATPAK, OWN, TALK, FlatpakWorld, userns_problem
from itutil import Client, Service, wait_until, write_config
from jeepney import HeaderFields

pytestmark = [
    SKIP_REFERENCE,
    pytest.mark.skipif(FLATPAK is None, reason="flatpak is not installed (scripts/test installs it)"),
    pytest.mark.timeout(240),
]

SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"


@pytest.fixture(scope="module")
def flatpak_world():
    why = userns_problem()
    if why is not None:
        print(f"skipping the Flatpak tests: {why}")
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="sbflatpak-"))
    try:
        world = FlatpakWorld(root)
        world.build()
        yield world
    finally:
        shutil.rmtree(root, ignore_errors=True)


class Seen:
    """The service's view of each caller, taken while the call is in progress."""

    def __init__(self, address, containers: bool):
        self.address = address
        self.containers = containers
        self.callers = []
        self.lock = threading.Lock()
        self.asker = Client(address)  # used only from the service's thread

    def hello(self, msg):
        sender = msg.header.fields[HeaderFields.sender]
        pid = self.asker.bus("GetConnectionUnixProcessID", "s", sender)[0]
        seen = {"sender": sender, "pid": pid}
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            seen["cmdline"] = argv[0].decode(errors="replace")
            seen["argv"] = [a.decode(errors="replace") for a in argv]
            with open(f"/proc/{pid}/root/.flatpak-info") as f:
                seen["flatpak-info"] = f.read()
        except OSError as e:
            seen["proc-error"] = str(e)
        if self.containers:
            path, _creds, ctype, name, metadata = ccall(self.asker, "GetConnectionInstance", "s", sender)
            seen.update(instance=path, type=ctype, name=name, metadata=metadata)
        with self.lock:
            self.callers.append(seen)
        return "s", ("hello from the host",)


def _results(stdout: str) -> dict:
    out = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def _check_app_output(r, refused_own=ACCESS_DENIED):
    assert r.returncode == 0, (r.stdout, r.stderr)
    got = _results(r.stdout)
    assert "hello from the host" in got["talk"], got
    assert SERVICE_UNKNOWN in got["other"], got          # a name it may not see is missing
    assert "boolean false" in got["has-other"], got      # although it exists
    assert "uint32 1" in got["own"], got                 # --own-name
    assert refused_own in got["own-nope"], got
    return got


def test_flatpak_app_on_sandbus_is_identified_and_filtered(flatpak_world):
    bus = ContainerBus()
    try:
        seen = Seen(bus.address, containers=True)
        svc = Service(bus.address, TALK, {"Hello": seen.hello})
        other = Service(bus.address, "org.example.Other", {"Hello": lambda m: ("s", ("nope",))})
        try:
            r = flatpak_world.run(bus.address, proxy=flatpak_world.sandbus_proxy)
            _check_app_output(r)
            (caller,) = seen.callers
            assert (caller["type"], caller["name"]) == ("org.flatpak", APP)
            assert caller["metadata"]["Application"][1]["name"] == ("s", APP)
            assert "instance-id" in caller["metadata"]["Instance"][1]
            # the app's own process, in its own sandbox: no proxy in between
            assert caller["cmdline"].endswith("dbus-send"), caller
            assert f"name={APP}" in caller["flatpak-info"], caller
            assert other.calls == []
            # the app is gone: so is its instance
            with Client(bus.address) as c:
                wait_until(lambda: not [i for i in ccall(c, "ListInstances")[0] if i[1] == "org.flatpak"],
                           what="the app's instance removed")
                assert c.bus("NameHasOwner", "s", OWN) == (False,)
        finally:
            svc.stop()
            other.stop()
            seen.asker.close()
    finally:
        bus.stop()


def test_flatpak_app_on_dbus_daemon_goes_through_the_proxy_back_end(flatpak_world, tmp_path):
    # no service directories: nothing (Flatpak's session helper, the a11y bus) gets activated
    with dbus_daemon(tmp_path, config=write_config(tmp_path / "bus.conf")) as address:
        seen = Seen(address, containers=False)
        svc = Service(address, TALK, {"Hello": seen.hello})
        other = Service(address, "org.example.Other", {"Hello": lambda m: ("s", ("nope",))})
        try:
            r = flatpak_world.run(address, proxy=flatpak_world.sandbus_proxy)
            # the same answers as on sandbus: the same rule engine decides
            _check_app_output(r)
            (caller,) = seen.callers
            # proxied, by sandbus-dbus-proxy itself: its own process, in Flatpak's proxy sandbox
            argv = caller["argv"]
            assert "sandbus.proxy" in argv or any(a.endswith("sandbus-dbus-proxy") for a in argv), argv
            assert "[Application]" in caller["flatpak-info"], caller
            assert other.calls == []
        finally:
            svc.stop()
            other.stop()
            seen.asker.close()


def test_flatpak_reports_a_proxy_that_fails(flatpak_world, tmp_path):
    """A bus that refuses AddServer: flatpak says it could not sync with the proxy."""
    bus = ContainerBus('<limit name="max_containers">0</limit>')
    try:
        r = flatpak_world.run(bus.address, proxy=flatpak_world.sandbus_proxy, command="true")
        assert r.returncode != 0
        assert "sandbus-dbus-proxy: The bus at" in r.stderr and "refused AddServer" in r.stderr, r.stderr
        assert "Failed to sync with dbus proxy" in r.stderr, r.stderr
    finally:
        bus.stop()
