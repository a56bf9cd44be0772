"""Turn one <allow>/<deny> element into a :class:`Rule`, validating it the
way dbus-daemon does: a rule is about sending, receiving, owning or
connecting, never a mixture, and only documented attributes are accepted.
"""

from __future__ import annotations

import logging
from typing import Mapping
from xml.sax.saxutils import quoteattr

from .model import MESSAGE_TYPES, Rule, SourceLocation

log = logging.getLogger("sandbus.config")

SEND_ATTRIBUTES = (
    "send_interface", "send_member", "send_error", "send_destination",
    "send_destination_prefix", "send_path", "send_type", "send_broadcast",
    "send_requested_reply",
)
RECEIVE_ATTRIBUTES = (
    "receive_interface", "receive_member", "receive_error", "receive_sender",
    "receive_path", "receive_type", "receive_requested_reply",
)
# Modifiers that qualify a send or a receive rule.
MESSAGE_MODIFIERS = ("eavesdrop", "min_fds", "max_fds", "log")
STANDALONE_ATTRIBUTES = ("own", "own_prefix", "user", "group")
RULE_ATTRIBUTES = frozenset(
    SEND_ATTRIBUTES + RECEIVE_ATTRIBUTES + MESSAGE_MODIFIERS + STANDALONE_ATTRIBUTES)

# dbus's DBUS_MAXIMUM_MESSAGE_UNIX_FDS: a fd takes at least 4 bytes of a
# message of at most 2**27 bytes.
MAXIMUM_MESSAGE_UNIX_FDS = 2 ** 27 // 4


class RuleError(ValueError):
    """Raised with a message only; the parser adds file, line and element."""


def _wildcard_to_none(value: str | None) -> str | None:
    return None if value == "*" else value


def _parse_bool(attributes: Mapping[str, str], name: str) -> bool | None:
    value = attributes.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise RuleError(f'bad value "{value}" for {name} attribute, must be true or false')
    return value == "true"


def _parse_message_type(value: str | None) -> int | None:
    value = _wildcard_to_none(value)
    if value is None:
        return None
    try:
        return MESSAGE_TYPES[value]
    except KeyError:
        raise RuleError(f'bad message type "{value}"') from None


def _parse_fds(attributes: Mapping[str, str], name: str) -> int | None:
    value = attributes.get(name)
    if value is None:
        return None
    if not value.isdigit() or int(value) > MAXIMUM_MESSAGE_UNIX_FDS:
        raise RuleError(f'bad value "{value}" for {name} attribute, must be an '
                        f"integer between 0 and {MAXIMUM_MESSAGE_UNIX_FDS}")
    return int(value)


def rule_text(element_name: str, attributes: Mapping[str, str]) -> str:
    rendered = "".join(f" {name}={quoteattr(value)}" for name, value in attributes.items())
    return f"<{element_name}{rendered}/>"


def build_rule(element_name: str, attributes: Mapping[str, str],
               source: SourceLocation) -> Rule:
    """Validate the attributes of an <allow> or <deny> element."""
    unknown = [name for name in attributes if name not in RULE_ATTRIBUTES]
    if unknown:
        raise RuleError(f'attribute "{unknown[0]}" is invalid on <{element_name}>')

    present = set(attributes)
    any_send = bool(present.intersection(SEND_ATTRIBUTES))
    # <allow eavesdrop="true"/> alone means "receive anything, even when
    # eavesdropping"; with send attributes eavesdrop qualifies the send rule.
    any_receive = bool(present.intersection(RECEIVE_ATTRIBUTES)) or (
        not any_send and "eavesdrop" in present)
    any_message = any_send or any_receive or bool(present.intersection(MESSAGE_MODIFIERS))
    standalone = present.intersection(STANDALONE_ATTRIBUTES)

    if not (any_send or any_receive or standalone):
        raise RuleError(f"<{element_name}> must have one or more attributes "
                        "that select sending, receiving, owning or connecting")
    if int(any_message) + len(standalone) > 1:
        raise RuleError("invalid combination of attributes: own, own_prefix, user, "
                        "group and the message-related attributes cannot be combined")
    if any_send and any_receive:
        raise RuleError("invalid combination of attributes: send and receive "
                        "attributes cannot be combined")
    for prefix in ("send", "receive"):
        if f"{prefix}_error" in present and (
                f"{prefix}_member" in present or f"{prefix}_interface" in present):
            raise RuleError(f"invalid combination of attributes: {prefix}_error cannot "
                            f"be combined with {prefix}_member or {prefix}_interface")
        if (f"{prefix}_member" in present and f"{prefix}_interface" not in present
                and f"{prefix}_path" not in present):
            # Newer dbus-daemons reject this; 1.14 accepts it, so only warn.
            log.warning("%s: %s: a member without an interface or path also matches "
                        "messages that have no interface field", source,
                        rule_text(element_name, attributes))
    if "send_destination" in present and "send_destination_prefix" in present:
        raise RuleError("invalid combination of attributes: send_destination cannot "
                        "be combined with send_destination_prefix")

    allow = element_name == "allow"
    text = rule_text(element_name, attributes)
    eavesdrop = bool(_parse_bool(attributes, "eavesdrop"))
    log_flag = bool(_parse_bool(attributes, "log"))
    min_fds = _parse_fds(attributes, "min_fds") or 0
    max_fds = _parse_fds(attributes, "max_fds")

    if any_send:
        destination = attributes.get("send_destination")
        broadcast = _parse_bool(attributes, "send_broadcast")
        peer_name = _wildcard_to_none(destination)
        if broadcast is True and peer_name is not None:
            raise RuleError(f'rule with send_broadcast="true" and send_destination='
                            f'"{destination}" cannot match anything')
        is_prefix = "send_destination_prefix" in present
        if is_prefix:
            peer_name = attributes["send_destination_prefix"]
        return Rule(
            allow=allow, kind="send", source=source, text=text,
            msg_type=_parse_message_type(attributes.get("send_type")),
            interface=_wildcard_to_none(attributes.get("send_interface")),
            member=_wildcard_to_none(attributes.get("send_member")),
            error_name=_wildcard_to_none(attributes.get("send_error")),
            path=_wildcard_to_none(attributes.get("send_path")),
            peer_name=peer_name, peer_name_is_prefix=is_prefix,
            broadcast=broadcast,
            requested_reply=_parse_bool(attributes, "send_requested_reply"),
            eavesdrop=eavesdrop, min_fds=min_fds, max_fds=max_fds, log=log_flag)
    if any_receive:
        return Rule(
            allow=allow, kind="receive", source=source, text=text,
            msg_type=_parse_message_type(attributes.get("receive_type")),
            interface=_wildcard_to_none(attributes.get("receive_interface")),
            member=_wildcard_to_none(attributes.get("receive_member")),
            error_name=_wildcard_to_none(attributes.get("receive_error")),
            path=_wildcard_to_none(attributes.get("receive_path")),
            peer_name=_wildcard_to_none(attributes.get("receive_sender")),
            requested_reply=_parse_bool(attributes, "receive_requested_reply"),
            eavesdrop=eavesdrop, min_fds=min_fds, max_fds=max_fds, log=log_flag)
    if "own" in present:
        return Rule(allow=allow, kind="own", source=source, text=text,
                    own_name=_wildcard_to_none(attributes["own"]))
    if "own_prefix" in present:
        return Rule(allow=allow, kind="own", source=source, text=text,
                    own_name=attributes["own_prefix"], own_is_prefix=True)
    kind = "user" if "user" in present else "group"
    return Rule(allow=allow, kind=kind, source=source, text=text,
                principal=attributes[kind])
