"""Validity of bus names, interface/member/error names and object paths."""

import re

MAX_NAME_LENGTH = 255

_ELEMENT = r"[A-Za-z_][A-Za-z0-9_]*"
_INTERFACE_RE = re.compile(rf"{_ELEMENT}(?:\.{_ELEMENT})+\Z")
_MEMBER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_WELL_KNOWN_RE = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*(?:\.[A-Za-z_-][A-Za-z0-9_-]*)+\Z")
_UNIQUE_RE = re.compile(r":[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+\Z")
_PATH_RE = re.compile(r"/\Z|(?:/[A-Za-z0-9_]+)+\Z")


def is_valid_interface(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _INTERFACE_RE.match(name) is not None


is_valid_error_name = is_valid_interface


def is_valid_member(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _MEMBER_RE.match(name) is not None


def is_valid_bus_name(name: str) -> bool:
    if len(name) > MAX_NAME_LENGTH:
        return False
    if name.startswith(":"):
        return _UNIQUE_RE.match(name) is not None
    return _WELL_KNOWN_RE.match(name) is not None


def is_valid_well_known_name(name: str) -> bool:
    return not name.startswith(":") and is_valid_bus_name(name)


def is_valid_object_path(path: str) -> bool:
    return _PATH_RE.match(path) is not None


def is_valid_namespace(name: str) -> bool:
    """arg0namespace values: a bus name or a single element (spec allows both)."""
    if len(name) > MAX_NAME_LENGTH:
        return False
    return is_valid_bus_name(name) or re.match(r"[A-Za-z_-][A-Za-z0-9_-]*\Z", name) is not None
