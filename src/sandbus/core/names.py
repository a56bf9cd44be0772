"""The well-known name registry: owners, queues and the RequestName /
ReleaseName rules of the D-Bus specification.

Operations return the ownership changes they caused, in the order the bus
must announce them (NameLost, NameOwnerChanged, NameAcquired), so the
registry itself never sends anything.
"""

ALLOW_REPLACEMENT = 0x1
REPLACE_EXISTING = 0x2
DO_NOT_QUEUE = 0x4

PRIMARY_OWNER = 1
IN_QUEUE = 2
EXISTS = 3
ALREADY_OWNER = 4

RELEASED = 1
NON_EXISTENT = 2
NOT_OWNER = 3


class Change:
    """'name' moved from old_owner to new_owner (either may be None)."""

    __slots__ = ("name", "old_owner", "new_owner")

    def __init__(self, name, old_owner, new_owner):
        self.name = name
        self.old_owner = old_owner
        self.new_owner = new_owner


class NameRegistry:
    def __init__(self):
        # name -> list of [peer, flags, joined]; entry 0 is the primary
        # owner; joined orders a peer's names by when it entered each queue
        self._queues = {}
        self._joined = 0

    def _entry(self, peer, flags) -> list:
        self._joined += 1
        return [peer, flags, self._joined]

    def owner(self, name: str):
        q = self._queues.get(name)
        return q[0][0] if q else None

    def names(self):
        return self._queues.keys()

    def queue(self, name: str) -> list:
        return [entry[0] for entry in self._queues.get(name, ())]

    def request(self, peer, name: str, flags: int):
        """Returns (reply code, [Change])."""
        q = self._queues.get(name)
        if not q:
            self._queues[name] = [self._entry(peer, flags)]
            peer.names.add(name)
            return PRIMARY_OWNER, [Change(name, None, peer)]
        primary, primary_flags = q[0][0], q[0][1]
        if primary is peer:
            q[0][1] = flags
            return ALREADY_OWNER, []
        if flags & REPLACE_EXISTING and primary_flags & ALLOW_REPLACEMENT:
            self._remove_from_queue(q, peer, name)
            primary.names.discard(name)
            if primary_flags & DO_NOT_QUEUE:
                q.pop(0)
            else:
                primary.queued.add(name)  # it waits at the head of the queue
            q.insert(0, self._entry(peer, flags))
            peer.names.add(name)
            return PRIMARY_OWNER, [Change(name, primary, peer)]
        if flags & DO_NOT_QUEUE:
            self._remove_from_queue(q, peer, name)
            return EXISTS, []
        for entry in q:
            if entry[0] is peer:
                entry[1] = flags
                break
        else:
            q.append(self._entry(peer, flags))
            peer.queued.add(name)
        return IN_QUEUE, []

    @staticmethod
    def _remove_from_queue(q, peer, name) -> None:
        for i in range(1, len(q)):
            if q[i][0] is peer:
                del q[i]
                peer.queued.discard(name)
                return

    def release(self, peer, name: str):
        """Returns (reply code, [Change])."""
        q = self._queues.get(name)
        if not q:
            return NON_EXISTENT, []
        if q[0][0] is peer:
            return RELEASED, [self._drop_primary(name, q)]
        if name in peer.queued:
            self._remove_from_queue(q, peer, name)
            return RELEASED, []
        return NOT_OWNER, []

    def _drop_primary(self, name, q) -> Change:
        old = q.pop(0)[0]
        old.names.discard(name)
        if q:
            new = q[0][0]
            new.queued.discard(name)
            new.names.add(name)
            return Change(name, old, new)
        del self._queues[name]
        return Change(name, old, None)

    def drop_peer(self, peer) -> list:
        """Remove the peer from every queue; returns the primary-owner changes,
        the name it joined last first, as dbus-daemon releases them
        (bus/connection.c walks services_owned from its end)."""
        changes = []
        owned = [(self._queues[name][0][2], name) for name in peer.names
                 if self._queues.get(name) and self._queues[name][0][0] is peer]
        for _, name in sorted(owned, reverse=True):
            changes.append(self._drop_primary(name, self._queues[name]))
        for name in list(peer.queued):
            self._remove_from_queue(self._queues[name], peer, name)
        peer.names.clear()
        return changes

    def names_of(self, peer) -> list:
        """Names peer owns or is queued for."""
        return [*peer.names, *peer.queued]

    def queued_names_count(self, peer) -> int:
        return len(peer.names) + len(peer.queued)
