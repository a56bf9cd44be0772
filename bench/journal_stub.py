"""Run a command with a throw-away journal socket.

dbus-broker-launch refuses to start without /run/systemd/journal/socket.
Where the host has none, ``systems.DbusBroker`` runs us inside a private
mount namespace (``unshare -m --propagation private``): we mount a tmpfs
over /run/systemd/journal (or over /run/systemd if that directory is
missing), bind a datagram socket there, run the command and discard what
it logs until it exits. Nothing outside the namespace is changed.

Usage: python -m bench.journal_stub COMMAND [ARGS...]
"""

import os
import signal
import socket
import subprocess
import sys

JOURNAL_DIR = "/run/systemd/journal"


def mount_tmpfs(target):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", target], check=True)


def main():
    if os.path.isdir(JOURNAL_DIR):
        mount_tmpfs(JOURNAL_DIR)
    elif os.path.isdir("/run/systemd"):
        mount_tmpfs("/run/systemd")
        os.mkdir(JOURNAL_DIR)
    else:
        mount_tmpfs("/run")
        os.makedirs(JOURNAL_DIR)
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(JOURNAL_DIR + "/socket")
    sink.settimeout(0.2)
    child = subprocess.Popen(sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    signal.signal(signal.SIGINT, lambda *_: child.terminate())
    while child.poll() is None:
        try:
            sink.recv(1 << 16)
        except (socket.timeout, InterruptedError):
            pass
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
