"""The bubblewrap command line for `sandbus run`: a default sandbox like
`flatpak-spawn --sandbox` (new user, pid, ipc, uts and, unless shared, net
namespaces; read-only /usr and the parts of /etc a program needs; private
/tmp and XDG_RUNTIME_DIR; $HOME empty unless granted; no new privileges,
as bwrap always sets; the sandbox dies with the launcher) plus what the
options grant."""

import os

# The parts of /etc a program needs: name resolution, users, locale, TLS,
# the dynamic linker.  Missing ones are skipped.
ETC_FILES = (
    "passwd", "group", "nsswitch.conf", "hosts", "host.conf", "resolv.conf", "gai.conf",
    "localtime", "timezone", "locale.alias", "locale.conf", "ld.so.cache", "ld.so.conf",
    "ld.so.conf.d", "ssl", "ca-certificates", "pki", "alternatives", "fonts", "mime.types",
    "machine-id", "os-release", "xdg", "dbus-1",
)
_MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def sandbox_args(opts, *, uid: int, runtime_socket, home: str, env_out: dict, sandbox_dir=None) -> list:
    """bwrap arguments up to (not including) the command.  ``runtime_socket``
    is the host path of the bus socket to bind at $XDG_RUNTIME_DIR/bus
    inside (None: no bus at all); ``env_out`` receives the environment to
    set inside; ``sandbox_dir`` (the app's ~/.var/app/APP_ID/sandbox) is
    bound at the same path, for what the app exposes to sandboxes it
    spawns (launcher/portal.py)."""
    runtime = f"/run/user/{uid}"
    a = ["--unshare-user", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
         "--die-with-parent", "--new-session", "--hostname", "sandbus"]
    if "ipc" not in opts.share:
        a.append("--unshare-ipc")
    if "network" not in opts.share:
        a.append("--unshare-net")
    a += ["--ro-bind", "/usr", "/usr"]
    for d in _MERGED:
        host = "/" + d
        if os.path.islink(host):
            a += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            a += ["--ro-bind", host, host]
    a += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
          "--dir", "/var", "--symlink", "../run", "/var/run", "--tmpfs", "/var/tmp"]
    for name in ETC_FILES:
        path = "/etc/" + name
        if os.path.lexists(path):
            a += ["--ro-bind-try", path, path]
    a += ["--dir", runtime, "--chmod", "0700", runtime]
    if runtime_socket is not None:
        a += ["--bind", runtime_socket, f"{runtime}/bus"]
    a += ["--dir", home]
    if sandbox_dir is not None:
        a += ["--bind", sandbox_dir, sandbox_dir]
    env_out.update({
        "XDG_RUNTIME_DIR": runtime,
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus" if runtime_socket is not None else None,
        "HOME": home,
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    })
    # The host's values would point at what is not there.
    for var in ("DBUS_SYSTEM_BUS_ADDRESS", "DBUS_STARTER_ADDRESS", "DBUS_STARTER_BUS_TYPE",
                "WAYLAND_DISPLAY", "DISPLAY", "PULSE_SERVER", "XAUTHORITY"):
        env_out.setdefault(var, None)
    if "dri" in opts.devices and os.path.exists("/dev/dri"):
        a += ["--dev-bind", "/dev/dri", "/dev/dri"]
    if "all" in opts.devices:
        a += ["--dev-bind", "/dev", "/dev"]
    host_runtime = os.environ.get("XDG_RUNTIME_DIR", runtime)
    if "wayland" in opts.sockets:
        display = os.environ.get("WAYLAND_DISPLAY", "wayland-0")
        src = display if os.path.isabs(display) else os.path.join(host_runtime, display)
        if os.path.exists(src):
            a += ["--ro-bind", src, f"{runtime}/wayland-0"]
            env_out["WAYLAND_DISPLAY"] = "wayland-0"
    if "x11" in opts.sockets:
        display = os.environ.get("DISPLAY", "")
        num = display.split(":", 1)[1].split(".")[0] if ":" in display else ""
        src = f"/tmp/.X11-unix/X{num}"
        if num.isdigit() and os.path.exists(src):
            a += ["--ro-bind", src, "/tmp/.X11-unix/X99"]
            env_out["DISPLAY"] = ":99"
            xauth = os.environ.get("XAUTHORITY")
            if xauth and os.path.exists(xauth):
                a += ["--ro-bind", xauth, f"{runtime}/Xauthority"]
                env_out["XAUTHORITY"] = f"{runtime}/Xauthority"
    if "pulseaudio" in opts.sockets:
        src = os.path.join(host_runtime, "pulse", "native")
        if os.path.exists(src):
            a += ["--ro-bind", src, f"{runtime}/pulse/native"]
            env_out["PULSE_SERVER"] = f"unix:{runtime}/pulse/native"
    host_home = os.path.expanduser("~")
    for path, ro in opts.filesystems:
        bind = "--ro-bind" if ro else "--bind"
        if path == "home":
            targets = [(host_home, home)]
        elif path == "host":
            targets = [(p, p) for p in ("/home", "/media", "/mnt", "/opt", "/srv", "/tmp")
                       if os.path.isdir(p)] + [(host_home, home)]
        else:
            targets = [(path, path)]
        for src, dest in targets:
            a += [bind, src, dest]
    for d in opts.persist:
        src = os.path.join(host_home, ".var", "app", opts.app_id, d)
        os.makedirs(src, mode=0o700, exist_ok=True)
        a += ["--bind", src, os.path.join(home, d)]
    a += ["--chdir", home]
    env_out.update(opts.env)
    return a


def env_args(env: dict) -> list:
    out = []
    for k, v in env.items():
        out += ["--unsetenv", k] if v is None else ["--setenv", k, v]
    return out


def commands_under(init_pid) -> list:
    """The processes bwrap's init (init_pid, from --info-fd) started: the
    command.  Init passes no signals on, so signals go to these."""
    if not init_pid:
        return []
    try:
        with open(f"/proc/{init_pid}/task/{init_pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
