"""`sandbus run` options, in Flatpak's words, and what they compile to:
Allow rules for the app's container instance (through the same shorthand
compiler as `sandbus container add`, containers/shorthand.py) and sandbox settings
for bubblewrap (launcher/sandbox.py)."""

import os
import re

from ..containers.rules import SEND_UNIX_FDS
from ..containers.shorthand import ShorthandError, compile_rules, method_rule
from ..wire.names import is_valid_bus_name

SHARES = ("network", "ipc")
SOCKETS = ("wayland", "x11", "pulseaudio", "session-bus", "system-bus")
DEVICES = ("dri", "all")
# What Flatpak grants every app on the session bus besides its own options
# (flatpak's session-bus filter): its own names, and the portals.
PORTAL_ARGS = ("--call=org.freedesktop.portal.*=*",
               "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*")

USAGE = """\
usage: sandbus run [OPTIONS] -- COMMAND [ARGS]

Run COMMAND in a bubblewrap sandbox with its own container socket on the
session bus, allowed only what the options say (Flatpak's spelling):
  --app-id=ID                 reverse-DNS id (default: derived from COMMAND)
  --talk-name=NAME            call NAME and receive its signals (NAME.* for a subtree)
  --own-name=NAME             own NAME (APP_ID.* is always allowed)
  --see-name=NAME             see that NAME exists
  --call=NAME=RULE            call methods RULE ([IFACE.METHOD|IFACE.*][@PATH[/*]]) on NAME
  --broadcast=NAME=RULE       receive signals RULE from NAME
  --share=network|ipc         keep the host's network / IPC namespace
  --socket=wayland|x11|pulseaudio|session-bus
                              give the app that socket (session-bus: unfiltered,
                              still identified as this instance)
  --device=dri|all            give the app /dev/dri or all of /dev
  --filesystem=host|home|PATH[:ro]
                              give the app those files (read-write unless :ro)
  --persist=DIR               keep ~/DIR in ~/.var/app/APP_ID/DIR
  --env=VAR=VALUE             set VAR inside
  --learn                     record what the rules deny; print the options
                              that would have allowed it at exit
  --address=ADDRESS           the bus (default: $DBUS_SESSION_BUS_ADDRESS)
  --system-talk-name, --system-own-name, --system-see-name, --socket=system-bus:
                              not supported yet (the system bus has no Containers1)

Inside, `flatpak-spawn --sandbox [--no-network] CMD` starts CMD in a sibling
sandbox with no more than the app has (the app's org.freedesktop.portal.Flatpak
is this launcher); files are exposed to it from ~/.var/app/APP_ID/sandbox.
"""


class UsageError(Exception):
    pass


class RunOptions:
    def __init__(self):
        self.app_id = None
        self.talk = []
        self.own = []
        self.see = []
        self.call = []
        self.broadcast = []
        self.share = set()
        self.sockets = set()
        self.devices = set()
        self.filesystems = []  # (path or "host"/"home", read_only)
        self.persist = []
        self.env = {}
        self.learn = False
        self.address = None
        self.command = []
        self.help = False

    # -- what they compile to -------------------------------------------------

    def unfiltered(self) -> bool:
        return "session-bus" in self.sockets

    def implied_own(self) -> list:
        return [f"{self.app_id}.*", f"org.mpris.MediaPlayer2.{self.app_id}.*"]

    def allow_rules(self) -> list:
        """The a(usos) Allow rules of the app's instance, implied ones
        included; the portals may be passed fds, as under Flatpak
        (OpenFile, Print, Spawn's stdio: launcher/portal.py)."""
        rules = compile_rules(see=self.see, talk=self.talk, own=self.own + self.implied_own(),
                              call=self.call, broadcast=self.broadcast + [PORTAL_ARGS[1].split("=", 1)[1]])
        portal_call = compile_rules(call=[PORTAL_ARGS[0].split("=", 1)[1]])
        return rules + [(f | SEND_UNIX_FDS, n, p, i) for f, n, p, i in portal_call]

    def permission_args(self) -> list:
        """The options given, as `sandbus run` arguments (metadata, --learn)."""
        out = [f"--talk-name={n}" for n in self.talk]
        out += [f"--own-name={n}" for n in self.own]
        out += [f"--see-name={n}" for n in self.see]
        out += [f"--call={c}" for c in self.call]
        out += [f"--broadcast={b}" for b in self.broadcast]
        out += [f"--share={s}" for s in sorted(self.share)]
        out += [f"--socket={s}" for s in sorted(self.sockets)]
        out += [f"--device={d}" for d in sorted(self.devices)]
        out += [f"--filesystem={p}{':ro' if ro else ''}" for p, ro in self.filesystems]
        out += [f"--persist={p}" for p in self.persist]
        return out


_FLAG_OPTIONS = {"--learn", "--help", "-h"}
_VALUE_OPTIONS = {
    "--app-id", "--talk-name", "--own-name", "--see-name", "--call", "--broadcast", "--share",
    "--socket", "--device", "--filesystem", "--persist", "--env", "--address",
    "--system-talk-name", "--system-own-name", "--system-see-name",
}
_APP_ID_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _check_name(option: str, name: str) -> None:
    base = name[:-2] if name.endswith(".*") else name
    if name.startswith(":") or not is_valid_bus_name(base):
        raise UsageError(f"{option}: {name!r} is not a well-known bus name (NAME or NAME.*)")


def _check_app_id(app_id: str) -> None:
    parts = app_id.split(".")
    # Flatpak's rule: reverse DNS, at least three elements, and (since it
    # prefixes bus names) only characters a bus name allows.
    if len(parts) < 3 or len(app_id) > 255 or not all(_APP_ID_ELEMENT.match(p) for p in parts[:-1]) \
            or not re.match(r"[A-Za-z_][A-Za-z0-9_-]*\Z", parts[-1]):
        raise UsageError(f"--app-id: {app_id!r} is not a reverse-DNS application id "
                         "(like org.example.App: three or more elements of letters, digits, _)")


def default_app_id(command: str) -> str:
    base = os.path.basename(command) or "app"
    base = re.sub(r"[^A-Za-z0-9_]", "_", base)
    if base[0].isdigit():
        base = "_" + base
    return f"org.sandbus.run.{base}"


def parse_run_args(argv) -> RunOptions:
    o = RunOptions()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            o.command = list(argv[i + 1:])
            break
        if not arg.startswith("-"):
            o.command = list(argv[i:])
            break
        name, eq, value = arg.partition("=")
        if name in _FLAG_OPTIONS:
            if eq:
                raise UsageError(f"{name} takes no value")
            if name == "--learn":
                o.learn = True
            else:
                o.help = True
            i += 1
            continue
        if name not in _VALUE_OPTIONS:
            raise UsageError(f"unknown option {name!r} (see sandbus run --help)")
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"{name} needs a value")
            i += 1
            value = argv[i]
        _apply(o, name, value)
        i += 1
    if o.help:
        return o
    if not o.command:
        raise UsageError("no command given (sandbus run [OPTIONS] -- COMMAND [ARGS])")
    if o.app_id is None:
        o.app_id = default_app_id(o.command[0])
    return o


def _apply(o: RunOptions, name: str, value: str) -> None:
    if name.startswith("--system-"):
        raise UsageError(f"{name}: the system bus is not supported yet (it has no Containers1 "
                         "interface, and sandbus run has no proxy for such a bus)")
    if name == "--app-id":
        _check_app_id(value)
        o.app_id = value
    elif name in ("--talk-name", "--own-name", "--see-name"):
        _check_name(name, value)
        {"--talk-name": o.talk, "--own-name": o.own, "--see-name": o.see}[name].append(value)
    elif name in ("--call", "--broadcast"):
        bus_name, eq, rule = value.partition("=")
        if not eq:
            raise UsageError(f"{name} needs NAME=RULE, not {value!r}")
        _check_name(name, bus_name)
        try:
            method_rule(value, 0)
        except ShorthandError as e:
            raise UsageError(f"{name}: {e}") from None
        (o.call if name == "--call" else o.broadcast).append(value)
    elif name == "--share":
        if value not in SHARES:
            raise UsageError(f"--share: {value!r} is not one of {', '.join(SHARES)}")
        o.share.add(value)
    elif name == "--socket":
        if value == "system-bus":
            raise UsageError("--socket=system-bus: the system bus is not supported yet (it has no "
                             "Containers1 interface, and sandbus run has no proxy for such a bus)")
        if value not in SOCKETS:
            raise UsageError(f"--socket: {value!r} is not one of {', '.join(SOCKETS)}")
        o.sockets.add(value)
    elif name == "--device":
        if value not in DEVICES:
            raise UsageError(f"--device: {value!r} is not one of {', '.join(DEVICES)}")
        o.devices.add(value)
    elif name == "--filesystem":
        path, ro = value, False
        for suffix, read_only in ((":ro", True), (":rw", False)):
            if path.endswith(suffix):
                path, ro = path[:-len(suffix)], read_only
        if path not in ("host", "home"):
            if path.startswith("~/") or path == "~":
                path = os.path.expanduser(path)
            if not os.path.isabs(path):
                raise UsageError(f"--filesystem: {value!r} is not host, home or an absolute path")
            if not os.path.exists(path):
                raise UsageError(f"--filesystem: {path} does not exist")
        o.filesystems.append((path, ro))
    elif name == "--persist":
        if not value or os.path.isabs(value) or ".." in value.split("/"):
            raise UsageError(f"--persist: {value!r} must be a relative directory without '..'")
        o.persist.append(value.strip("/"))
    elif name == "--env":
        key, eq, val = value.partition("=")
        if not eq or not key or not re.match(r"[A-Za-z_][A-Za-z0-9_]*\Z", key):
            raise UsageError(f"--env needs VAR=VALUE, not {value!r}")
        o.env[key] = val
    elif name == "--address":
        o.address = value


def learned_run_args(fargs, given) -> list:
    """xdg-dbus-proxy arguments (GetLearnedRules) as `sandbus run` options,
    leaving out what was given already."""
    spelled = {"--talk=": "--talk-name=", "--own=": "--own-name=", "--see=": "--see-name="}
    out = []
    for a in fargs:
        for old, new in spelled.items():
            if a.startswith(old):
                a = new + a[len(old):]
                break
        if a not in given and a not in out and a not in PORTAL_ARGS:
            out.append(a)
    return out
