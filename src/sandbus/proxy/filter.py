"""The filtering proxy's decisions for one client, without sockets: every
message from the client and every message from the bus goes through a
ClientFilter, which says what to send where (`to_bus`, `to_client`: lists
of (bytes, fds) the I/O side drains).

The decisions are the bus's own: the containers' rule engine
(containers/access.py) judges each message against a picture of the bus
behind us (proxy/view.py), and a hidden name gets the very answer the bus
gives for a missing one (core/driver.py missing_name_error and the
driver's no-such-name errors).

The proxy numbers the messages it sends upstream itself and maps replies
back to the client's serials, so a client's serials need not grow (nested
proxies, clients reusing serials), and the proxy's own calls (ListNames,
GetNameOwner, AddMatch for NameOwnerChanged) never collide with them.
Only replies to calls that went through reach the client, and the client
may answer only calls it received, once each."""

import logging
import struct

from ..containers.access import HIDDEN_NAME_ERRORS, AccessControl
from ..containers.rules import CALL_METHODS, SEND_UNIX_FDS
from ..core import errors
from ..core.driver import Driver, _no_such_name, missing_name_error
from ..core.errors import DBusError
from ..core.match import MatchRule
from ..wire.marshal import MarshalError, Reader
from ..wire.message import (
    ERROR,
    FIELD_REPLY_SERIAL,
    METHOD_CALL,
    METHOD_RETURN,
    NO_AUTO_START,
    NO_REPLY_EXPECTED,
    SIGNAL,
    build_message,
)
from .view import DRIVER_NAME, BusView, RemotePeer

log = logging.getLogger("sandbus.proxy")

DRIVER_PATH = "/org/freedesktop/DBus"
DRIVER_IFACE = "org.freedesktop.DBus"
PEER_IFACE = "org.freedesktop.DBus.Peer"
NAME_OWNER_CHANGED_RULE = ("type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                           "member='NameOwnerChanged',path='/org/freedesktop/DBus'")
# What the driver says when a lookup's name does not exist (core/driver.py).
NO_SUCH_NAME = {
    "GetNameOwner": "owner",
    "GetConnectionUnixUser": "UID",
    "GetConnectionUnixProcessID": "PID",
    "GetAdtAuditSessionData": "audit session data",
    "GetConnectionSELinuxSecurityContext": "security context",
    "GetConnectionCredentials": "credentials",
    "ListQueuedOwners": "owners",
}
# The driver's method table, for the same checks in the same order as the
# bus (core/driver.py Driver.handle); it runs no handler here.
_TABLE = Driver(None)
_U32 = {"l": struct.Struct("<I"), "B": struct.Struct(">I")}

MAX_ALLOWED = 1024
MAX_HELD = 1024
# Calls the client received and has not answered yet that we remember (the
# bus's own max_replies_per_connection bounds what it waits for anyway).
MAX_INCOMING = 8192
# the client's phases
HELLO, SYNCING, READY = range(3)


class _Manager:
    """What AccessControl reads of the containers' manager: the bus."""

    def __init__(self, bus):
        self.bus = bus

    def on_disconnect(self, peer) -> None:
        pass


class ProxyAccess(AccessControl):
    """The containers' rules judging one proxied client.  Quotas are the
    bus's business (it counts what our upstream connection holds)."""

    def __init__(self, view: BusView):
        super().__init__(_Manager(view))

    def check_quotas(self, peer, member, args) -> None:
        pass


def set_serial(data: bytes, endian: str, serial: int) -> bytes:
    return b"".join((data[:8], _U32[endian].pack(serial), data[12:]))


def reply_serial_offset(data, endian: str, fields_end: int) -> int:
    """Where the REPLY_SERIAL value of a message is (it has one)."""
    p = 16
    u32 = _U32[endian]
    while p < fields_end:
        p += -p % 8
        code, sig = data[p], data[p + 2]
        if data[p + 1] == 1 and data[p + 3] == 0:
            if code == FIELD_REPLY_SERIAL:
                return p + 4
            if sig in (0x75, 0x69):  # u, i
                p += 8
            elif sig == 0x67:  # g
                p += 4 + 1 + data[p + 4] + 1
            elif sig in (0x73, 0x6F):  # s, o
                p += 8 + u32.unpack_from(data, p + 4)[0] + 1
            else:
                p = _skip_field(data, endian, p, fields_end)
        else:
            p = _skip_field(data, endian, p, fields_end)
    raise ValueError("no REPLY_SERIAL field")


def _skip_field(data, endian, p, end) -> int:
    r = Reader(data, endian, p, end)
    r.read("(yv)")
    return r.pos


def set_reply_serial(msg, serial: int) -> bytes:
    data = msg.data
    at = reply_serial_offset(data, msg.endian, 16 + msg.fields_len)
    return b"".join((data[:at], _U32[msg.endian].pack(serial), data[at + 4:]))


class _Pending:
    """A call we sent upstream: whose it is and what its reply needs."""

    __slots__ = ("client_serial", "on_reply")

    def __init__(self, client_serial, on_reply=None):
        self.client_serial = client_serial  # None for the proxy's own calls
        self.on_reply = on_reply  # fn(msg) -> (bytes, fds) | None, or for our own calls fn(msg)


class ClientFilter:
    def __init__(self, instance, unix_fds: bool = True):
        self.instance = instance
        self.filtering = instance.access is not None
        self.view = BusView(instance)
        self.access = ProxyAccess(self.view)
        self.me = RemotePeer(None, instance)  # the client, once Hello gave it a name
        self.unix_fds = unix_fds  # the client agreed to fds
        self.state = HELLO
        self.serial = 0  # of the messages we send upstream
        self.local_serial = 0  # of the answers we give the client ourselves
        self.pending = {}  # upstream serial -> _Pending
        self.incoming = {}  # (caller, serial) of calls the client may answer, oldest first
        self.held = []  # client messages waiting for the picture of the bus
        self.syncing = 0  # our own calls still unanswered before READY
        self.match_rules = []  # the client's, to deliver only NameOwnerChanged it asked for
        # What the rule engine allowed, by everything its verdict on a
        # message without fds depends on besides the picture of the bus;
        # emptied whenever that picture changes (NameOwnerChanged).
        self.allowed = {}
        self.to_bus = []
        self.to_client = []
        self.closed_reason = None  # set when the client must be disconnected

    # -- output -------------------------------------------------------------------

    def _up(self, msg, on_reply=None) -> None:
        """Forward a client's message upstream under our own serial."""
        self.serial += 1
        s = self.serial
        if msg.type == METHOD_CALL and not msg.flags & NO_REPLY_EXPECTED:
            self.pending[s] = _Pending(msg.serial, on_reply)
        self.to_bus.append((set_serial(msg.data, msg.endian, s), msg.fds))

    def _own_call(self, member, sig="", body=(), on_reply=None) -> None:
        self.serial += 1
        self.pending[self.serial] = _Pending(None, on_reply)
        self.to_bus.append((build_message(METHOD_CALL, self.serial, path=DRIVER_PATH, interface=DRIVER_IFACE,
                                          member=member, destination=DRIVER_NAME, signature=sig, body=body), ()))

    def _answer(self, msg, sig="", body=()) -> None:
        self.local_serial += 1
        self.to_client.append((build_message(
            METHOD_RETURN, self.local_serial, flags=NO_REPLY_EXPECTED, reply_serial=msg.serial,
            destination=self.me.unique_name, sender=DRIVER_NAME, signature=sig, body=body,
            endian=msg.endian), ()))

    def _error(self, msg, error: DBusError) -> None:
        self.local_serial += 1
        self.to_client.append((build_message(
            ERROR, self.local_serial, flags=NO_REPLY_EXPECTED, error_name=error.name, reply_serial=msg.serial,
            destination=self.me.unique_name, sender=DRIVER_NAME, signature="s", body=(error.message,),
            endian=msg.endian), ()))

    def _drop(self, msg) -> None:
        from ..io.fds import close_fds
        close_fds(msg.fds)

    # -- from the client ----------------------------------------------------------

    def from_client(self, msg) -> None:
        if self.state == READY and msg.type == METHOD_CALL and not msg.fds and (
                METHOD_CALL, msg.destination, msg.path, msg.interface, msg.member) in self.allowed:
            # the hot path: a call like one the rule engine allowed already
            # (_unicast), with nothing changed since
            self.serial = s = self.serial + 1
            if not msg.flags & NO_REPLY_EXPECTED:
                self.pending[s] = _Pending(msg.serial)
            data = msg.data
            self.to_bus.append((b"".join((data[:8], _U32[msg.endian].pack(s), data[12:])), ()))
            return
        if not self.filtering:
            self._from_client_unfiltered(msg)
            return
        if self.state == READY:
            self._judge_client(msg)
        elif self.state == HELLO:
            if msg.type == METHOD_CALL and msg.destination == DRIVER_NAME and msg.member == "Hello":
                # Our own calls go right behind the Hello (the bus answers
                # in order): the picture of the bus is one round trip away.
                self.state = SYNCING
                self._up(msg, self._hello_reply)
                self._learn()
            else:
                # the bus refuses anything before Hello (and may hang up)
                self._up(msg)
        elif len(self.held) < MAX_HELD:
            self.held.append(msg)
        else:
            self._drop(msg)
            self.closed_reason = f"sent more than {MAX_HELD} messages before the proxy knew the bus"

    def _from_client_unfiltered(self, msg) -> None:
        # Without --filter the proxy passes everything, as xdg-dbus-proxy
        # does; only the serials are ours.
        t = msg.type
        if t == METHOD_RETURN or t == ERROR:
            self.serial += 1
            self.to_bus.append((set_serial(msg.data, msg.endian, self.serial), msg.fds))
            return
        self._up(msg)

    def _judge_client(self, msg) -> None:
        t = msg.type
        dest = msg.destination
        if t == METHOD_RETURN or t == ERROR:
            key = (dest, msg.reply_serial)
            if key in self.incoming:
                del self.incoming[key]
                self.serial += 1
                self.to_bus.append((set_serial(msg.data, msg.endian, self.serial), msg.fds))
            else:
                self._drop(msg)  # not an answer to a call it received: never out of a container
            return
        if dest is None:
            self._destinationless(msg)
        elif dest == DRIVER_NAME:
            self._driver_call(msg)
        else:
            self._unicast(msg)

    def _destinationless(self, msg) -> None:
        if msg.type == SIGNAL:
            # A broadcast: its receivers are the bus's to pick, so fds go
            # only where the rules let them go anywhere.
            if msg.fds and not any(r.flags & SEND_UNIX_FDS for r in self.instance.access.any):
                self._drop(msg)
                return
            self._up(msg)
        elif msg.interface == PEER_IFACE:
            self._up(msg)  # the bus's own Peer methods (dbus-daemon answers them)
        else:
            self._drop(msg)
            if msg.expects_reply:
                self._error(msg, DBusError(errors.ACCESS_DENIED, "Method calls without a destination may not "
                                           "leave a container, except org.freedesktop.DBus.Peer's"))

    def _unicast(self, msg) -> None:
        if not msg.fds:
            key = (msg.type, msg.destination, msg.path, msg.interface, msg.member)
            if key in self.allowed:
                self._up(msg)
                return
        me = self.me
        dest = msg.destination
        target = self.view.lookup(dest)
        if target is None:
            # Nobody we know owns it: the bus answers (or activates) if the
            # app may call it there; else the bus's answer for a missing
            # name. Seeing is not enough (--see names are never callable,
            # owner or not): the call rule decides, as check_unicast does.
            if dest[0] != ":" and self.access._allows(
                    self.instance, (dest,), CALL_METHODS, msg.path, msg.interface, msg.member) and (
                    msg.flags & NO_AUTO_START or self.access.may_activate(me, dest)):
                self._up(msg)
            else:
                self._drop(msg)
                self._error(msg, missing_name_error(msg))
            return
        error = self.access.check_unicast(me, target, msg)
        if error is None:
            if not msg.fds:
                allowed = self.allowed
                if len(allowed) >= MAX_ALLOWED:
                    allowed.clear()
                allowed[key] = True
            self._up(msg)
            return
        self._drop(msg)
        if error.name in HIDDEN_NAME_ERRORS:
            self._error(msg, missing_name_error(msg))  # whatever its flags, as the bus (core/bus.py _refuse)
        elif msg.expects_reply:
            self._error(msg, error)

    def _driver_call(self, msg) -> None:
        try:
            self._check_driver_call(msg)
        except DBusError as e:
            self._drop(msg)
            self._error(msg, e)  # the driver answers even NO_REPLY_EXPECTED calls

    def _check_driver_call(self, msg) -> None:
        """Core/driver.py Driver.handle's checks, then the rules'; forwards
        the call (or answers for a hidden name) when they pass."""
        if msg.type != METHOD_CALL:
            self._up(msg)  # the bus drops signals to it
            return
        member = msg.member
        try:
            row, args = _TABLE.resolve_call(msg)
        except (MarshalError, ValueError) as e:
            self.closed_reason = f"malformed message body: {e}"
            return
        me = self.me
        view = self.access.driver_call(me, row, msg, args)
        on_reply = None
        if row.interface == DRIVER_IFACE:
            if view is not None and (member in NO_SUCH_NAME or member == "NameHasOwner"):
                name = args[0]
                if name != DRIVER_NAME and not view.sees(name, self.view.lookup(name)):
                    self._drop(msg)
                    if member == "NameHasOwner":
                        self._answer(msg, "b", (False,))
                        return
                    raise _no_such_name(NO_SUCH_NAME[member], name)
                if member == "GetConnectionCredentials":
                    on_reply = self._credentials_reply(name)
                elif member == "ListQueuedOwners":
                    on_reply = self._names_reply(view, "as")
            elif view is not None and member in ("ListNames", "ListActivatableNames"):
                on_reply = self._names_reply(view, "as")
            elif member == "AddMatch" or member == "RemoveMatch":
                rule = MatchRule(args[0])  # invalid: the bus's MatchRuleInvalid, before it is sent
                keep = self._keep_rule if member == "AddMatch" else self._forget_rule
                if msg.flags & NO_REPLY_EXPECTED:
                    # No reply will come to do the bookkeeping on: the bus
                    # applies a valid rule all the same, so do it now.
                    keep(rule)
                else:
                    on_reply = self._on_success(keep, rule)
        self._up(msg, on_reply)

    # -- replies the filter changes -----------------------------------------------

    def _names_reply(self, view, sig):
        def filtered(reply):
            if reply.type != METHOD_RETURN:
                return None
            names = [n for n in reply.body()[0] if n == DRIVER_NAME or view.lists(n)]
            return self._rebuild(reply, sig, (names,))
        return filtered

    def _credentials_reply(self, name):
        def filtered(reply):
            # a pidfd is a handle on the process: only for the app's own
            # connections (as the bus gives it, core/driver.py)
            target = self.view.lookup(name) if name != DRIVER_NAME else None
            if reply.type != METHOD_RETURN or not reply.fds or (
                    target is not None and target.container is self.instance):
                return None
            creds = reply.body()[0]
            creds.pop("ProcessFD", None)
            self._drop(reply)
            return self._rebuild(reply, "a{sv}", (creds,), fds=())
        return filtered

    @staticmethod
    def _on_success(action, rule):
        def done(reply):
            if reply.type == METHOD_RETURN:
                action(rule)
            return None
        return done

    def _keep_rule(self, rule) -> None:
        self.match_rules.append(rule)

    def _forget_rule(self, rule) -> None:
        key = rule.key
        for i in range(len(self.match_rules) - 1, -1, -1):
            if self.match_rules[i].key == key:
                del self.match_rules[i]
                break

    def _rebuild(self, reply, sig, body, fds=None):
        fds = reply.fds if fds is None else fds
        return (build_message(reply.type, reply.serial, flags=reply.flags, reply_serial=reply.reply_serial,
                              destination=reply.destination, sender=reply.sender, signature=sig, body=body,
                              unix_fds=len(fds), endian=reply.endian), fds)

    # -- registering and learning the bus -------------------------------------------

    def _hello_reply(self, reply):
        if reply.type != METHOD_RETURN:
            # (LimitsExceeded): our calls behind it were refused too
            self.closed_reason = f"the bus refused Hello: {reply.error_name}"
            return None
        name = reply.body()[0]
        me = self.me
        me.unique_name = name
        self.view.peers[name] = me
        self.instance.add_member(name)
        return None

    def _learn(self) -> None:
        self.syncing = 1
        self._own_call("AddMatch", "s", (NAME_OWNER_CHANGED_RULE,), self._synced)
        rules = self.instance.access
        if rules.subtree or rules.any:
            # names to follow that we cannot name: the bus must list them
            self.syncing += 1
            self._own_call("ListNames", "", (), self._listed)
        else:
            # only exact names (xdg-dbus-proxy's --talk=NAME): one round trip
            for n in rules.exact:
                if n[0] != ":":
                    self._follow(n)

    def _follow(self, name: str) -> None:
        self.syncing += 1
        self._own_call("GetNameOwner", "s", (name,), self._owner_of(name))

    def _listed(self, reply) -> None:
        if reply.type == METHOD_RETURN:
            view = self.view
            for n in reply.body()[0]:
                if n.startswith(":"):
                    view.peer(n)
                elif n != DRIVER_NAME and view.follows(n):
                    self._follow(n)
        self._synced(reply)

    def _owner_of(self, name):
        def got(reply):
            if reply.type == METHOD_RETURN:
                self.view.set_owner(name, reply.body()[0])
            self._synced(reply)
        return got

    def _synced(self, reply) -> None:
        self.syncing -= 1
        if self.syncing == 0 and self.state == SYNCING:
            self.state = READY
            held, self.held = self.held, []
            for m in held:
                self._judge_client(m)

    # -- from the bus ---------------------------------------------------------------

    def from_bus(self, msg) -> None:
        t = msg.type
        if t == METHOD_RETURN or t == ERROR:
            p = self.pending.pop(msg.reply_serial, None)
            if p is None:
                self._drop(msg)  # nothing we asked: not for the client either
                return
            if p.client_serial is None:
                p.on_reply(msg)
                self._drop(msg)
                return
            if p.on_reply is None:
                if msg.fds and not self.unix_fds:
                    self._drop(msg)
                    return
                self.to_client.append((set_reply_serial(msg, p.client_serial), msg.fds))
                return
            out = p.on_reply(msg)
            if out is None:
                out = (set_reply_serial(msg, p.client_serial), msg.fds)
            else:
                data, fds = out
                out = (set_reply_serial(_Reparsed(data, msg.endian), p.client_serial), fds)
            self._deliver(msg, out)
            return
        if not self.filtering:
            self._deliver(msg, (msg.data, msg.fds))
            return
        sender_name = msg.sender
        if sender_name == DRIVER_NAME:
            self._from_driver(msg)
            return
        if sender_name is None or sender_name[0] != ":":
            self._drop(msg)
            return
        sender = self.view.peer(sender_name)
        me = self.me
        if t == METHOD_CALL or msg.destination is not None:
            if self.access.check_unicast(sender, me, msg) is not None:
                self._drop(msg)
                return
            if t == METHOD_CALL and not msg.flags & NO_REPLY_EXPECTED:
                incoming = self.incoming
                if len(incoming) >= MAX_INCOMING:
                    # a client that never answers: its oldest calls are the bus's to time out
                    del incoming[next(iter(incoming))]
                incoming[(sender_name, msg.serial)] = True
        elif not self.access.allow_broadcast(sender, me, msg):
            self._drop(msg)
            return
        self._deliver(msg, (msg.data, msg.fds))

    def _from_driver(self, msg) -> None:
        if msg.type == SIGNAL and msg.member == "NameOwnerChanged" and msg.interface == DRIVER_IFACE \
                and msg.destination is None:
            try:
                name, old, new = msg.body()
            except (MarshalError, ValueError):
                self._drop(msg)
                return
            view = self.view
            self.allowed.clear()
            gone = view.name_owner_changed(name, old, new)
            ok = self.access.allow_broadcast(view.driver_peer, self.me, msg) and any(
                r.matches(msg, view.driver_peer) for r in self.match_rules)
            if gone is not None and gone is not self.me:
                view.forget(gone)
                seen = self.access.callers_seen.get(self.me)
                if seen:
                    seen.discard(name)
                self.incoming = {k: True for k in self.incoming if k[0] != name}
            if ok:
                self._deliver(msg, (msg.data, msg.fds))
            return
        if msg.destination is None and not self.access.allow_broadcast(self.view.driver_peer, self.me, msg):
            self._drop(msg)
            return
        self._deliver(msg, (msg.data, msg.fds))

    def _deliver(self, msg, out) -> None:
        if out[1] and not self.unix_fds:
            self._drop(msg)  # the bus would not pass fds to it either
            return
        self.to_client.append(out)


class _Reparsed:
    """Just enough of a Message for set_reply_serial on bytes we built."""

    __slots__ = ("data", "endian", "fields_len")

    def __init__(self, data, endian):
        self.data = data
        self.endian = endian
        self.fields_len = _U32[endian].unpack_from(data, 12)[0]
