"""Containers1 learn mode (AddServer Learn=true, GetLearnedRules,
`sandbus container add --learn` / `rules`) and the denial log."""

from __future__ import annotations

import os
import re
import sys

import pytest
from jeepney import DBusAddress, HeaderFields, MessageType, new_signal

from containers_util import (  # noqa: F401  (fixtures)
    ACCESS_DENIED,
    BROADCASTS,
    CALL,
    CIFACE,
    FDS,
    INVALID_ARGS,
    NOT_CONTAINER,
    OWN,
    PATH_SUBTREE,
    SKIP_REFERENCE,
    add_server,
    allow,
    call_msg,
    cbus,
    cbus_factory,
    ccall,
)
from itutil import (
    BUS_NAME,
    BUS_PATH,
    DO_NOT_QUEUE,
    PRIMARY_OWNER,
    Background,
    echo_service,
    is_signal,
    run,
    wait_until,
)

pytestmark = SKIP_REFERENCE

SVC = "com.example.Svc"
SIG = "com.example.Sig"
SEEN = "com.example.Seen"
UNSEEN = "com.example.Unseen"
APP = "org.example.App"


def _cli(cbus, *args, check=True):
    return run([sys.executable, "-m", "sandbus.cli", "container", *args], env=cbus.env(), check=check)


def _learned(client, path):
    rules, args = ccall(client, "GetLearnedRules", "o", path)
    return [tuple(r) for r in rules], list(args)


def _ok(client, dest, path="/Test", member="Echo", sig="s", body=("x",)):
    r = client.call_msg(call_msg(dest, path, "com.example.Test", member, sig, body))
    if r.header.message_type == MessageType.error:
        return r.header.fields[HeaderFields.error_name]
    return "ok"


class World:
    """Outside: an echo service (fds welcome) as SVC, a broadcaster owning
    SIG, and a connection owning SEEN and UNSEEN."""

    def __init__(self, cbus):
        self.cbus = cbus
        self.svc = echo_service(cbus.address, SVC, enable_fds=True)
        self.sig = cbus.client()
        self.sig.bus("RequestName", "su", SIG, DO_NOT_QUEUE)
        self.other = cbus.client()
        for n in (SEEN, UNSEEN):
            self.other.bus("RequestName", "su", n, DO_NOT_QUEUE)

    def broadcast(self, path, member):
        self.sig.send(new_signal(DBusAddress(path, interface=SIG), member))

    def stop(self):
        self.svc.stop()


@pytest.fixture
def world(cbus):
    w = World(cbus)
    try:
        yield w
    finally:
        w.stop()


def _gdbus_echo(address, path="/Test"):
    return run(["gdbus", "call", "--address", address, "--dest", SVC, "--object-path", path,
                "--method", "com.example.Test.Echo", "hello"], check=False)


def _traffic(cbus, world, address, fds=True):
    """The app's traffic: gdbus calls SVC; a jeepney connection looks up
    SEEN, owns APP, receives SIG's broadcast on /sig, passes an fd to SVC.
    Returns what each step got."""
    got = {}
    cp = _gdbus_echo(address)
    got["gdbus call"] = "ok" if cp.returncode == 0 and "hello" in cp.stdout else cp.stderr
    inner = cbus.client(address, enable_fds=True)
    got["see"] = inner.bus("NameHasOwner", "s", SEEN)
    got["own"] = inner.bus("RequestName", "su", APP, DO_NOT_QUEUE)
    inner.add_match(f"type='signal',sender='{SIG}',interface='{SIG}'")
    world.broadcast("/sig", "Hello")
    try:
        inner.wait_signal("Hello", timeout=3)
        got["broadcast"] = "ok"
    except AssertionError:
        got["broadcast"] = "missed"
    if fds:
        r, w = os.pipe()
        try:
            got["fds"] = _ok(inner, SVC, "/Fd", sig="sh", body=("x", r))
        finally:
            os.close(r)
            os.close(w)
    return got, inner


WANT = {"gdbus call": "ok", "see": (True,), "own": (PRIMARY_OWNER,), "broadcast": "ok", "fds": "ok"}


def _outside_is_denied(cbus, world, address, inner):
    """Things the learned traffic did not do are still denied."""
    cp = _gdbus_echo(address, "/Other")
    assert cp.returncode != 0 and "AccessDenied" in cp.stderr, cp
    assert inner.bus("NameHasOwner", "s", UNSEEN) == (False,)
    assert inner.bus_error("RequestName", "su", "org.example.Other", DO_NOT_QUEUE).name == ACCESS_DENIED
    world.broadcast("/elsewhere", "Elsewhere")
    world.broadcast("/sig", "Sync")
    inner.wait_signal("Sync")
    assert not [m for m in inner.inbox if is_signal(m, "Elsewhere")]


def _started(bg):
    lines = bg.wait_for(lambda t: "guid=" in t, what="address").splitlines()
    return lines[0], lines[1]


def test_learn_then_replay_end_to_end(cbus, world):
    cli = [sys.executable, "-m", "sandbus.cli", "container"]
    env = cbus.env()
    with Background(cli + ["add", "--type", "org.flatpak", "--name", "org.example.App", "--learn"],
                    cbus.daemon, env=env) as learner:
        path, address = _started(learner)
        got, inner = _traffic(cbus, world, address)
        assert got == WANT
        inner.bus("ReleaseName", "s", APP)
        out = _cli(cbus, "rules", path).stdout
    # ending `add --learn` (SIGTERM here, Ctrl-C by hand) prints the same
    assert out in learner.text + "\n", (out, learner.text)
    allow_args = [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("--allow ")]
    flatpak = [line for line in out.splitlines() if line.startswith("--") and not line.startswith("--allow ")]
    rules = [tuple(int(f) if i == 0 else f for i, f in enumerate(a.split(":"))) for a in allow_args]
    assert (CALL, SVC, "/Test", "com.example.Test") in rules, out
    # gdbus call introspects the object first to learn the argument types
    assert (CALL, SVC, "/Test", "org.freedesktop.DBus.Introspectable") in rules, out
    assert (CALL | FDS, SVC, "/Fd", "com.example.Test") in rules, out
    assert (0, SEEN, "/", "") in rules and (OWN, APP, "/", "") in rules, out
    assert (BROADCASTS, SIG, "/sig", SIG) in rules, out
    assert not any(r[1] == UNSEEN or r[0] & PATH_SUBTREE for r in rules), out
    assert f"--call={SVC}=com.example.Test.Echo@/Test" in flatpak and f"--own={APP}" in flatpak, out
    assert f"--see={SEEN}" in flatpak and f"--broadcast={SIG}={SIG}.Hello@/sig" in flatpak, out

    # the printed rules, applied to a fresh instance, allow the same traffic and no more
    argv = cli + ["add", "--type", "org.flatpak", "--name", "org.example.App"]
    for a in allow_args:
        argv += ["--allow", a]
    with Background(argv, cbus.daemon, env=env) as replay:
        _, address = _started(replay)
        got, inner = _traffic(cbus, world, address)
        assert got == WANT, (got, allow_args)
        _outside_is_denied(cbus, world, address, inner)
        inner.bus("ReleaseName", "s", APP)

    # and so do the Flatpak-style arguments (xdg-dbus-proxy cannot restrict fds)
    with Background(cli + ["add", "--type", "org.flatpak", "--name", "x", *flatpak], cbus.daemon,
                    env=env) as replay:
        _, address = _started(replay)
        got, inner = _traffic(cbus, world, address, fds=False)
        assert got == {k: v for k, v in WANT.items() if k != "fds"}, (got, flatpak)
        cp = _gdbus_echo(address, "/Other")
        assert cp.returncode != 0 and "AccessDenied" in cp.stderr, cp


def test_learn_via_add_server_and_get_learned_rules(cbus, world):
    creator = cbus.client()
    base = (CALL | PATH_SUBTREE, SVC, "/Base", "")
    named = allow(base)
    named["Learn"] = ("b", True)
    path, _, address = add_server(creator, named=named)
    assert _learned(creator, path) == ([base], ["--call=com.example.Svc=*@/Base/*"])
    inner = cbus.client(address)
    assert _ok(inner, SVC, "/Base/x") == "ok"  # allowed by the rule: not learned
    assert _ok(inner, SVC, "/Other") == "ok"  # would be denied: learned
    assert inner.bus("GetId")  # denied in mediated instances: learned, but no rule can say it
    rules, args = _learned(creator, path)
    assert rules == [base, (CALL, SVC, "/Other", "com.example.Test")]
    assert args == ["--call=com.example.Svc=*@/Base/*", "--call=com.example.Svc=com.example.Test.Echo@/Other"]
    # creator's uid, uncontained, learn instances only; unknown paths
    assert inner.bus_error("GetLearnedRules", "o", path, iface=CIFACE).name == ACCESS_DENIED
    plain, _, _ = add_server(creator, named=allow())
    assert creator.bus_error("GetLearnedRules", "o", plain, iface=CIFACE).name == INVALID_ARGS
    assert creator.bus_error("GetLearnedRules", "o", BUS_PATH + "/Containers1/c999",
                             iface=CIFACE).name == NOT_CONTAINER
    # still answers once the instance is gone (the app has exited)
    creator.add_match(f"type='signal',interface='{CIFACE}',member='InstanceRemoved'")
    ccall(creator, "StopInstance", "o", path)
    creator.wait_for(lambda m: is_signal(m, "InstanceRemoved") and m.body == (path,))
    assert _learned(creator, path) == (rules, args)


def test_learn_is_advertised(cbus):
    c = cbus.client()
    props = c.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", (CIFACE,))[0]
    assert "Learn" in props["SupportedArguments"][1]
    xml = c.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Introspectable", "Introspect")[0]
    assert '<method name="GetLearnedRules">' in xml
    e = c.bus_error("AddServer", "ssa{sv}a{sv}", "a.b", "", {}, {"Learn": ("s", "yes")}, iface=CIFACE)
    assert e.name == INVALID_ARGS


def test_learn_unique_names_only_are_allowed_but_not_expressible(cbus, world):
    """Traffic to a connection with no well-known name is allowed in learn
    mode, but no Allow rule can name it, so nothing is learned for it."""
    creator = cbus.client()
    named = allow()
    named["Learn"] = ("b", True)
    path, _, address = add_server(creator, named=named)
    inner = cbus.client(address)
    anon = cbus.client()  # no well-known name
    assert inner.bus("NameHasOwner", "s", anon.unique_name) == (True,)
    m = call_msg(anon.unique_name, "/", "x.y.Z", "Nobody")
    m.header.flags |= 1  # NO_REPLY_EXPECTED
    inner.send(m)
    anon.wait_for(lambda m: m.header.fields.get(HeaderFields.member) == "Nobody")
    assert _learned(creator, path) == ([], [])
    # a peer that also owns a well-known name is learned by that name
    assert _ok(inner, world.svc.unique_name) == "ok"
    assert _learned(creator, path) == ([(CALL, SVC, "/Test", "com.example.Test")],
                                       [f"--call={SVC}=com.example.Test.Echo@/Test"])


def test_denials_logged_once_per_shape(cbus, world):
    creator = cbus.client()
    path, _, address = add_server(creator, "com.example.Logged", "logme", named=allow((0, SVC, "/", "")))
    inner = cbus.client(address, enable_fds=True)
    for _ in range(3):
        assert _ok(inner, SVC, "/Denied") == ACCESS_DENIED
    assert inner.bus("NameHasOwner", "s", SEEN) == (False,)
    assert inner.bus_error("RequestName", "su", APP, DO_NOT_QUEUE).name == ACCESS_DENIED
    assert inner.bus_error("GetId").name == ACCESS_DENIED
    assert inner.bus_error("StartServiceByName", "su", SVC, 0).name == ACCESS_DENIED
    inner.add_match(f"type='signal',interface='{SIG}'")
    world.broadcast("/sig", "Dropped")
    inner.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Peer", "Ping")

    def log_lines():
        return [ln for ln in cbus.daemon.stderr_text().splitlines() if "denied:" in ln and path in ln]

    wait_until(lambda: len(log_lines()) >= 6, what="denial log lines")
    text = "\n".join(log_lines())
    who = f"container {path} (app com.example.Logged 'logme')"
    assert text.count(f"{who}: call from {inner.unique_name} to {SVC} path /Denied "
                      "interface com.example.Test member Echo") == 1, text
    assert f"{who}: see from {inner.unique_name} to {SEEN}" in text
    assert f"{who}: own from {inner.unique_name} to {APP}" in text
    assert f"{who}: GetId from {inner.unique_name} to {BUS_NAME}" in text
    assert f"{who}: activation from {inner.unique_name} to {SVC}" in text
    assert re.search(rf"broadcast from {inner.unique_name} to :\S+ \({SIG}\) path /sig interface {SIG} "
                     "member Dropped", text), text
