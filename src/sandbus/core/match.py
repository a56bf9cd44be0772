"""Match rules: parsing with the specification's quoting, matching, and an
index that keeps broadcast cost independent of the number of rules."""

from ..wire.marshal import MarshalError
from ..wire.message import ERROR, METHOD_CALL, METHOD_RETURN, SIGNAL
from ..wire.signature import split_signature
from ..wire.names import (
    is_valid_bus_name,
    is_valid_interface,
    is_valid_member,
    is_valid_namespace,
    is_valid_object_path,
)
from .errors import MATCH_RULE_INVALID, DBusError

_TYPES = {"signal": SIGNAL, "method_call": METHOD_CALL, "method_return": METHOD_RETURN, "error": ERROR}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}
MAX_ARG = 63


def _invalid(text: str) -> DBusError:
    return DBusError(MATCH_RULE_INVALID, text)


def _split(text: str) -> list:
    """Split 'k=v,k='v',...' into pairs.  Inside quotes everything is literal;
    outside, \\' is an apostrophe (the specification's only escape)."""
    pairs = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\n":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise _invalid("Match rule has a key with no subsequent '=' character")
        key = text[i:eq].strip()
        i = eq + 1
        value = []
        quoted = False
        while i < n:
            c = text[i]
            if quoted:
                if c == "'":
                    quoted = False
                else:
                    value.append(c)
            elif c == "'":
                quoted = True
            elif c == "\\" and i + 1 < n and text[i + 1] == "'":
                value.append("'")
                i += 1
            elif c == ",":
                break
            else:
                value.append(c)
            i += 1
        if quoted:
            raise _invalid("Unbalanced quotation marks in match rule")
        i += 1  # skip the comma
        pairs.append((key, "".join(value)))
    return pairs


class MatchRule:
    __slots__ = (
        "text", "owner", "type", "sender", "interface", "member", "path",
        "path_namespace", "destination", "args", "arg_paths", "arg0namespace",
        "eavesdrop", "key", "max_arg",
    )

    def __init__(self, text: str, owner=None):
        self.text = text
        self.owner = owner
        self.type = self.sender = self.interface = self.member = None
        self.path = self.path_namespace = self.destination = self.arg0namespace = None
        self.args = {}
        self.arg_paths = {}
        self.eavesdrop = False
        seen = set()
        for key, value in _split(text):
            if key in seen and not key.startswith("arg"):
                raise _invalid(f'Key {key} specified twice in match rule')
            seen.add(key)
            self._set(key, value)

        self.max_arg = max([*self.args, *self.arg_paths, 0 if self.arg0namespace is not None else -1], default=-1)
        # Canonical form: RemoveMatch removes a rule equal to the one given,
        # however its text was spelt.
        self.key = (
            self.type, self.sender, self.interface, self.member, self.path,
            self.path_namespace, self.destination, tuple(sorted(self.args.items())),
            tuple(sorted(self.arg_paths.items())), self.arg0namespace, self.eavesdrop,
        )

    def canonical(self) -> str:
        """The rule as dbus-daemon spells it back (GetAllMatchRules;
        bus/signals.c: match_rule_to_string): keys in a fixed order, every
        value quoted, an apostrophe written '\\'' (close, escape, reopen),
        eavesdrop only when true, arguments by number."""
        parts = []
        if self.type is not None:
            parts.append(("type", _TYPE_NAMES[self.type]))
        for key in ("interface", "member", "path", "path_namespace", "sender", "destination"):
            value = getattr(self, key)
            if value is not None:
                parts.append((key, value))
        if self.eavesdrop:
            parts.append(("eavesdrop", "true"))
        for n in range(self.max_arg + 1):
            if n in self.args:
                parts.append((f"arg{n}", self.args[n]))
            elif n in self.arg_paths:
                parts.append((f"arg{n}path", self.arg_paths[n]))
            elif n == 0 and self.arg0namespace is not None:
                parts.append(("arg0namespace", self.arg0namespace))
        return ",".join("%s='%s'" % (key, value.replace("'", "'\\''")) for key, value in parts)

    def _set(self, key: str, value: str) -> None:
        if key == "type":
            if value not in _TYPES:
                raise _invalid(f"Invalid message type ({value}) in match rule")
            self.type = _TYPES[value]
        elif key == "sender":
            if not is_valid_bus_name(value):
                raise _invalid(f"Sender name '{value}' is invalid")
            self.sender = value
        elif key == "interface":
            if not is_valid_interface(value):
                raise _invalid(f"Interface name '{value}' is invalid")
            self.interface = value
        elif key == "member":
            if not is_valid_member(value):
                raise _invalid(f"Member name '{value}' is invalid")
            self.member = value
        elif key in ("path", "path_namespace"):
            if self.path is not None or self.path_namespace is not None:
                raise _invalid("path or path_namespace specified twice in match rule")
            if not is_valid_object_path(value):
                raise _invalid(f"Path '{value}' is invalid")
            setattr(self, key, value)
        elif key == "destination":
            if not is_valid_bus_name(value):
                raise _invalid(f"Destination name '{value}' is invalid")
            self.destination = value
        elif key == "eavesdrop":
            if value not in ("true", "false"):
                raise _invalid(f"eavesdrop='{value}' is invalid, it should be 'true' or 'false'")
            self.eavesdrop = value == "true"
        elif key == "arg0namespace":
            if not is_valid_namespace(value):
                raise _invalid(f"arg0namespace='{value}' is not a valid prefix of a bus name")
            if 0 in self.args or 0 in self.arg_paths:
                raise _invalid(f"Argument {key} matched more than once in match rule")
            self.arg0namespace = value
        elif key.startswith("arg"):
            i = 3
            while i < len(key) and key[i].isdigit():
                i += 1
            digits, suffix = key[3:i], key[i:]
            if not digits:
                raise _invalid(f"Key '{key}' in match rule starts with 'arg' but could not parse arg number. "
                               "Should be 'arg0' or 'arg7' for example.")
            n = int(digits)
            if suffix not in ("", "path"):
                raise _invalid(f"Key '{key}' in match rule contains junk after argument number ({n}). "
                               f"Only 'arg{n}path' (for example) or 'arg0namespace' are valid")
            if n > MAX_ARG:
                raise _invalid(f"Key '{key}' in match rule has arg number {n} but the maximum is {MAX_ARG}.")
            # one condition per argument, whichever its kind (as dbus-daemon)
            if n in self.args or n in self.arg_paths or (n == 0 and self.arg0namespace is not None):
                raise _invalid(f"Argument {key} matched more than once in match rule")
            if suffix:
                self.arg_paths[n] = value
            else:
                self.args[n] = value
        else:
            raise _invalid(f'Unknown key "{key}" in match rule')

    def matches(self, msg, sender, recipient_name=None, recipient=None) -> bool:
        """sender: anything with .unique_name and .names (the names it owns);
        recipient, when known, the same for the addressed recipient."""
        if self.type is not None and msg.type != self.type:
            return False
        if self.interface is not None and msg.interface != self.interface:
            return False
        if self.member is not None and msg.member != self.member:
            return False
        if self.path is not None and msg.path != self.path:
            return False
        if self.path_namespace is not None:
            ns = self.path_namespace
            p = msg.path
            if p is None:
                return False
            if ns != "/" and p != ns and not p.startswith(ns + "/"):
                return False
        if self.sender is not None and self.sender != sender.unique_name and self.sender not in sender.names:
            return False
        if self.destination is not None:
            dest = recipient_name if recipient_name is not None else msg.destination
            # destination='WELL.KNOWN' matches a message whose recipient owns
            # that name, however the sender addressed it (bus/signals.c)
            if dest != self.destination and (recipient is None or self.destination not in recipient.names):
                return False
        if self.max_arg >= 0:
            return self._args_match(msg)
        return True

    def _args_match(self, msg) -> bool:
        try:
            args = msg.leading_args(self.max_arg + 1)
            sig = split_signature(msg.signature)
        except (MarshalError, ValueError):
            return False
        for n, want in self.args.items():
            if n >= len(args) or sig[n] != "s" or args[n] != want:
                return False
        for n, want in self.arg_paths.items():
            if n >= len(args) or sig[n] not in ("s", "o"):
                return False
            have = args[n]
            if not (have == want or (want.endswith("/") and have.startswith(want))
                    or (have.endswith("/") and want.startswith(have))):
                return False
        if self.arg0namespace is not None:
            if not args or sig[0] != "s":
                return False
            a0 = args[0]
            ns = self.arg0namespace
            if a0 != ns and not a0.startswith(ns + "."):
                return False
        return True


class MatchIndex:
    """Rules bucketed by their most selective key (member, then interface,
    then path, then sender); each rule sits in exactly one bucket, so a
    message looks only at rules that could match it."""

    def __init__(self):
        self.by_member = {}
        self.by_interface = {}
        self.by_path = {}
        self.by_sender = {}
        self.unkeyed = []
        self.count = 0

    def _bucket(self, rule, create: bool):
        if rule.member is not None:
            table, key = self.by_member, rule.member
        elif rule.interface is not None:
            table, key = self.by_interface, rule.interface
        elif rule.path is not None:
            table, key = self.by_path, rule.path
        elif rule.sender is not None:
            table, key = self.by_sender, rule.sender
        else:
            return self.unkeyed, None, None
        bucket = table.get(key)
        if bucket is None and create:
            bucket = table[key] = []
        return bucket, table, key

    def add(self, rule) -> None:
        self._bucket(rule, True)[0].append(rule)
        self.count += 1

    def remove(self, rule) -> None:
        bucket, table, key = self._bucket(rule, False)
        if bucket is None:
            return
        for i, r in enumerate(bucket):
            if r is rule:
                del bucket[i]
                self.count -= 1
                break
        if not bucket and table is not None:
            del table[key]

    def may_match(self, member, interface, path, sender) -> bool:
        """Whether any rule is a candidate for a message with these keys from
        sender (the buckets candidates() reads): the bus asks before it
        builds a broadcast of its own, which nobody may be listening to."""
        if self.unkeyed or member in self.by_member or interface in self.by_interface \
                or path in self.by_path:
            return True
        by_sender = self.by_sender
        if by_sender:
            if sender.unique_name in by_sender:
                return True
            for name in sender.names:
                if name in by_sender:
                    return True
        return False

    def candidates(self, msg, sender):
        found = []
        b = self.by_member.get(msg.member)
        if b:
            found.extend(b)
        b = self.by_interface.get(msg.interface)
        if b:
            found.extend(b)
        b = self.by_path.get(msg.path)
        if b:
            found.extend(b)
        if self.by_sender:
            b = self.by_sender.get(sender.unique_name)
            if b:
                found.extend(b)
            for name in sender.names:
                b = self.by_sender.get(name)
                if b:
                    found.extend(b)
        if self.unkeyed:
            found.extend(self.unkeyed)
        return found
