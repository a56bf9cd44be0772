"""Typed, immutable-ish result of reading a dbus-daemon XML configuration.

The model keeps what the file *says* (user and group names stay text);
turning names into ids and rules into a fast lookup structure is the job of
:mod:`sandbus.config.policy`, because that has to be redone for every config
load anyway and depends on the system's user database.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

BusType = str  # "session", "system" or a namespaced custom type


class ConfigError(Exception):
    """A configuration file is malformed or uses an invalid construct.

    The message always names the file, the line and the element, in the
    ``file:line: <element>: problem`` form compilers use, so editors can jump
    to it.
    """

    def __init__(self, message: str, *, file: str | None = None,
                 line: int | None = None, element: str | None = None):
        self.file = file
        self.line = line
        self.element = element
        self.reason = message
        location = ""
        if file is not None:
            location = f"{file}:{line}: " if line is not None else f"{file}: "
        where = f"<{element}>: " if element else ""
        super().__init__(f"{location}{where}{message}")


# --------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------

@dataclass
class Limits:
    """Every <limit> dbus-daemon 1.14 knows, plus sandbus's container limits.

    Field defaults are dbus-daemon's compiled-in values (the same numbers the
    stock system.conf lists in comments); the stock session.conf overrides
    most of them. Times are milliseconds; reply_timeout -1 means "never".
    """

    max_incoming_bytes: int = 133169152          # 127 MiB
    max_incoming_unix_fds: int = 64
    max_outgoing_bytes: int = 133169152
    max_outgoing_unix_fds: int = 64
    max_message_size: int = 33554432             # 32 MiB
    max_message_unix_fds: int = 16
    service_start_timeout: int = 25000
    auth_timeout: int = 5000
    pending_fd_timeout: int = 150000
    max_completed_connections: int = 2048
    max_incomplete_connections: int = 64
    max_connections_per_user: int = 256
    max_pending_service_starts: int = 512
    max_names_per_connection: int = 512
    max_match_rules_per_connection: int = 512
    max_replies_per_connection: int = 128
    reply_timeout: int = -1
    # sandbus container instances (docs/containers.md); system-bus values.
    max_containers: int = 512
    max_containers_per_user: int = 16
    max_container_metadata_bytes: int = 4096
    max_connections_per_container: int = 8
    # What all connections of one instance may hold together
    # (containers/quotas.py); system-bus values, session below.
    max_container_queued_bytes: int = 67108864   # 64 MiB
    max_container_unix_fds: int = 64
    max_container_match_rules: int = 512
    max_container_names: int = 512
    max_container_pending_replies: int = 128

    @classmethod
    def defaults(cls, bus_type: BusType | None) -> "Limits":
        """Built-in defaults before any <limit> element is applied.

        Only the container limits depend on the bus type: a session bus runs
        as the user, so it has no reason to ration containers tightly.
        """
        if bus_type == "session":
            # session.conf's per-connection limits, once for a whole
            # instance rather than once per connection
            return cls(max_containers=10000, max_containers_per_user=10000,
                       max_container_metadata_bytes=1000000000,
                       max_connections_per_container=16,
                       max_container_queued_bytes=1000000000, max_container_unix_fds=4096,
                       max_container_match_rules=50000, max_container_names=50000,
                       max_container_pending_replies=50000)
        return cls()

    def with_overrides(self, overrides: dict[str, int]) -> "Limits":
        return dataclasses.replace(self, **overrides)


LIMIT_NAMES: frozenset[str] = frozenset(f.name for f in dataclasses.fields(Limits))


# --------------------------------------------------------------------------
# Policy rules, as written
# --------------------------------------------------------------------------

RuleKind = Literal["send", "receive", "own", "user", "group"]

MESSAGE_TYPES: dict[str, int] = {
    "method_call": 1,
    "method_return": 2,
    "error": 3,
    "signal": 4,
}


@dataclass(frozen=True)
class SourceLocation:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Rule:
    """One <allow> or <deny> element.

    ``None`` means "no constraint" for every matching field; "*" in the file
    is normalised to ``None`` here, as dbus-daemon does.
    """

    allow: bool
    kind: RuleKind
    source: SourceLocation
    # The element as written, for log lines and AccessDenied messages.
    text: str
    # send_* / receive_* message matching
    msg_type: int | None = None
    interface: str | None = None
    member: str | None = None
    error_name: str | None = None
    path: str | None = None
    # send rules: destination name (or prefix); receive rules: sender name
    peer_name: str | None = None
    peer_name_is_prefix: bool = False
    broadcast: bool | None = None          # send_broadcast; None = either
    requested_reply: bool | None = None    # None = the allow/deny default
    eavesdrop: bool = False
    min_fds: int = 0
    max_fds: int | None = None             # None = unbounded
    log: bool = False
    # own / own_prefix; own_name None with kind "own" means own="*"
    own_name: str | None = None
    own_is_prefix: bool = False
    # user / group connection rules: raw text, "*" kept as "*"
    principal: str | None = None

    def describe(self) -> str:
        return f"{self.text} in {self.source}"


PolicyContext = Literal["default", "mandatory", "user", "group", "at_console"]


@dataclass
class PolicyBlock:
    """One <policy> element and its rules, in file order.

    ``selector`` is the user or group name (or numeric id) for user/group
    policies, "true"/"false" for at_console, and None for default/mandatory.
    """

    context: PolicyContext
    selector: str | None
    source: SourceLocation
    rules: list[Rule] = field(default_factory=list)


# --------------------------------------------------------------------------
# The whole configuration
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceDir:
    """A directory searched for .service files, earlier ones win.

    ``strict_naming`` and ``watched`` carry the special treatment dbus-daemon
    gives $XDG_RUNTIME_DIR/dbus-1/services (file name must be
    ``<bus name>.service``; never inotify-watched).
    """

    path: str
    strict_naming: bool = False
    watched: bool = True


@dataclass
class BusConfig:
    bus_type: BusType | None = None
    user: str | None = None
    fork: bool = False
    keep_umask: bool = False
    syslog: bool = False
    pidfile: str | None = None
    allow_anonymous: bool = False
    # In file order; dbus-daemon advertises the last one first.
    listen: list[str] = field(default_factory=list)
    # Empty means "every mechanism the bus implements".
    auth: list[str] = field(default_factory=list)
    servicedirs: list[ServiceDir] = field(default_factory=list)
    servicehelper: str | None = None
    policies: list[PolicyBlock] = field(default_factory=list)
    # Explicit <limit> values, later ones replacing earlier ones.
    limit_overrides: dict[str, int] = field(default_factory=dict)
    apparmor_mode: str | None = None
    # Every file read, main file first, in the order they were read.
    files: list[str] = field(default_factory=list)

    @property
    def limits(self) -> Limits:
        return Limits.defaults(self.bus_type).with_overrides(self.limit_overrides)

    def add_servicedir(self, directory: ServiceDir) -> None:
        # dbus-daemon drops duplicates, keeping the first (highest priority).
        if all(existing.path != directory.path for existing in self.servicedirs):
            self.servicedirs.append(directory)
