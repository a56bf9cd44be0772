"""The one interface through which the bus core asks whether a message may
pass.  Core knows only this interface; the XML policy (core/policy.py) and
the containers' access rules (containers/access.py) implement it, and the
proxy front end can run the same implementations on a stream of messages.

Core asks about what peers send at three points (docs/architecture.md),
and first, before it looks the destination up, one question:

0. ``hides(sender, msg)`` — a unicast message (call, signal or reply) to a
   name other than the driver's: True if its destination is not one sender
   may see (hidden, or nobody has it).  The bus then answers it as a message to a
   missing name straight away, before any name lookup, so a hidden name
   and a missing one take the same path from there (issue 11, hole 7: the
   time of the answer must not tell them apart).  A mediator that answers
   True must do the same work whether or not the name has an owner.

1. ``unicast(sender, target, msg, requested)`` — a method call, unicast
   signal or reply to one peer (``target`` is None when the name has no
   owner yet and is about to be activated).  Answer None to let it pass,
   ``HIDDEN`` to answer it exactly as a message to a missing name, or a
   ``Denial``.
2. ``receive(sender, receiver, msg, target)`` — one receiver of a broadcast
   (``target`` None) or an eavesdropper on a unicast to ``target``: True to
   deliver.
3. ``driver_call(peer, method, msg, args)`` — before a driver method runs:
   raise DBusError to refuse it, else return the caller's view of names (an
   object with ``sees(name, owner)``, ``lists(name)`` and ``owner(name,
   owner)``), or None when the caller sees all.

And one lookup: ``owner(peer, name, owner)`` — the peer that owns the
well-known name for a message from peer (``owner``: its global owner, or
None).  A mediator may resolve a name differently for the peers it
restricts (an instance-scoped name, docs/containers.md); a view's ``owner``
answers the same for driver lookups, so routing and the driver agree.

And once about the bus's own messages: ``from_bus(target, msg)`` — a reply,
error or unicast signal of the driver to ``target``: None to deliver it,
else a ``Denial`` (never sent to anyone; monitors see its error).

Core asks only about peers some mediator ``restricts`` (``peer.restricted``),
so an unrestricted bus pays one attribute test per message and nothing more;
requested replies only where a mediator judges them (``peer.replies_restricted``).
"""

from collections import deque

from . import errors
from .errors import DBusError

# How far back `sandbus status` looks, and how many refusals are kept for it:
# a flood of refusals must not grow the bus's memory.
DENIAL_WINDOW = 60.0
DENIAL_LOG_SIZE = 4096


class DenialLog:
    """Recent refusals by any mediator: (time, sender's unique name), for
    Debug.Stats (core/driver.py) and `sandbus status`.  Counted: refused
    unicasts (calls, unicast signals, replies; hidden names refused past
    ``hides``, e.g. in learn mode or unrequested replies) and refused
    driver calls; not a broadcast some receiver may not see, which refuses
    nobody's request.  The clock is the daemon's (core reads none); without
    one only the total is kept."""

    __slots__ = ("clock", "recent", "total")

    def __init__(self, clock=None):
        self.clock = clock
        self.recent = deque(maxlen=DENIAL_LOG_SIZE)
        self.total = 0

    def record(self, sender) -> None:
        self.total += 1
        if self.clock is not None:
            self.recent.append((self.clock(), sender.unique_name))

    def count(self, unique_name=None, window: float = DENIAL_WINDOW) -> int:
        """Refusals in the last window seconds (of one sender, or all)."""
        if self.clock is None:
            return 0
        since = self.clock() - window
        recent = self.recent
        while recent and recent[0][0] < since:
            recent.popleft()
        if unique_name is None:
            return len(recent)
        return sum(1 for _, name in recent if name == unique_name)


class Denial:
    """A refused message: ``error`` is what to answer (None: drop silently);
    ``always`` answers even when the sender expects no reply (hidden names
    must be answered like missing ones whatever the flags say)."""

    __slots__ = ("error", "always")

    def __init__(self, error, always: bool = False):
        self.error = error
        self.always = always


DROP = Denial(None)
# Answer as if the destination did not exist (activation included).
HIDDEN = Denial(None, True)


def access_denied(text: str, always: bool = False) -> Denial:
    return Denial(DBusError(errors.ACCESS_DENIED, text), always)


class Mediator:
    """Allows everything; implementations override what they decide."""

    def connected(self, peer, listener) -> None:
        """A new authenticated connection (listener: the one it came through)."""

    def disconnected(self, peer) -> None:
        """peer is gone; its names are released and announced already."""

    def restricts(self, peer) -> bool:
        """Whether this mediator wants to be asked about messages of peer."""
        return False

    def restricts_replies(self, peer) -> bool:
        """Whether it judges requested replies of peer too (else they pass)."""
        return self.restricts(peer)

    def hides(self, sender, msg) -> bool:
        return False

    def unicast(self, sender, target, msg, requested: bool):
        return None

    def receive(self, sender, receiver, msg, target=None) -> bool:
        return True

    def driver_call(self, peer, method, msg, args):
        return None

    def owner(self, peer, name: str, owner):
        return owner

    def from_bus(self, target, msg):
        return None

    # An unrequested reply passes only if a mediator with authority over
    # replies (the XML policy) lets it; without one the bus drops it.
    grants_unrequested_replies = False


class Views:
    """The intersection of several mediators' views of names."""

    __slots__ = ("views",)

    def __init__(self, views):
        self.views = views

    def sees(self, name: str, owner) -> bool:
        result = True
        for v in self.views:
            # every view is asked, so a denial is recorded by each (learn mode)
            result = v.sees(name, owner) and result
        return result

    def lists(self, name: str) -> bool:
        return all(v.lists(name) for v in self.views)

    def owner(self, name: str, owner):
        for v in self.views:
            owner = v.owner(name, owner)
        return owner


class Mediation(Mediator):
    """The mediators of one bus, asked in order; the first refusal wins.

    ``peer.restricted`` is a bit mask of the mediators that restrict the
    peer, so a message is put only to the mediators that care about one of
    its ends; ``peer.replies_restricted`` says whether any of them judges
    requested replies too (the containers' rules never refuse one)."""

    def __init__(self, mediators=(), clock=None):
        self.mediators = []
        self._asked = {}
        self.denials = DenialLog(clock)
        self._resolvers = {}
        for m in mediators:
            self.mediators.append(m)
        self._update()

    def _update(self) -> None:
        self.grants_unrequested_replies = any(m.grants_unrequested_replies for m in self.mediators)
        # mask -> the mediators with a bit in it, in order
        n = len(self.mediators)
        self._asked = {mask: tuple(m for i, m in enumerate(self.mediators) if mask >> i & 1)
                       for mask in range(1 << n)}
        # owner() is asked on every restricted message to a well-known name:
        # only of the mediators that resolve names at all
        self._resolvers = {mask: tuple(m for m in asked
                                 if getattr(type(m), "owner", Mediator.owner) is not Mediator.owner)
                           for mask, asked in self._asked.items()}
        # hides() likewise, only of the mediators that hide names at all
        self._hiders = {mask: tuple(m for m in asked
                              if getattr(type(m), "hides", Mediator.hides) is not Mediator.hides)
                        for mask, asked in self._asked.items()}

    def replace(self, old, new, peers) -> None:
        """Swap one mediator (a reloaded policy) and re-evaluate every peer."""
        self.mediators[self.mediators.index(old)] = new
        self._update()
        for peer in peers:
            new.connected(peer, peer.listener)
            self._mark(peer)

    def _mark(self, peer) -> None:
        mask = 0
        replies = False
        for i, m in enumerate(self.mediators):
            if m.restricts(peer):
                mask |= 1 << i
                replies = replies or m.restricts_replies(peer)
        peer.restricted = mask
        peer.replies_restricted = replies

    def connected(self, peer, listener) -> None:
        for m in self.mediators:
            m.connected(peer, listener)
        self._mark(peer)

    def disconnected(self, peer) -> None:
        for m in self.mediators:
            m.disconnected(peer)

    def restricts(self, peer) -> bool:
        return any(m.restricts(peer) for m in self.mediators)

    def unicast(self, sender, target, msg, requested: bool):
        mask = sender.restricted
        if target is not None:
            mask |= target.restricted
        for m in self._asked[mask]:
            verdict = m.unicast(sender, target, msg, requested)
            if verdict is not None:
                self.denials.record(sender)
                return verdict
        if not requested and msg.type in (2, 3) and not self.grants_unrequested_replies:
            return DROP
        return None

    def hides(self, sender, msg) -> bool:
        # Not a refusal the denial log counts: a missing name is answered
        # the same way, and the log must not tell them apart either.
        for m in self._hiders[sender.restricted]:
            if m.hides(sender, msg):
                return True
        return False

    def receive(self, sender, receiver, msg, target=None) -> bool:
        for m in self._asked[sender.restricted | receiver.restricted]:
            if not m.receive(sender, receiver, msg, target):
                return False
        return True

    def owner(self, peer, name: str, owner):
        for m in self._resolvers[peer.restricted]:
            owner = m.owner(peer, name, owner)
        return owner

    def from_bus(self, target, msg):
        for m in self._asked[target.restricted]:
            verdict = m.from_bus(target, msg)
            if verdict is not None:
                return verdict
        return None

    def driver_call(self, peer, method, msg, args):
        views = None
        for m in self._asked[peer.restricted]:
            try:
                view = m.driver_call(peer, method, msg, args)
            except DBusError:
                self.denials.record(peer)
                raise
            if view is not None:
                views = view if views is None else Views([views, view])
        return views


NO_MEDIATION = Mediation()
