"""dbus-daemon's <policy> semantics, compiled for fast per-message checks.

``Policy`` is built once per configuration load: it resolves user and group
names and sorts the <policy> blocks by what they apply to. When a connection
authenticates, ``Policy.for_connection`` picks the blocks that apply to its
credentials, in dbus-daemon's order (default, group, user, at_console,
mandatory), and indexes their rules. A check then looks only at the rules
that could possibly match and walks them from the last one backwards: the
first match found is the last match in file order, which is the one that
decides ("last matching rule wins").

Matching follows dbus-daemon 1.14 (man dbus-daemon, <allow>/<deny>):

* Nothing matched means denied; the stock configs open things up with rules.
* Replies (method returns, errors): an <allow> by default only matches a
  *requested* reply, a <deny> by default only matches an *unrequested* one, so
  ordinary deny rules never block the one reply a call is owed unless they
  say send_requested_reply="true". ``eavesdrop="true"`` on an <allow> lifts
  its requested-only restriction.
* send_destination matches if *any* name the receiving connection owns or
  is queued for equals it; send_destination_prefix likewise by name prefix
  (whole dot-separated components). receive_sender is the same on the sender.
* path, member and error only fail to match when the message has that field
  with a different value; interface additionally fails an <allow> (but not a
  <deny>) when the message has no interface.
* eavesdrop: only receive rules care. An <allow> without eavesdrop="true"
  does not apply while eavesdropping; a <deny eavesdrop="true"> applies only
  while eavesdropping.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from .model import BusConfig, PolicyBlock, Rule

log = logging.getLogger("sandbus.config")

METHOD_RETURN = 2
ERROR = 3
SIGNAL = 4
_REPLY_TYPES = (METHOD_RETURN, ERROR)


@dataclass(frozen=True)
class Creds:
    uid: int
    gids: Tuple[int, ...] = ()   # every group of the connection, primary included
    at_console: bool = False


@dataclass(frozen=True)
class MessageFacts:
    """What a policy check needs to know about one delivery.

    ``destination_names`` are the names of the connection the message is
    being delivered to (its unique name, names it owns or is queued for).
    dbus-daemon checks the *sender's* send rules once per recipient, so for a
    broadcast these are the names of the recipient being considered; pass
    ``()`` to ask about a broadcast with no particular recipient. For messages
    to the bus driver or to a service about to be activated, pass just the
    destination as written.
    """

    msg_type: int  # 1 method_call, 2 method_return, 3 error, 4 signal
    interface: Optional[str] = None
    member: Optional[str] = None
    error_name: Optional[str] = None
    path: Optional[str] = None
    sender_names: Tuple[str, ...] = ()
    destination_names: Tuple[str, ...] = ()
    destination: Optional[str] = None   # header field as written; None = broadcast
    requested_reply: bool = False       # replies only: answers an outstanding call
    eavesdropping: bool = False         # receiver is not the addressed recipient
    n_fds: int = 0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # The deciding rule and where it is, e.g.
    # '<deny send_destination="org.x"/> in /etc/dbus-1/system.conf:12';
    # None when no rule matched (and the answer is the default deny).
    rule: Optional[str] = None
    # The deciding rule asked for the decision to be logged (log="true").
    log: bool = False

    def __bool__(self) -> bool:
        return self.allowed


_NO_MATCH = Decision(False, None)


def _name_prefixes(name: str) -> Iterable[str]:
    """'a.b.c' -> 'a', 'a.b', 'a.b.c': every prefix a *_prefix rule can name."""
    start = 0
    while True:
        dot = name.find(".", start)
        if dot < 0:
            yield name
            return
        yield name[:dot]
        start = dot + 1


def _matches_message(rule: Rule, m: MessageFacts, receiving: bool) -> bool:
    """Everything about a send/receive rule except the peer name, which the
    index has already matched."""
    if rule.msg_type is not None and rule.msg_type != m.msg_type:
        return False
    if receiving:
        if m.eavesdropping and rule.allow and not rule.eavesdrop:
            return False
        if not m.eavesdropping and not rule.allow and rule.eavesdrop:
            return False
    if m.msg_type in _REPLY_TYPES:
        # Unset requested_reply: <allow> means "requested only", <deny>
        # means "unrequested only".
        requested_only = rule.allow if rule.requested_reply is None else rule.requested_reply
        if rule.allow and requested_only and not m.requested_reply and not rule.eavesdrop:
            return False
        if not rule.allow and not requested_only and m.requested_reply:
            return False
    if rule.path is not None and m.path is not None and m.path != rule.path:
        return False
    if rule.interface is not None:
        if m.interface is None:
            if rule.allow:
                return False
        elif m.interface != rule.interface:
            return False
    if rule.member is not None and m.member is not None and m.member != rule.member:
        return False
    if rule.error_name is not None and m.error_name is not None and m.error_name != rule.error_name:
        return False
    if rule.broadcast is not None:
        is_broadcast = m.destination is None and m.msg_type == SIGNAL
        if is_broadcast != rule.broadcast:
            return False
    if m.n_fds < rule.min_fds or (rule.max_fds is not None and m.n_fds > rule.max_fds):
        return False
    return True


_Entry = Tuple[int, Rule]  # (position in the connection's rule list, rule)


class _NameIndex:
    """Rules keyed by the bus name they mention, plus those naming none.

    Used for send rules (keyed by destination), receive rules (by sender)
    and own rules (by owned name).
    """

    def __init__(self) -> None:
        self.exact: Dict[str, List[_Entry]] = {}
        self.prefix: Dict[str, List[_Entry]] = {}
        self.any_name: List[_Entry] = []

    def add(self, position: int, rule: Rule, name: Optional[str], is_prefix: bool) -> None:
        if name is None:
            self.any_name.append((position, rule))
        else:
            table = self.prefix if is_prefix else self.exact
            table.setdefault(name, []).append((position, rule))

    def candidates(self, names: Iterable[str]) -> List[_Entry]:
        """Rules that match at least one of ``names``, latest first."""
        found = list(self.any_name)
        seen_prefixes = set()
        for name in dict.fromkeys(names):  # a duplicate name must not double a rule
            found.extend(self.exact.get(name, ()))
            for prefix in _name_prefixes(name):
                if prefix in self.prefix and prefix not in seen_prefixes:
                    seen_prefixes.add(prefix)
                    found.extend(self.prefix[prefix])
        found.sort(key=lambda entry: entry[0], reverse=True)
        return found


def _unrestricted(rules, kind: str) -> bool:
    """True if the last rule of this kind allows every message of any shape."""
    for rule in reversed(rules):
        if rule.kind != kind:
            continue
        return (rule.allow and rule.eavesdrop and rule.msg_type is None and rule.interface is None
                and rule.member is None and rule.error_name is None and rule.path is None
                and rule.peer_name is None and rule.broadcast is None
                and rule.requested_reply in (None, False) and rule.min_fds == 0 and rule.max_fds is None)
    return False


def _decide(candidates: List[_Entry], accept: Callable[[Rule], bool]) -> Decision:
    for _, rule in candidates:  # latest first, so the first match is the winner
        if accept(rule):
            return Decision(rule.allow, rule.describe(), rule.log)
    return _NO_MATCH


class ConnectionPolicy:
    """The rules that apply to one connection, indexed for quick checks."""

    def __init__(self, rules: List[Rule]):
        self.rules = tuple(rules)
        self._send = _NameIndex()
        self._receive = _NameIndex()
        self._own = _NameIndex()
        for position, rule in enumerate(self.rules):
            if rule.kind == "send":
                self._send.add(position, rule, rule.peer_name, rule.peer_name_is_prefix)
            elif rule.kind == "receive":
                self._receive.add(position, rule, rule.peer_name, False)
            elif rule.kind == "own":
                self._own.add(position, rule, rule.own_name, rule.own_is_prefix)
        # The stock session.conf allows every send and receive; knowing that
        # up front lets the bus skip per-message checks entirely.
        self.sends_unrestricted = _unrestricted(self.rules, "send")
        self.receives_unrestricted = _unrestricted(self.rules, "receive")

    def check_own(self, name: str) -> Decision:
        return _decide(self._own.candidates((name,)), lambda rule: True)

    def can_own(self, name: str) -> bool:
        return self.check_own(name).allowed

    def check_send(self, m: MessageFacts) -> Decision:
        """Evaluated with the sender's policy."""
        return _decide(self._send.candidates(m.destination_names),
                       lambda rule: _matches_message(rule, m, receiving=False))

    def check_receive(self, m: MessageFacts) -> Decision:
        """Evaluated with the (proposed) receiver's policy."""
        return _decide(self._receive.candidates(m.sender_names),
                       lambda rule: _matches_message(rule, m, receiving=True))

    def check_eavesdrop(self, m: MessageFacts) -> Decision:
        """May this connection see ``m``, which is addressed to someone else?

        Only messages with a destination count as eavesdropping; a broadcast
        signal is received normally by everyone whose match rules select it.
        """
        return self.check_receive(replace(m, eavesdropping=m.destination is not None))


# A user or group selector resolved to an id; ANY is "*".
ANY = -1


def _lookup_user(name: str) -> Optional[int]:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _lookup_group(name: str) -> Optional[int]:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class Policy:
    """All <policy> blocks of a configuration, compiled.

    ``bus_uid`` is the uid the bus runs as: with no <allow user/group> rule
    saying otherwise, only it may connect. The lookup functions map names to
    ids (default: the system user and group databases).
    """

    def __init__(self, config: BusConfig, *, bus_uid: Optional[int] = None,
                 lookup_user: Callable[[str], Optional[int]] = _lookup_user,
                 lookup_group: Callable[[str], Optional[int]] = _lookup_group):
        self.bus_uid = os.geteuid() if bus_uid is None else bus_uid
        self._lookup_user = lookup_user
        self._lookup_group = lookup_group
        self._default: List[Rule] = []
        self._mandatory: List[Rule] = []
        self._by_group: List[Tuple[int, List[Rule]]] = []   # config order
        self._by_user: Dict[int, List[Rule]] = {}
        self._at_console: Dict[bool, List[Rule]] = {True: [], False: []}
        # (allow, "user"|"group", id or ANY, rule) from default then mandatory
        self._connection_rules: List[Tuple[bool, str, int, Rule]] = []
        self._cache: Dict[Creds, ConnectionPolicy] = {}

        for block in config.policies:
            self._add_block(block)
        for rule in self._default + self._mandatory:
            if rule.kind in ("user", "group"):
                ident = self._resolve(rule.kind, rule.principal, rule.describe())
                if ident is not None:
                    self._connection_rules.append((rule.allow, rule.kind, ident, rule))

    def _resolve(self, kind: str, selector: str, where: str) -> Optional[int]:
        if selector == "*":
            return ANY
        if selector.isdigit():
            return int(selector)
        lookup = self._lookup_user if kind == "user" else self._lookup_group
        ident = lookup(selector)
        if ident is None:
            # As dbus-daemon does: an unknown name must not stop the bus.
            log.warning("unknown %s name %r in %s ignored", kind, selector, where)
        return ident

    def _add_block(self, block: PolicyBlock) -> None:
        message_rules = [rule for rule in block.rules if rule.kind not in ("user", "group")]
        if block.context == "default":
            self._default.extend(block.rules)
        elif block.context == "mandatory":
            self._mandatory.extend(block.rules)
        elif block.context == "at_console":
            self._at_console[block.selector == "true"].extend(message_rules)
        else:
            where = f'<policy {block.context}="{block.selector}"> in {block.source}'
            ident = self._resolve(block.context, block.selector, where)
            if ident is None or ident == ANY:
                if ident == ANY:
                    log.warning("%s: '*' is not a %s; policy ignored", where, block.context)
                return
            if block.context == "user":
                self._by_user.setdefault(ident, []).extend(message_rules)
            else:
                self._by_group.append((ident, message_rules))

    def allows_connect(self, creds: Creds) -> bool:
        allowed = creds.uid == self.bus_uid
        for allow, kind, ident, _ in self._connection_rules:
            if kind == "user":
                matched = ident == ANY or ident == creds.uid
            else:
                matched = ident == ANY or ident in creds.gids
            if matched:
                allowed = allow
        return allowed

    def for_connection(self, creds: Creds) -> ConnectionPolicy:
        cached = self._cache.get(creds)
        if cached is not None:
            return cached
        rules: List[Rule] = [rule for rule in self._default
                             if rule.kind not in ("user", "group")]
        for gid, group_rules in self._by_group:
            if gid in creds.gids:
                rules.extend(group_rules)
        rules.extend(self._by_user.get(creds.uid, ()))
        rules.extend(self._at_console[creds.at_console])
        rules.extend(rule for rule in self._mandatory if rule.kind not in ("user", "group"))
        policy = ConnectionPolicy(rules)
        self._cache[creds] = policy
        return policy
