"""Listening sockets for D-Bus addresses: unix path/abstract/dir/tmpdir/runtime
and tcp (nonce-tcp is not supported), and the SASL server each one wants."""

import logging
import os
import secrets
import socket

from ..core.peer import Credentials
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
        self.unix_fds = transport_supports_fds(self.transport)
        self.hidden = False  # a further socket of one tcp address: not printed

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
            except OSError as e:
                # A system bus that dropped root may no longer write the
                # directory root bound its socket in: not worth failing for.
                logging.getLogger("sandbus.listener").warning(
                    "could not remove %s: %s", self.path, e.strerror)
            self.path = None


def transport_supports_fds(transport: str) -> bool:
    return transport in ("unix", "systemd", "launchd")


def make_sasl(server, conn, listener):
    """The SASL server for a new connection on ``listener``: mechanisms from
    <auth>, no fd passing off unix sockets, and the authenticated identity
    (DBUS_COOKIE_SHA1, ANONYMOUS) put into ``conn.creds`` at BEGIN."""
    from ..wire.sasl import SaslServer

    allowed = listener.allowed_uid
    uid_allowed = server.uid_allowed if allowed is None else (lambda uid: uid == allowed)
    auth = getattr(server, "auth_settings", None)
    if auth is None:
        return SaslServer(server.guid, conn.creds.uid, allow_unix_fds=getattr(listener, "unix_fds", True),
                          allow_anonymous=server.allow_anonymous, uid_allowed=uid_allowed)

    def on_done(sasl):
        if sasl.mechanism == "ANONYMOUS":
            conn.creds = Credentials()
        elif sasl.mechanism == "DBUS_COOKIE_SHA1" and conn.creds.uid != sasl.uid:
            conn.creds = Credentials(uid=sasl.uid)

    return SaslServer(server.guid, conn.creds.uid, allow_unix_fds=getattr(listener, "unix_fds", True),
                      allow_anonymous=server.allow_anonymous, uid_allowed=uid_allowed,
                      mechanisms=auth.mechanisms, cookie_keyring=auth.keyring(),
                      bus_uid=auth.bus_uid, user_lookup=lookup_user, on_done=on_done)


class AuthSettings:
    """What the daemon configures for SASL (<auth>, the keyring)."""

    def __init__(self, mechanisms, bus_uid: int, keyring_factory=None):
        self.mechanisms = tuple(mechanisms)
        self.bus_uid = bus_uid
        self._keyring_factory = keyring_factory

    def keyring(self):
        if "DBUS_COOKIE_SHA1" not in self.mechanisms:
            return None
        if self._keyring_factory is not None:
            return self._keyring_factory()
        from .keyring import Keyring
        return Keyring()


def lookup_user(name: str):
    """A user name or decimal uid -> uid, or None if there is no such user."""
    import pwd
    try:
        if name.isdigit():
            return pwd.getpwuid(int(name)).pw_uid
        return pwd.getpwnam(name).pw_uid
    except (KeyError, OverflowError, ValueError):
        return None


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
        # As dbus-daemon: anyone may reach the socket, and authentication
        # and the bus's policy decide who is served.  The umask's mode would
        # turn other users away with EPERM before they could even
        # authenticate (a system bus would serve root alone).
        os.chmod(path, 0o777)
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
            got = _listen_one(transport, params)
            result.extend(got if isinstance(got, list) else [got])
    except Exception:
        for lst in result:
            lst.close()
        raise
    return result


def bind_tcp(params: dict, backlog: int = 4096) -> list:
    """tcp:host=H,port=P[,family=ipv4|ipv6][,bind=B], as dbus-daemon: bind
    every address B (default H, default "localhost") resolves to; port 0
    picks one, shared by all. The address printed is host, the real port,
    the family."""
    keys = set(params) - {"guid"}
    unknown = keys - {"host", "port", "family", "bind"}
    if unknown:
        raise AddressError(f"unknown tcp address key(s): {', '.join(sorted(unknown))}")
    host = params.get("host", "localhost")
    port_text = params.get("port", "0")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise AddressError(f"invalid tcp port {port_text!r}")
    family_name = params.get("family")
    families = {None: socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
    if family_name not in families:
        raise AddressError(f"unknown address family {family_name!r}")
    bind_host = params.get("bind", host)
    if bind_host == "*":
        bind_host = None
    try:
        infos = socket.getaddrinfo(bind_host, int(port_text), families[family_name],
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE | socket.AI_ADDRCONFIG)
    except socket.gaierror as e:
        raise AddressError(f"cannot resolve {bind_host!r}: {e}") from None
    port = int(port_text)
    result = []
    error = None
    try:
        for af, kind, proto, _, addr in infos:
            sock = socket.socket(af, kind | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if af == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((addr[0], port) + tuple(addr[2:]))
                sock.listen(backlog)
            except OSError as e:
                sock.close()
                error = e
                continue  # dbus-daemon too is content if one of them binds
            port = sock.getsockname()[1]
            printed = {"host": host, "port": str(port),
                       "family": family_name or ("ipv6" if af == socket.AF_INET6 else "ipv4")}
            if "bind" in params:
                printed["bind"] = params["bind"]
            lst = Listener(sock, ("tcp", printed))
            lst.hidden = bool(result)
            result.append(lst)
    except Exception:
        for lst in result:
            lst.close()
        raise
    if not result:
        if error is not None:
            raise error
        raise AddressError(f"no address to listen on for {bind_host!r}")
    return result


def _listen_one(transport: str, params: dict):
    if transport == "tcp":
        return bind_tcp(params)
    if transport != "unix":
        raise AddressError(f"unsupported transport {transport!r} (unix: and tcp: are supported)")
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
