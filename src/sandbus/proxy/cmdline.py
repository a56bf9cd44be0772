"""xdg-dbus-proxy's command line, exactly as Flatpak writes it:

    [--fd=FD] [--args=FD] ADDRESS PATH [--filter] [--log] [--sloppy-names]
        [--see=NAME] [--talk=NAME] [--own=NAME] [--call=NAME=RULE]
        [--broadcast=NAME=RULE] [ADDRESS PATH ...]

`--args=FD` is replaced, where it stands, by the NUL-separated arguments
read from FD to its end (Flatpak passes a sealed memfd); `--fd` and
`--args` may stand anywhere, the proxy options only after an ADDRESS PATH
pair.  The error texts are xdg-dbus-proxy's."""

import os

from .. import __version__
from ..wire.names import is_valid_bus_name

PROG = "sandbus-dbus-proxy"
USAGE = """\
usage: {prog} [OPTIONS...] [ADDRESS PATH [OPTIONS...] ...]

Options:
    --help                       Print this help
    --version                    Print version
    --fd=FD                      Stop when FD is closed
    --args=FD                    Read arguments from FD

Proxy Options:
    --filter                     Enable filtering
    --log                        Turn on logging
    --sloppy-names               Report name changes for unique names
    --see=NAME                   Set 'see' policy for NAME
    --talk=NAME                  Set 'talk' policy for NAME
    --own=NAME                   Set 'own' policy for NAME
    --call=NAME=RULE             Set RULE for calls on NAME
    --broadcast=NAME=RULE        Set RULE for broadcasts from NAME

On a bus with Containers1 (sandbus) each ADDRESS PATH becomes a container
instance of type org.flatpak listening on PATH, with no proxy in between;
on any other bus it is a filtering proxy on PATH, as xdg-dbus-proxy is.
"""
VERSION = f"{PROG} {__version__} (xdg-dbus-proxy compatible)"


class CmdlineError(Exception):
    """A bad command line: the one line to print."""


class Exit(Exception):
    """--help or --version: print text to stdout and exit 0."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text


class Group:
    """One ADDRESS PATH [options] group."""

    def __init__(self, address: str, path: str):
        self.address = address
        self.path = path
        self.filter = False
        self.log = False
        self.sloppy_names = False
        self.see = []
        self.talk = []
        self.own = []
        self.call = []
        self.broadcast = []
        self.options = []  # as given, to hand the group on to another proxy

    def argv(self) -> list:
        return [self.address, self.path, *self.options]


class ProxyArgs:
    def __init__(self):
        self.sync_fd = None
        self.groups = []


def read_args_fd(fd: int) -> list:
    """The NUL-separated arguments in fd, read to its end (a final
    argument without its NUL counts, as in xdg-dbus-proxy)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError as e:
            raise CmdlineError(f"Failed to load --args: {e.strerror}") from None
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return []
    parts = data.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    return [os.fsdecode(p) for p in parts]


def _fd_value(text: str, what: str) -> int:
    if not text.isdigit():
        raise CmdlineError(f"{what} {text}")
    return int(text)


def _generic(args: list, i: int, result: ProxyArgs, prog: str) -> int:
    """--help, --version, --fd, --args at args[i]; the next index."""
    arg = args[i]
    if arg == "--help":
        raise Exit(USAGE.format(prog=prog))
    if arg == "--version":
        raise Exit(VERSION + "\n")
    if arg.startswith("--fd="):
        result.sync_fd = _fd_value(arg[len("--fd="):], "Invalid fd")
        return i + 1
    if arg.startswith("--args="):
        fd = _fd_value(arg[len("--args="):], "Invalid --args fd")
        args[i + 1:i + 1] = read_args_fd(fd)
        return i + 1
    raise CmdlineError(f"Unknown argument {arg}")


def _policy_name(arg: str) -> str:
    name = arg.partition("=")[2]
    bare = name[:-2] if name.endswith(".*") else name
    if bare.startswith(":") or not is_valid_bus_name(bare):
        raise CmdlineError(f"'{bare}' is not a valid dbus name")
    return name


def _name_and_rule(arg: str) -> str:
    rest = arg.partition("=")[2]
    name, eq, _rule = rest.partition("=")
    if not eq:
        raise CmdlineError(f"'{rest}' is not a valid name + rule")
    bare = name[:-2] if name.endswith(".*") else name
    if bare.startswith(":") or not is_valid_bus_name(bare):
        raise CmdlineError(f"'{bare}' is not a valid dbus name")
    return rest


POLICIES = {"--see=": "see", "--talk=": "talk", "--own=": "own"}
RULES = {"--call=": "call", "--broadcast=": "broadcast"}
FLAGS = {"--filter": "filter", "--log": "log", "--sloppy-names": "sloppy_names"}


def parse(argv, prog: str = PROG) -> ProxyArgs:
    """argv without the program name."""
    if not argv:
        raise CmdlineError(USAGE.format(prog=prog).rstrip("\n"))
    args = list(argv)
    result = ProxyArgs()
    i = 0
    while i < len(args):
        if args[i].startswith("-"):
            i = _generic(args, i, result, prog)
            continue
        address = args[i]
        i += 1
        if i >= len(args) or args[i].startswith("-"):
            raise CmdlineError("No socket path given")
        group = Group(address, args[i])
        i += 1
        while i < len(args) and args[i].startswith("-"):
            arg = args[i]
            prefix = arg[:arg.index("=") + 1] if "=" in arg else arg
            if prefix in POLICIES:
                getattr(group, POLICIES[prefix]).append(_policy_name(arg))
            elif prefix in RULES:
                getattr(group, RULES[prefix]).append(_name_and_rule(arg))
            elif arg in FLAGS:
                setattr(group, FLAGS[arg], True)
            else:
                i = _generic(args, i, result, prog)
                continue
            group.options.append(arg)
            i += 1
        result.groups.append(group)
    if not result.groups:
        raise CmdlineError("No proxies specified")
    return result
