"""What a filtering proxy knows of the bus behind it, in the shape the
containers' rule engine (containers/access.py) reads a bus: `peers` by
unique name, `registry.owner(name)`, `driver_peer`.  The bus itself has
all of this; a proxy learns it over its client's upstream connection
(ListNames, GetNameOwner, then every NameOwnerChanged: proxy/filter.py).

Only well-known names some rule of the group covers are followed: a name
no rule covers decides nothing (it is hidden whoever owns it)."""

from ..containers.verdicts import VerdictCache

DRIVER_NAME = "org.freedesktop.DBus"


class ProxyInstance:
    """One ADDRESS PATH group as the rule engine sees a container instance:
    every client of the group is a connection in it (they may talk to each
    other, as connections of one instance may)."""

    learner = None  # a proxy never learns: its rules are the command line
    scoped = frozenset()  # no ScopedNames (docs/containers.md): names are the bus's
    creator = None

    def __init__(self, name: str, access, log_denials: bool = False, path: str = "/"):
        self.type = "org.flatpak"
        self.name = name
        self.path = path  # no object on any bus: named after PATH in log lines
        self.access = access  # RuleSet, or None without --filter (nothing is mediated)
        self.log_denials = log_denials
        self.denials_logged = set()
        self.verdicts = VerdictCache()
        self.members = set()  # unique names of its clients, once they have one
        self.views = set()  # every client's BusView

    def add_member(self, unique_name: str) -> None:
        """A client got its unique name: in every client's picture it is a
        connection of this instance (one that saw it first too)."""
        self.members.add(unique_name)
        for view in self.views:
            p = view.peers.get(unique_name)
            if p is not None:
                p.container = self

    def remove_member(self, unique_name) -> None:
        self.members.discard(unique_name)


class RemotePeer:
    """A connection on the bus behind the proxy: its unique name and the
    well-known names it owns that we follow."""

    __slots__ = ("unique_name", "names", "container")

    def __init__(self, unique_name: str, container=None):
        self.unique_name = unique_name
        self.names = set()
        self.container = container

    def __repr__(self) -> str:
        return f"RemotePeer({self.unique_name!r})"


class BusView:
    """peers and owners of the bus behind the proxy, for one client."""

    def __init__(self, instance: ProxyInstance):
        self.instance = instance
        self.peers = {}  # unique name -> RemotePeer
        self.owners = {}  # followed well-known name -> RemotePeer
        self.registry = self  # access.py asks bus.registry.owner(name)
        self.driver_peer = RemotePeer(DRIVER_NAME)
        rules = instance.access
        # with a rule for any name, every name may decide something
        self.follow_all = rules is not None and bool(rules.any)
        instance.views.add(self)

    def close(self) -> None:
        self.instance.views.discard(self)

    def follows(self, name: str) -> bool:
        if self.follow_all:
            return True
        rules = self.instance.access
        return rules is not None and bool(rules.for_name(name))

    def owner(self, name: str):
        return self.owners.get(name)

    def peer(self, unique_name: str) -> RemotePeer:
        """The peer of a unique name the bus just showed us (created if new)."""
        p = self.peers.get(unique_name)
        if p is None:
            inst = self.instance
            p = RemotePeer(unique_name, inst if unique_name in inst.members else None)
            self.peers[unique_name] = p
        return p

    def lookup(self, name: str):
        """The peer owning name (unique or well-known), or None if unknown."""
        if name.startswith(":"):
            return self.peers.get(name)
        return self.owners.get(name)

    def set_owner(self, name: str, unique_name: str) -> None:
        """name is now owned by unique_name ('' or None: by nobody)."""
        old = self.owners.pop(name, None)
        if old is not None:
            old.names.discard(name)
        if unique_name:
            p = self.peer(unique_name)
            p.names.add(name)
            self.owners[name] = p

    def name_owner_changed(self, name: str, old: str, new: str):
        """Apply a NameOwnerChanged; the peer that left, if one did (still
        to be dropped with forget() once the signal has been judged: the
        engine judges it with the old owner still known, as on the bus)."""
        if name.startswith(":"):
            if new:
                self.peer(name)
                return None
            return self.peers.get(name)
        if self.follows(name):
            self.set_owner(name, new)
        return None

    def forget(self, peer) -> None:
        if self.peers.get(peer.unique_name) is peer:
            del self.peers[peer.unique_name]
        for n in peer.names:
            if self.owners.get(n) is peer:
                del self.owners[n]
        peer.names.clear()
