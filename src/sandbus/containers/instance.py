"""A container instance: one restricted, identifiable server on the bus."""

from ..wire.message import FIELD_CONTAINER_INSTANCE, string_field
from .verdicts import VerdictCache

PATH_PREFIX = "/org/freedesktop/DBus/Containers1/c"


class ContainerInstance:
    def __init__(self, number: int, ctype: str, name: str, metadata: dict,
                 creator, creator_creds: dict, max_connections: int):
        self.number = number
        self.path = f"{PATH_PREFIX}{number}"
        self.type = ctype
        self.name = name
        self.metadata = metadata
        self.creator = creator  # Peer, until it disconnects
        self.creator_uid = creator.creds.uid
        self.creator_name = creator.unique_name
        self.creator_creds = creator_creds
        self.max_connections = max_connections
        self.listener = None
        self.listening = False  # accepting, or waiting for ReadyNotification
        self.connections = set()
        self.pending_calls = 0  # calls its connections await, together (core/replies.py)
        self.authenticating = 0
        # The io connections behind `authenticating` (anything with close()),
        # so StopInstance can close them before they get a unique name.
        self.pending = set()
        self.stop_on_disconnect = True
        self.virtual_machine_id = None
        self.hide_machine_id = False
        self.access = None  # RuleSet when the instance is mediated (Allow or Learn given)
        self.allow = ()  # the Allow rules as given, a(usos)
        self.learner = None  # a learn.Learner in learn mode: denials are recorded and allowed
        self.denials_logged = set()  # rule shapes of denials already logged
        # What its rules allowed, remembered (containers/access.py: _allowed_call, hides)
        self.verdicts = VerdictCache()
        self.log_denials = True  # LogDenials: false keeps denials out of the log
        self.announced = False  # the AddServer reply went out
        self.removed = False
        self.watches = []  # cancel callables for notification pipes
        # A nested instance (containers/nesting.py): made from inside parent,
        # counted against its limits, stopped with it.
        self.parent = None
        self.children = set()
        # ScopedNames: well-known names that, for this instance's connections
        # alone, resolve to the creator's connection (containers/access.py).
        self.scoped = frozenset()
        self.fields = {e: string_field(FIELD_CONTAINER_INSTANCE, self.path, e, "o") for e in "lB"}

    @property
    def alive(self) -> bool:
        return self.listening or bool(self.connections) or self.authenticating > 0

    # -- called by the io layer through the listener ---------------------------

    def admit_connection(self) -> bool:
        """A new socket connection: counted from accept, so connections still
        authenticating count against MaxConnections too."""
        inst = self
        while inst is not None:
            if inst.load() >= inst.max_connections:
                return False
            inst = inst.parent
        self.authenticating += 1
        return True

    def load(self) -> int:
        """Connections here and in nested instances, authenticating ones too."""
        return len(self.connections) + self.authenticating + sum(c.load() for c in self.children)

    def track_pending(self, conn) -> None:
        """The io connection admitted by the last admit_connection()."""
        self.pending.add(conn)

    def connection_gone(self, peer, conn=None) -> None:
        # Only connections that never authenticated are ours to count here;
        # the bus core reports the others through on_disconnect.
        if peer is None:
            self.pending.discard(conn)
            self.authenticating -= 1
            self.on_change()

    def close_pending(self, reason: str) -> None:
        """Close every connection not yet through authentication: a stopped
        instance lets none of them in later."""
        for conn in list(self.pending):
            conn.close(reason)

    def on_change(self) -> None:  # replaced by the manager
        pass

    def on_listener_failed(self) -> None:  # replaced by the manager
        pass

    def summary(self) -> dict:
        return {"path": self.path, "type": self.type, "name": self.name,
                "creator": self.creator_name, "connections": len(self.connections),
                "listening": self.listening}
