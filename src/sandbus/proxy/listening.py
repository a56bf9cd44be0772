"""The part of a proxied group that must exist before sandbus-dbus-proxy
writes `x` on --fd, made without the event loop and the filter (imported
only after `x`, so Flatpak waits less): its rules compiled (a bad one is an
error now), its upstream address resolved, its socket listening on PATH."""

from ..containers.rules import compile_allow
from .native import GroupError, allow_rules, listen_on
from .upstream import UpstreamError, resolve


class Listening:
    """One proxied group, listening."""

    def __init__(self, group):
        self.group = group
        self.rules = compile_allow(allow_rules(group)) if group.filter else None
        try:
            self.target = resolve(group.address)
        except UpstreamError as e:
            raise GroupError(f"Failed to connect to bus {group.address}: {e}") from None
        self.sock = listen_on(group.path)

    def close(self) -> None:
        self.sock.close()
