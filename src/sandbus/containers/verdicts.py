"""What a mediated instance's rules allowed, remembered so that the next
message of the same shape costs one dict lookup instead of a walk of its
rule sets (issue 14: the mediated path).

Only allowances are kept, and only for what depends on nothing but the
instance's rules and the peer a name resolves to: a well-known name the
instance may see (containers/access.py ``hides``), and a call or unicast
signal of one shape (destination, path, interface, member, fds or not) to
a well-known name (``check_unicast``).  An entry holds the peer that owned
the name and that peer's instance when the rules were read; a hit counts
only if the name still resolves to that very peer, so an owner change
needs no notice.  Every entry is stamped with the rule sets' version
(containers/rules.py): any change to the instance's rules or grants
forgets them all.

Nothing is remembered for a denial, for a hidden or missing name, or in
learn mode: those take the full path every time, so a hidden name and a
missing one still cost the same (docs/containers.md), and a cache hit says
nothing the instance may not see already."""

# Shapes remembered per instance at most; past that, all are forgotten (an
# instance calling ever new names or members cannot grow the bus's memory).
MAX_ENTRIES = 1024


class VerdictCache:
    __slots__ = ("stamp", "entries")

    def __init__(self):
        self.stamp = 0
        self.entries = {}

    def get(self, stamp: int, key):
        """The value put under key while the rules were at version stamp."""
        if stamp != self.stamp:
            self.entries.clear()
            self.stamp = stamp
            return None
        return self.entries.get(key)

    def put(self, key, value) -> None:
        entries = self.entries
        if len(entries) >= MAX_ENTRIES:
            entries.clear()
        entries[key] = value
