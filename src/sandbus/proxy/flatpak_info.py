"""/.flatpak-info, the key file Flatpak puts at the root of the proxy's
sandbox (and the app's): the app id for the instance's name, and every
section as the instance's metadata, one a{sv} of strings per section, so
a service reads [Application] name, [Instance] instance-id, the runtime
and the [Context] / [Session Bus Policy] permissions from
GetConnectionInstance as it would from the file."""

import os

from ..keyfile import KeyFileError, parse_key_file
from ..wire.marshal import Variant

DEFAULT_PATH = "/.flatpak-info"
# Where to read it from instead (tests, or a launcher that is not Flatpak).
PATH_VARIABLE = "SANDBUS_FLATPAK_INFO"


class FlatpakInfoError(Exception):
    pass


def info_path() -> str:
    return os.environ.get(PATH_VARIABLE) or DEFAULT_PATH


def parse(text: str) -> dict:
    """{section: {key: value}} of the info file (keys as written)."""
    try:
        return parse_key_file(text)
    except KeyFileError as e:
        raise FlatpakInfoError(f"cannot parse {info_path()}: {e}") from None


def app_id(sections: dict) -> str:
    """The app's id ([Application] name), or a runtime's ([Runtime] name)."""
    for section in ("Application", "Runtime"):
        name = sections.get(section, {}).get("name")
        if name:
            return name
    return ""


def metadata(sections: dict) -> dict:
    return {s: Variant("a{sv}", {k: Variant("s", v) for k, v in keys.items()}) for s, keys in sections.items()}


def load():
    """(app id, metadata) from the info file; ("", {}) if there is none
    (not started by Flatpak)."""
    path = info_path()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return "", {}
    except OSError as e:
        raise FlatpakInfoError(f"cannot read {path}: {e.strerror}") from None
    sections = parse(text)
    return app_id(sections), metadata(sections)
