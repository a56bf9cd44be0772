"""Command-line entry points: `sandbus-daemon` (dbus-daemon's command line)
and `sandbus` (subcommands)."""

import os
import sys

from . import __version__, build

DAEMON_USAGE = """\
sandbus-daemon [--version] [--session] [--system] [--config-file=FILE]
               [--print-address[=DESCRIPTOR]] [--print-pid[=DESCRIPTOR]]
               [--introspect] [--address=ADDRESS] [--nopidfile] [--nosyslog]
               [--syslog] [--syslog-only] [--nofork] [--fork]
               [--systemd-activation]
"""


class UsageError(Exception):
    pass


def parse_daemon_args(argv):
    from .daemon import DaemonOptions

    opts = DaemonOptions()
    actions = []
    i = 0

    def optional_fd(arg, name):
        nonlocal i
        if arg == name:
            # dbus-daemon also takes the descriptor as the next argument
            if i + 1 < len(argv) and argv[i + 1].isdigit():
                i += 1
                return int(argv[i])
            return 1
        value = arg[len(name) + 1:]
        if not value.isdigit():
            raise UsageError(f"{name} needs a file descriptor number, not {value!r}")
        return int(value)

    def required_value(arg, name):
        nonlocal i
        if arg == name:
            if i + 1 >= len(argv):
                raise UsageError(f"{name} needs a value")
            i += 1
            return argv[i]
        return arg[len(name) + 1:]

    while i < len(argv):
        arg = argv[i]
        if arg in ("--version", "--help", "-h", "--introspect"):
            actions.append(arg)
        elif arg == "--session":
            if opts.bus_type:
                raise UsageError("--session and --system are mutually exclusive")
            opts.bus_type = "session"
        elif arg == "--system":
            if opts.bus_type:
                raise UsageError("--session and --system are mutually exclusive")
            opts.bus_type = "system"
        elif arg == "--config-file" or arg.startswith("--config-file="):
            opts.config_file = required_value(arg, "--config-file")
        elif arg == "--address" or arg.startswith("--address="):
            opts.address = required_value(arg, "--address")
        elif arg == "--print-address" or arg.startswith("--print-address="):
            opts.print_address = optional_fd(arg, "--print-address")
        elif arg == "--print-pid" or arg.startswith("--print-pid="):
            opts.print_pid = optional_fd(arg, "--print-pid")
        elif arg == "--nofork":
            opts.fork = False
        elif arg == "--fork":
            opts.fork = True
        elif arg == "--nopidfile":
            opts.nopidfile = True
        elif arg == "--systemd-activation":
            opts.systemd_activation = True
        elif arg == "--syslog":
            opts.syslog = True
            opts.syslog_only = False
        elif arg == "--syslog-only":
            opts.syslog = True
            opts.syslog_only = True
        elif arg == "--nosyslog":
            opts.syslog = False
            opts.syslog_only = False
        elif arg.startswith("--ready-event-handle="):
            pass  # Windows-only in dbus-daemon
        else:
            raise UsageError(f"unknown option {arg!r}")
        i += 1
    return opts, actions


def _setup_logging(verbose: bool = False) -> None:
    # Here, not at the top: only the daemon logs, and logging (with
    # traceback, threading, string) is a good part of what `sandbus run`
    # would import for nothing (bench/run_startup.py).
    import logging
    level = os.environ.get("SANDBUS_LOG_LEVEL", "DEBUG" if verbose else "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING),
                        format="sandbus[%(process)d]: %(name)s: %(message)s")


def _ensure_std_fds() -> None:
    """Open /dev/null on whichever of fds 0-2 is closed, before anything
    else opens a descriptor: started with stdin closed (`<&-`), the event
    loop's epoll fd would land on 0 and --fork's /dev/null dup onto stdin
    would then destroy it (EINVAL from epoll).  dbus-daemon does the same
    first thing in main()."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # a lower one was closed too and took it first
                os.dup2(null, fd)
                os.close(null)


def daemon_main(argv=None) -> int:
    _ensure_std_fds()
    argv = sys.argv[1:] if argv is None else argv
    _setup_logging()
    try:
        opts, actions = parse_daemon_args(argv)
    except UsageError as e:
        print(f"sandbus-daemon: {e}\n{DAEMON_USAGE}", file=sys.stderr)
        return 1
    if "--help" in actions or "-h" in actions:
        print(DAEMON_USAGE)
        return 0
    if "--version" in actions:
        print(f"sandbus {__version__} (D-Bus Message Bus Daemon compatible with 1.14), {build()}\n"
              "A D-Bus message bus with Containers1 container instances.")
        return 0
    if "--introspect" in actions:
        from .core.introspect import driver_introspection
        sys.stdout.write(driver_introspection(["org.freedesktop.DBus.Monitoring",
                                               "org.freedesktop.DBus.Debug.Stats",
                                               "org.freedesktop.DBus.Containers1"]))
        return 0
    from .daemon import run
    return run(opts)


MAIN_USAGE = """\
usage: sandbus COMMAND [ARGS]

commands:
  daemon [dbus-daemon options]   run a bus (same options as sandbus-daemon)
  session [--config-file=F] -- COMMAND [ARGS]
                                 run COMMAND with a private session bus
  run [OPTIONS] -- COMMAND [ARGS]
                                 run COMMAND in a bubblewrap sandbox on its own
                                 container socket (sandbus run --help)
  container COMMAND ...          manage container instances on a running bus
                                 (add, list, info, stop, rules; sandbus container --help)
  status [--session|--system|--address=A]
                                 the bus at a glance: connections by uid and by
                                 container instance, names, match rules, queues,
                                 recent denials
  monitor [--session|--system|--address=A] [RULE ...]
                                 print the bus's traffic, with each sender's
                                 container instance
  install --user|--system [--dry-run] [--root DIR]
                                 make the stock dbus.socket start sandbus
  uninstall --user|--system [--dry-run] [--root DIR]
                                 undo install: back to dbus-daemon
  version                        print the version

Each command takes --help.
"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(MAIN_USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "daemon":
        return daemon_main(rest)
    if command == "session":
        from .session import session_main
        return session_main(rest)
    if command in ("version", "--version"):
        print(f"sandbus {__version__}, {build()}")
        return 0
    if command == "run":
        from .launcher.run import run_main
        return run_main(rest)
    if command == "container":
        from .containers.cli import container_main
        return container_main(rest)
    if command in ("install", "uninstall"):
        from .install import main as install_main
        return install_main(command, rest)
    if command == "status":
        from .tools.status import main as status_main
        return status_main(rest)
    if command == "monitor":
        from .tools.monitor import main as monitor_main
        return monitor_main(rest)
    print(f"sandbus: unknown command {command!r}\n{MAIN_USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
