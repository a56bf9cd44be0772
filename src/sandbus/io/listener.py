"""Listening sockets for D-Bus addresses: unix path/abstract/dir/tmpdir/runtime."""

import os
import secrets
import socket

from ..wire.address import AddressError, format_address, parse_addresses


class Listener:
    """A bound, listening socket and the client address that reaches it."""

    def __init__(self, sock: socket.socket, address_params: tuple, path=None, owned: bool = True):
        self.sock = sock
        self.transport, self.params = address_params
        self.path = path  # filesystem socket to unlink on close
        self.owned = owned
        self.container = None  # set for container instance sockets
        self.allowed_uid = None  # when set, only this uid may authenticate

    def address(self, guid: str) -> str:
        return format_address(self.transport, {**self.params, "guid": guid})

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self.path and self.owned:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None


def _unix_socket() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)


def bind_unix_path(path: str, backlog: int = 4096) -> Listener:
    sock = _unix_socket()
    try:
        if os.path.exists(path):
            # A stale socket from a dead bus may be replaced; anything else may not.
            import stat
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return Listener(sock, ("unix", {"path": path}), path=path)


def bind_unix_abstract(name: str, backlog: int = 4096) -> Listener:
    sock = _unix_socket()
    try:
        sock.bind("\0" + name)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return Listener(sock, ("unix", {"abstract": name}))


def listen(address: str) -> list:
    """Bind every address in a ';'-separated list (dbus-daemon's <listen>)."""
    result = []
    try:
        for transport, params in parse_addresses(address):
            result.append(_listen_one(transport, params))
    except Exception:
        for lst in result:
            lst.close()
        raise
    return result


def _listen_one(transport: str, params: dict) -> Listener:
    if transport != "unix":
        raise AddressError(f"unsupported transport {transport!r} (only unix: is supported)")
    keys = set(params) - {"guid"}
    if "path" in params and keys == {"path"}:
        return bind_unix_path(params["path"])
    if "abstract" in params and keys == {"abstract"}:
        return bind_unix_abstract(params["abstract"])
    # dbus-daemon 1.14 makes a filesystem socket for tmpdir as for dir
    # (abstract sockets cross container boundaries), and removes it on exit.
    for key in ("dir", "tmpdir"):
        if key in params and keys == {key}:
            return bind_unix_path(os.path.join(params[key], "dbus-" + secrets.token_hex(8)))
    if params.get("runtime") == "yes" and keys == {"runtime"}:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if not runtime:
            raise AddressError("unix:runtime=yes needs XDG_RUNTIME_DIR")
        return bind_unix_path(os.path.join(runtime, "bus"))
    raise AddressError(f"unix address needs exactly one of path, abstract, dir, tmpdir, runtime=yes: {params}")
