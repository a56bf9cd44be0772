"""`sandbus session -- COMMAND`: dbus-run-session with a sandbus bus."""

import os
import signal
import subprocess
import sys
import tempfile


USAGE = """\
usage: sandbus session [--config-file=FILE] [--] [COMMAND [ARGS]]

Run COMMAND (default: $SHELL) with DBUS_SESSION_BUS_ADDRESS set to a private
sandbus session bus that lives as long as it does (like dbus-run-session)."""


def session_main(argv) -> int:
    config_args = []
    while argv and argv[0] != "--":
        arg = argv.pop(0)
        if arg in ("-h", "--help"):
            print(USAGE)
            return 0
        if arg.startswith("--config-file="):
            config_args.append(arg)
        else:
            print(f"sandbus session: unknown option {arg!r}", file=sys.stderr)
            return 2
    if argv and argv[0] == "--":
        argv.pop(0)
    if not argv:
        argv = [os.environ.get("SHELL", "/bin/sh")]
    with tempfile.TemporaryDirectory(prefix="sandbus-session-") as tmp:
        read_fd, write_fd = os.pipe()
        bus_args = config_args or ["--session"]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "sandbus.cli", "daemon", *bus_args, "--nofork", "--nopidfile",
             f"--address=unix:dir={tmp}", f"--print-address={write_fd}"],
            pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            address = pipe.readline().strip()
        if not address:
            daemon.wait()
            print("sandbus session: the bus failed to start", file=sys.stderr)
            return 127
        env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address)
        env.pop("DBUS_STARTER_ADDRESS", None)
        env.pop("DBUS_STARTER_BUS_TYPE", None)
        try:
            child = subprocess.Popen(argv, env=env)
        except OSError as e:
            daemon.terminate()
            daemon.wait()
            print(f"sandbus session: cannot run {argv[0]}: {e}", file=sys.stderr)
            return 127
        try:
            status = child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            status = child.wait()
        daemon.terminate()
        try:
            daemon.wait(timeout=5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    return status if status >= 0 else 128 - status
