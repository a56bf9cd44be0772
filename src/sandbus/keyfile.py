"""Desktop-entry (GKeyFile) style text: D-Bus .service files
(config/services.py) and Flatpak's /.flatpak-info (proxy/flatpak_info.py).
Kept out of config/ so that reading one costs no XML configuration imports."""


class KeyFileError(ValueError):
    pass


def parse_key_file(text: str, error=None) -> dict:
    """{section: {key: value}}: [Section] headers, KEY=VALUE lines (spaces
    around = dropped), # comments; a repeated key keeps its last value.
    Errors are ``error`` (a KeyFileError class), naming the line."""
    error = error or KeyFileError
    sections = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise error(f"invalid section header at line {lineno}")
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None:
            raise error(f"key outside any section at line {lineno}")
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise error(f"invalid line {lineno}: {raw!r}")
        current[key] = value.strip()
    return sections
