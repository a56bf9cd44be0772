"""Service (.service) files: parsing, and the cache of a list of service
directories that core/activation.py asks for entries.  The file reading
lives here, in the configuration layer, so the bus core does none."""

from __future__ import annotations

import logging
import os

from ..keyfile import KeyFileError, parse_key_file
from ..wire.names import is_valid_bus_name

log = logging.getLogger("sandbus.activation")

SERVICE_SECTION = "D-BUS Service"


class ServiceFileError(KeyFileError):
    pass


def parse_desktop_file(text: str) -> dict:
    """{section: {key: value}} of a desktop-entry style file."""
    return parse_key_file(text, ServiceFileError)


class ServiceEntry:
    __slots__ = ("name", "exec", "user", "systemd_service", "assumed_apparmor_label", "path", "mtime")

    def __init__(self, name, exec_, user=None, systemd_service=None, assumed_apparmor_label=None,
                 path=None, mtime=None):
        self.name = name
        self.exec = exec_
        self.user = user
        self.systemd_service = systemd_service
        self.assumed_apparmor_label = assumed_apparmor_label
        self.path = path
        self.mtime = mtime

    def __repr__(self):
        return f"ServiceEntry({self.name!r}, {self.exec!r})"


def entry_from_text(text: str, path=None, mtime=None) -> ServiceEntry:
    section = parse_desktop_file(text).get(SERVICE_SECTION)
    if section is None:
        raise ServiceFileError(f"no [{SERVICE_SECTION}] section")
    name = section.get("Name")
    if not name:
        raise ServiceFileError("no Name= key")
    if not is_valid_bus_name(name) or name.startswith(":"):
        raise ServiceFileError(f"Name={name} is not a valid well-known bus name")
    if "Exec" not in section:
        raise ServiceFileError("no Exec= key")
    return ServiceEntry(name, section["Exec"], section.get("User"), section.get("SystemdService"),
                        section.get("AssumedAppArmorLabel"), path, mtime)


class ServiceCache:
    """The .service files of a list of directories (earlier directories win;
    within a directory the first file in name order wins).  Files are re-read
    only when their mtime changes, as dbus-daemon does."""

    def __init__(self, dirs):
        self.dirs = [(d, False) if isinstance(d, str) else (d.path, d.strict_naming) for d in dirs]
        self.entries = {}  # bus name -> ServiceEntry
        self._files = {}  # path -> (mtime, ServiceEntry or None)

    @classmethod
    def loaded(cls, dirs) -> "ServiceCache":
        cache = cls(dirs)
        cache.scan()
        return cache

    def scan(self) -> None:
        entries = {}
        files = {}
        for directory, strict in self.dirs:
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for fname in names:
                if not fname.endswith(".service"):
                    continue
                path = os.path.join(directory, fname)
                try:
                    mtime = os.stat(path).st_mtime_ns
                except OSError:
                    continue
                cached = self._files.get(path)
                if cached is not None and cached[0] == mtime:
                    entry = cached[1]
                else:
                    entry = self._load(path, mtime)
                files[path] = (mtime, entry)
                if entry is None:
                    continue
                if strict and fname != entry.name + ".service":
                    log.warning('Service file "%s" should have been named "%s.service": not loading it',
                                path, entry.name)
                    continue
                if entry.name in entries:
                    log.info("Service %s already exists in activation entry list (ignoring %s)", entry.name, path)
                    continue
                entries[entry.name] = entry
        self.entries = entries
        self._files = files

    @staticmethod
    def _load(path: str, mtime):
        try:
            with open(path, encoding="utf-8", errors="strict") as f:
                text = f.read()
            return entry_from_text(text, path, mtime)
        except (OSError, UnicodeDecodeError, ServiceFileError) as e:
            log.warning("ignoring service file %s: %s", path, e)
            return None

    def lookup(self, name: str):
        """The entry for name, re-checking its file (or rescanning on a miss)
        as dbus-daemon's activation_find_entry does."""
        entry = self.entries.get(name)
        if entry is not None:
            try:
                fresh = os.stat(entry.path).st_mtime_ns == entry.mtime
            except OSError:
                fresh = False
            if fresh:
                return entry
        self.scan()
        return self.entries.get(name)

    def names(self):
        return list(self.entries)
