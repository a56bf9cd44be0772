"""`sandbus install --user|--system` and `sandbus uninstall`: make the
stock dbus.socket start sandbus instead of dbus-daemon, and back.

This is what dbus-broker's packages do: its unit says ``Alias=dbus.service``
and `systemctl enable` makes ``/etc/systemd/{system,user}/dbus.service`` a
symlink to it.  Both sockets (``dbus.socket``) stay the stock ones; only the
service they start changes.  Here:

- ``sandbus.service`` is written into the administrator's unit directory
  (``/etc/systemd/system``, ``/etc/systemd/user``, or one user's
  ``~/.config/systemd/user``), from the template shipped in the package
  (``units/``) with the absolute path of ``sandbus-daemon`` filled in;
- ``dbus.service`` in that directory becomes a symlink to it; whatever was
  there before (Debian's dbus-broker link, say) is kept beside it as
  ``dbus.service.before-sandbus`` (systemd loads no file of that name);
- ``systemctl daemon-reload`` runs when systemd is the running init.

`uninstall` removes exactly what `install` made and puts the saved entry
back; with none, ``dbus.service`` is the distribution's again (dbus-daemon).
Every change is printed; ``--dry-run`` prints and changes nothing;
``--root DIR`` works on a tree under DIR, as systemctl's ``--root``."""

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from importlib import resources

MARKER = "# installed by `sandbus install"
ALIAS = "dbus.service"
UNIT = "sandbus.service"
SAVED = ALIAS + ".before-sandbus"
PLACEHOLDER = "@SANDBUS_DAEMON@"

# Where systemd looks for units, highest priority first (systemd.unit(5)),
# without the runtime and generator directories nothing here writes.
SEARCH_PATH = {
    "system": ["/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
               "/lib/systemd/system"],
    "user": ["/etc/systemd/user", "/usr/local/lib/systemd/user", "/usr/lib/systemd/user",
             "/lib/systemd/user"],
}


class InstallError(Exception):
    pass


def template(scope: str) -> str:
    return resources.files("sandbus.units").joinpath(scope, UNIT + ".in").read_text()


def render(scope: str, daemon: str) -> str:
    text = template(scope)
    if PLACEHOLDER not in text:
        raise InstallError(f"the packaged {scope} unit has no {PLACEHOLDER}")
    return text.replace(PLACEHOLDER, daemon, 1).replace(
        "# sandbus as", f"{MARKER} --{scope}`\n# sandbus as", 1)


def find_daemon() -> str:
    """The sandbus-daemon beside the running `sandbus` (the same install),
    else the one on PATH; always absolute (ExecStart= wants that)."""
    here = os.path.dirname(os.path.abspath(sys.argv[0] or ""))
    beside = os.path.join(here, "sandbus-daemon")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("sandbus-daemon")
    if found:
        return os.path.abspath(found)
    raise InstallError("cannot find sandbus-daemon; name it with --daemon PATH")


def _user_config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(
        os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir, ".config")
    return os.path.join(base, "systemd", "user")


class Target:
    """Where one scope's units go, and how systemd is told."""

    def __init__(self, scope: str, root: str = None):
        self.scope = scope
        self.root = root
        # The user bus for everyone (like `systemctl --global`) when run as
        # root or on a --root tree; otherwise this user's logins only.
        self.per_user = scope == "user" and root is None and os.geteuid() != 0
        if self.per_user:
            self.directory = _user_config_dir()
        else:
            self.directory = self.rooted(SEARCH_PATH[scope][0])

    def rooted(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/")) if self.root else path

    def search_path(self):
        dirs = [self.rooted(d) for d in SEARCH_PATH[self.scope]]
        return ([self.directory] if self.per_user else []) + dirs

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def resolve(self):
        """What dbus.service is now: (unit file it ends at, where found)."""
        for directory in self.search_path():
            p = os.path.join(directory, ALIAS)
            if os.path.lexists(p):
                return self.follow(p), p
        return None, None

    def follow(self, path: str) -> str:
        """Where a chain of unit symlinks ends; absolute targets are
        inside --root, as systemd reads them there."""
        for _ in range(16):
            if not os.path.islink(path):
                return path if os.path.exists(path) else path + " (missing)"
            link = os.readlink(path)
            path = self.rooted(link) if os.path.isabs(link) else os.path.join(os.path.dirname(path), link)
        return path + " (symlink loop)"


def describe(unit_path) -> str:
    if unit_path is None:
        return "nothing (no dbus.service in any unit directory)"
    try:
        with open(unit_path) as f:
            text = f.read()
    except OSError:
        return unit_path
    for line in text.splitlines():
        words = line[len("ExecStart="):].split() if line.startswith("ExecStart=") else None
        if words:
            return f"{unit_path} ({os.path.basename(words[0].lstrip('-@:+!'))})"
    return unit_path


# -- the plan -------------------------------------------------------------------

class Step:
    def __init__(self, verb, text, apply=None):
        self.verb, self.text, self.apply = verb, text, apply


def _is_ours_link(path: str) -> bool:
    return os.path.islink(path) and os.path.basename(os.readlink(path)) == UNIT


def _is_ours_unit(path: str) -> bool:
    try:
        with open(path) as f:
            return f.read(4096).startswith(MARKER)
    except OSError:
        return False


def _write(path: str, text: str) -> None:
    tmp = path + ".sandbus-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def install_plan(target: Target, daemon: str):
    steps = []
    text = render(target.scope, daemon)
    unit, alias, saved = target.path(UNIT), target.path(ALIAS), target.path(SAVED)
    if not os.path.isdir(target.directory):
        steps.append(Step("mkdir", target.directory, lambda: os.makedirs(target.directory, 0o755)))
    try:
        with open(unit) as f:
            current = f.read()
    except OSError:
        current = None
    if current == text:
        steps.append(Step("keep", f"{unit} (unchanged)"))
    else:
        if current is not None and not current.startswith(MARKER):
            raise InstallError(f"{unit} exists and was not written by sandbus install; remove it first")
        steps.append(Step("write", f"{unit} (ExecStart={daemon} --{'session' if target.scope == 'user' else 'system'} ...)",
                          lambda: _write(unit, text)))
    if _is_ours_link(alias):
        steps.append(Step("keep", f"{alias} -> {UNIT} (unchanged)"))
    else:
        if os.path.lexists(alias):
            if os.path.lexists(saved):
                raise InstallError(f"both {alias} and {saved} exist; move one away first")
            was = os.readlink(alias) if os.path.islink(alias) else "a file"
            steps.append(Step("save", f"{alias} (-> {was}) as {saved}", lambda: os.rename(alias, saved)))
        steps.append(Step("link", f"{alias} -> {UNIT}", lambda: os.symlink(UNIT, alias)))
    return steps


def uninstall_plan(target: Target):
    steps = []
    unit, alias, saved = target.path(UNIT), target.path(ALIAS), target.path(SAVED)
    if _is_ours_link(alias):
        steps.append(Step("remove", alias, lambda: os.unlink(alias)))
        if os.path.lexists(saved):
            was = os.readlink(saved) if os.path.islink(saved) else "a file"
            steps.append(Step("restore", f"{alias} (-> {was}) from {saved}", lambda: os.rename(saved, alias)))
    elif os.path.lexists(alias):
        steps.append(Step("keep", f"{alias}: not sandbus's, left alone"))
    if os.path.lexists(unit):
        if _is_ours_unit(unit):
            steps.append(Step("remove", unit, lambda: os.unlink(unit)))
        else:
            steps.append(Step("keep", f"{unit}: not written by sandbus install, left alone"))
    return steps


def _writable(directory: str) -> bool:
    """Whether the directory, or the nearest one that exists above it
    (where it would be made), is writable by us."""
    d = directory
    while not os.path.exists(d):
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return os.access(d, os.W_OK)


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 when this directory exists."""
    return os.path.isdir("/run/systemd/system")


def reload_step(target: Target):
    if target.root is not None:
        return Step("skip", f"systemctl daemon-reload (--root {target.root}: not the running system)")
    argv = ["systemctl", "--user", "daemon-reload"] if target.per_user else ["systemctl", "daemon-reload"]
    shown = " ".join(argv)
    if not systemd_running():
        return Step("skip", f"{shown} (systemd is not running here: no /run/systemd/system)")
    if target.scope == "user" and not target.per_user:
        return Step("note", "each user's systemd reads the change at its next start "
                            "(or run `systemctl --user daemon-reload` in a session)")

    def apply():
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"sandbus: {shown} failed: {done.stderr.strip()}", file=sys.stderr)
    return Step("run", shown, apply)


def _execute(steps, dry_run: bool, out) -> int:
    changes = [s for s in steps if s.apply is not None]
    for step in steps:
        prefix = "would " if dry_run and step.apply is not None else ""
        print(f"{prefix}{step.verb:<8} {step.text}", file=out)
        if not dry_run and step.apply is not None:
            step.apply()
    return len(changes)


def _parser(command):
    p = argparse.ArgumentParser(
        prog=f"sandbus {command}",
        description=("Make the stock dbus.socket start sandbus (dbus.service -> sandbus.service)."
                     if command == "install" else
                     "Undo `sandbus install`: dbus.service is dbus-daemon (or what was there) again."))
    scope = p.add_mutually_exclusive_group(required=True)
    scope.add_argument("--user", dest="scope", action="store_const", const="user",
                       help="the user bus (as root: every user's; else: your own logins)")
    scope.add_argument("--system", dest="scope", action="store_const", const="system", help="the system bus")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--root", metavar="DIR", help="work on the tree under DIR (packaging, tests)")
    if command == "install":
        p.add_argument("--daemon", metavar="PATH", help="the sandbus-daemon for ExecStart= (default: found)")
    return p


def main(command: str, argv) -> int:
    args = _parser(command).parse_args(argv)
    out = sys.stdout
    target = Target(args.scope, os.path.abspath(args.root) if args.root else None)
    try:
        if command == "install":
            daemon = os.path.abspath(args.daemon) if args.daemon else find_daemon()
            steps = install_plan(target, daemon)
        else:
            steps = uninstall_plan(target)
    except InstallError as e:
        print(f"sandbus {command}: {e}", file=sys.stderr)
        return 1
    if not any(s.apply for s in steps):
        for step in steps:
            print(f"{step.verb:<8} {step.text}", file=out)
        print(f"nothing to change; dbus.service is {describe(target.resolve()[0])}", file=out)
        return 0
    if not args.dry_run and not _writable(target.directory):
        hint = " (run it as root)" if os.geteuid() != 0 else ""
        print(f"sandbus {command}: cannot write {target.directory}: permission denied{hint}; nothing changed",
              file=sys.stderr)
        return 1
    steps.append(reload_step(target))
    try:
        _execute(steps, args.dry_run, out)
    except OSError as e:
        print(f"sandbus {command}: {e}", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(f"dbus.service is now {describe(target.resolve()[0])}", file=out)
        if command == "install":
            when = "the next login" if args.scope == "user" else "the next boot"
            print(f"new buses start with {when}; the running bus is left alone. "
                  f"Way back: sandbus uninstall --{args.scope}", file=out)
    return 0
