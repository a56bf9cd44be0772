"""A connection as the bus core sees it (no sockets here: the io layer gives
each peer a sink with send(data, fds), close(reason) and queued_bytes)."""

from dataclasses import dataclass
from typing import Optional

from ..wire.message import FIELD_SENDER, string_field


@dataclass(frozen=True)
class Credentials:
    uid: Optional[int] = None
    pid: Optional[int] = None
    gids: Optional[tuple] = None
    security_label: Optional[bytes] = None
    pidfd: Optional[int] = None


class Peer:
    __slots__ = (
        "id", "unique_name", "creds", "unix_fds", "sink", "names", "queued", "rules",
        "expected_replies", "calls_out", "pending_calls", "is_monitor", "monitor_rules",
        "sender_fields", "container", "instance_field", "wants_instance_header", "incoming_fds",
        "closed", "policy", "send_policy", "receive_policy", "restricted", "replies_restricted", "listener",
        "extra_credentials", "machine_id", "__weakref__",
    )

    def __init__(self, peer_id: int, sink, creds: Credentials, unix_fds: bool, listener=None):
        self.id = peer_id
        self.unique_name = None  # set by Hello
        self.creds = creds
        self.unix_fds = unix_fds
        self.sink = sink
        self.names = set()  # well-known names this peer is primary owner of
        self.queued = set()  # names it waits for in a queue (not primary)
        self.rules = []  # its match rules
        # calls this peer received and may answer: (caller Peer, serial) -> timer or True
        self.expected_replies = {}
        self.calls_out = {}  # callee Peer -> how many of this peer's calls it may still answer
        self.pending_calls = 0  # calls this peer sent that await a reply (core/replies.py)
        self.is_monitor = False
        self.monitor_rules = None
        self.sender_fields = None
        # The container instance it connected through (opaque to core:
        # compared for identity, and its pending_calls kept by
        # core/replies.py), and its CONTAINER_INSTANCE header field.
        self.container = None
        self.instance_field = None  # {endian: bytes}; None: outside any instance
        self.wants_instance_header = False
        self.incoming_fds = []  # fds received but not yet claimed by a message
        self.closed = False
        self.policy = None  # per-connection policy view; None = allow everything
        self.send_policy = None  # the view again, unless it allows every send
        self.receive_policy = None  # likewise for receiving
        # which mediators core asks about it (a bit mask; core/mediation.py)
        self.restricted = 0
        self.replies_restricted = False
        self.listener = listener
        self.extra_credentials = None  # {key: Variant} added to GetConnectionCredentials
        self.machine_id = None  # what Peer.GetMachineId answers it, when not the bus's

    def register(self, unique_name: str) -> None:
        self.unique_name = unique_name
        self.sender_fields = {
            "l": string_field(FIELD_SENDER, unique_name, "l"),
            "B": string_field(FIELD_SENDER, unique_name, "B"),
        }

    def __repr__(self) -> str:
        return f"<Peer {self.unique_name or '#%d' % self.id}>"


class BusPseudoPeer:
    """Stands for the bus driver as a message sender (for match rules)."""

    __slots__ = ("unique_name", "names", "container", "send_policy", "receive_policy", "restricted",
                 "replies_restricted", "instance_field", "closed")

    def __init__(self, name: str):
        self.unique_name = name
        self.names = ()
        self.container = None
        self.send_policy = None
        self.receive_policy = None
        self.restricted = 0
        self.replies_restricted = False
        self.instance_field = None
        self.closed = False
