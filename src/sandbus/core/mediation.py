"""The one interface through which the bus core asks whether a message may
pass.  Core knows only this interface; the XML policy (core/policy.py) and
the containers' access rules (containers/access.py) implement it, and the
proxy front end can run the same implementations on a stream of messages.

Core asks at exactly three points (docs/architecture.md):

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
   object with ``sees(name, owner)``), or None when the caller sees all.

Core asks only about peers some mediator ``restricts`` (``peer.restricted``),
so an unrestricted bus pays one attribute test per message and nothing more.
"""

from . import errors
from .errors import DBusError


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

    def unicast(self, sender, target, msg, requested: bool):
        return None

    def receive(self, sender, receiver, msg, target=None) -> bool:
        return True

    def driver_call(self, peer, method, msg, args):
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


class Mediation(Mediator):
    """The mediators of one bus, asked in order; the first refusal wins."""

    def __init__(self, mediators=()):
        self.mediators = list(mediators)
        self.grants_unrequested_replies = any(m.grants_unrequested_replies for m in self.mediators)

    def replace(self, old, new, peers) -> None:
        """Swap one mediator (a reloaded policy) and re-evaluate every peer."""
        self.mediators[self.mediators.index(old)] = new
        self.grants_unrequested_replies = any(m.grants_unrequested_replies for m in self.mediators)
        for peer in peers:
            new.connected(peer, peer.listener)
            peer.restricted = self.restricts(peer)

    def connected(self, peer, listener) -> None:
        for m in self.mediators:
            m.connected(peer, listener)
        peer.restricted = self.restricts(peer)

    def disconnected(self, peer) -> None:
        for m in self.mediators:
            m.disconnected(peer)

    def restricts(self, peer) -> bool:
        return any(m.restricts(peer) for m in self.mediators)

    def unicast(self, sender, target, msg, requested: bool):
        for m in self.mediators:
            verdict = m.unicast(sender, target, msg, requested)
            if verdict is not None:
                return verdict
        if not requested and msg.type in (2, 3) and not self.grants_unrequested_replies:
            return DROP
        return None

    def receive(self, sender, receiver, msg, target=None) -> bool:
        for m in self.mediators:
            if not m.receive(sender, receiver, msg, target):
                return False
        return True

    def driver_call(self, peer, method, msg, args):
        views = None
        for m in self.mediators:
            view = m.driver_call(peer, method, msg, args)
            if view is not None:
                if views is None:
                    views = view
                elif isinstance(views, Views):
                    views.views.append(view)
                else:
                    views = Views([views, view])
        return views


NO_MEDIATION = Mediation()
