"""D-Bus server addresses: 'transport:key=value,key=value;...' with %-escaping."""

import re

_OPTIONALLY_ESCAPED = re.compile(rb"[-0-9A-Za-z_/.\\*]")


class AddressError(ValueError):
    pass


def escape_value(value: str) -> str:
    out = []
    for byte in value.encode():
        ch = bytes((byte,))
        out.append(ch.decode() if _OPTIONALLY_ESCAPED.match(ch) else f"%{byte:02x}")
    return "".join(out)


def parse_addresses(text: str) -> list:
    """Parse an address list into [(transport, {key: value})]."""
    result = []
    for part in text.split(";"):
        if not part:
            continue
        transport, sep, rest = part.partition(":")
        if not sep or not transport:
            raise AddressError(f"address {part!r} has no transport")
        params = {}
        for pair in rest.split(",") if rest else ():
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise AddressError(f"address {part!r} has a malformed key=value pair {pair!r}")
            if key in params:
                raise AddressError(f"address {part!r} repeats the key {key!r}")
            if re.search(r"%(?![0-9A-Fa-f]{2})", value):
                raise AddressError(f"address {part!r} has a bad %-escape")
            if "%" in value:
                # only here: urllib.parse (which imports ipaddress) costs
                # every client's start-up (bench/run_startup.py), and a bus
                # address seldom has an escape
                from urllib.parse import unquote_to_bytes
                params[key] = unquote_to_bytes(value).decode()
            else:
                params[key] = value.encode().decode()  # as unquote_to_bytes: a lone surrogate raises
        result.append((transport, params))
    if not result:
        raise AddressError("empty address")
    return result


def format_address(transport: str, params: dict) -> str:
    return transport + ":" + ",".join(f"{k}={escape_value(v)}" for k, v in params.items())
