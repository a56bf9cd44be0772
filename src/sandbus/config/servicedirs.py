"""The directory lists behind <standard_session_servicedirs/> and
<standard_system_servicedirs/>, in dbus-daemon's order (man dbus-daemon).
"""

from __future__ import annotations

import os
from typing import Mapping

from .model import ServiceDir

# The ${datadir} dbus-daemon is normally built with.
DATADIR = "/usr/share"


def standard_session_servicedirs(env: Mapping[str, str] | None = None) -> list[ServiceDir]:
    env = os.environ if env is None else env
    dirs: list[ServiceDir] = []
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        # Transient services written at runtime: strict names, never watched.
        dirs.append(ServiceDir(os.path.join(runtime_dir, "dbus-1", "services"),
                               strict_naming=True, watched=False))
    data_home = env.get("XDG_DATA_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".local", "share")
    dirs.append(ServiceDir(os.path.join(data_home, "dbus-1", "services")))
    data_dirs = env.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    for data_dir in data_dirs.split(":"):
        if data_dir:
            dirs.append(ServiceDir(os.path.join(data_dir, "dbus-1", "services")))
    dirs.append(ServiceDir(os.path.join(DATADIR, "dbus-1", "services")))
    return dirs


def standard_system_servicedirs() -> list[ServiceDir]:
    return [
        ServiceDir("/usr/local/share/dbus-1/system-services"),
        ServiceDir("/usr/share/dbus-1/system-services"),
        ServiceDir(os.path.join(DATADIR, "dbus-1", "system-services")),
        ServiceDir("/lib/dbus-1/system-services"),
    ]
