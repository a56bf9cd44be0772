"""A tiny Flatpak world, offline: a runtime made of host binaries (sh,
dbus-send and their libraries), one app built with `flatpak build-init` /
`build-finish` / `build-export`, a local repository, and a private
installation (`flatpak --user` under FLATPAK_USER_DIR), so nothing of the
host's Flatpak setup is touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

FLATPAK = shutil.which("flatpak")
BWRAP = shutil.which("bwrap")
RUNTIME = "org.example.Platform"
APP = "org.example.App"
TALK = "org.example.Service"
OWN = "org.example.Extra"
HOST_BINARIES = ("sh", "dbus-send", "tr", "true")

# /app/bin/app: what the app does inside its sandbox, one result per line.
APP_SCRIPT = f"""#!/bin/sh
call() {{ dbus-send --session --print-reply "$@" 2>&1 | tr '\\n' ' '; echo; }}
echo "talk: $(call --dest={TALK} /org/example/Service {TALK}.Hello)"
echo "other: $(call --dest=org.example.Other /org/example/Other org.example.Other.Hello)"
echo "has-other: $(call --dest=org.freedesktop.DBus / org.freedesktop.DBus.NameHasOwner string:org.example.Other)"
echo "own: $(call --dest=org.freedesktop.DBus / org.freedesktop.DBus.RequestName string:{OWN} uint32:4)"
echo "own-nope: $(call --dest=org.freedesktop.DBus / org.freedesktop.DBus.RequestName string:org.example.Nope uint32:4)"
"""


def userns_problem():
    """Why bubblewrap cannot make a sandbox here, or None."""
    if BWRAP is None:
        return "bwrap is not installed"
    r = subprocess.run([BWRAP, "--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "--dev", "/dev",
                        "--proc", "/proc", "true"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"bubblewrap cannot create namespaces here (user namespaces unavailable?): {r.stderr.strip()}"
    return None


def _libraries(binary: str) -> list:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return [w for line in out.splitlines() for w in line.split() if w.startswith("/")]


class FlatpakWorld:
    def __init__(self, root: Path, python: str = sys.executable):
        self.root = root
        self.env = dict(os.environ)
        self.env.update({
            "HOME": str(root / "home"),
            "FLATPAK_USER_DIR": str(root / "user"),
            "FLATPAK_SYSTEM_DIR": str(root / "system"),
            "FLATPAK_CONFIG_DIR": str(root / "config"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        })
        for k in ("DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS", "FLATPAK_DBUSPROXY"):
            self.env.pop(k, None)
        (root / "home").mkdir()
        (root / "run").mkdir(mode=0o700)
        # sandbus-dbus-proxy from this tree, wherever Flatpak's proxy sandbox starts it
        self.sandbus_proxy = root / "sandbus-dbus-proxy"
        self.sandbus_proxy.write_text(f"#!/bin/sh\nexec {python} -m sandbus.proxy \"$@\"\n")
        self.sandbus_proxy.chmod(0o755)

    def flatpak(self, *args, check=True, timeout=60, env=None):
        r = subprocess.run([FLATPAK, *args], env=env or self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"flatpak {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def build(self) -> None:
        root = self.root
        runtime = root / "runtime"
        usr = runtime / "usr"
        for d in ("bin", "lib/x86_64-linux-gnu", "lib64", "etc"):
            (usr / d).mkdir(parents=True)
        for name in HOST_BINARIES:
            binary = shutil.which(name)
            shutil.copy(binary, usr / "bin" / name)
            for lib in _libraries(binary):
                dest = usr / ("lib64" if "/ld-linux" in lib else "lib/x86_64-linux-gnu") / os.path.basename(lib)
                if not dest.exists():
                    shutil.copy(lib, dest)
        ldconfig = shutil.which("ldconfig") or "/usr/sbin/ldconfig"
        shutil.copy(ldconfig, usr / "bin" / "ldconfig")
        (usr / "etc" / "ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
        (runtime / "metadata").write_text(f"[Runtime]\nname={RUNTIME}\nruntime={RUNTIME}/x86_64/stable\n"
                                          f"sdk={RUNTIME}/x86_64/stable\n")
        repo = root / "repo"
        self.flatpak("build-export", "--runtime", "--files=usr", str(repo), str(runtime), "stable")
        self.flatpak("--user", "remote-add", "--no-gpg-verify", "local", f"file://{repo}")
        self.flatpak("--user", "install", "-y", "--noninteractive", "local", RUNTIME)
        app = root / "app"
        self.flatpak("build-init", str(app), APP, RUNTIME, RUNTIME, "stable")
        (app / "files" / "bin").mkdir(parents=True)
        script = app / "files" / "bin" / "app"
        script.write_text(APP_SCRIPT)
        script.chmod(0o755)
        self.flatpak("build-finish", str(app), "--command=app", f"--talk-name={TALK}", f"--own-name={OWN}")
        self.flatpak("build-export", str(repo), str(app), "stable")
        self.flatpak("--user", "install", "-y", "--noninteractive", "local", APP)

    def run(self, bus_address: str, proxy=None, command=None, timeout=60):
        """flatpak run APP (or --command=COMMAND) on the session bus
        bus_address, through proxy (None: xdg-dbus-proxy, Flatpak's default)."""
        env = dict(self.env, DBUS_SESSION_BUS_ADDRESS=bus_address)
        if proxy is not None:
            env["FLATPAK_DBUSPROXY"] = str(proxy)
        args = ["run", "--user"]
        if command is not None:
            args.append(f"--command={command}")
        return self.flatpak(*args, APP, check=False, timeout=timeout, env=env)
