"""The DBUS_COOKIE_SHA1 keyring on disk: ``~/.dbus-keyrings/CONTEXT``,
private to the user, written under ``CONTEXT.lock`` and replaced atomically."""

import os
import stat
import time

from ..wire.cookie_sha1 import (
    DEFAULT_CONTEXT, CookieError, format_keyring, new_key, parse_keyring, recent_key,
    valid_context,
)

LOCK_ATTEMPTS = 20
LOCK_WAIT = 0.025  # seconds between attempts; then the lock is taken as stale


def keyring_directory(home=None) -> str:
    if home is None:
        # libdbus honours $HOME for the current user, as does GLib.
        home = os.environ.get("HOME")
        if not home:
            import pwd
            home = pwd.getpwuid(os.getuid()).pw_dir
    return os.path.join(home, ".dbus-keyrings")


class Keyring:
    def __init__(self, directory=None, context: str = DEFAULT_CONTEXT, clock=time.time):
        if not valid_context(context):
            raise CookieError(f"invalid keyring context {context!r}")
        self.directory = directory or keyring_directory()
        self.context = context
        self.clock = clock

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.context)

    def _check_directory(self, create: bool) -> None:
        try:
            if create:
                try:
                    os.mkdir(self.directory, 0o700)
                except FileExistsError:
                    pass
            st = os.stat(self.directory)
        except OSError as e:
            raise CookieError(f"keyring directory {self.directory}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CookieError(f"{self.directory} is not a directory")
        if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CookieError(f"{self.directory} directory (owned by user {st.st_uid}) "
                              "is not private to the user")

    def _read(self, now) -> list:
        try:
            with open(self.path, encoding="ascii", errors="replace") as f:
                return parse_keyring(f.read(), now)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise CookieError(f"cannot read {self.path}: {e.strerror}") from None

    def best_cookie(self):
        """(context, id, cookie hex) of a cookie young enough to use, adding
        (and writing) a new one if there is none."""
        self._check_directory(create=True)
        now = self.clock()
        key = recent_key(self._read(now), now)
        if key is None:
            key = self._add_key()
        return self.context, key[0], key[2]

    def _add_key(self):
        lock = self.path + ".lock"
        self._lock(lock)
        try:
            now = self.clock()
            keys = self._read(now)  # re-read: someone may have written meanwhile
            key = recent_key(keys, now)
            if key is not None:
                return key
            key = new_key(keys, now)
            keys.append(key)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(format_keyring(keys[-256:]))
                os.rename(tmp, self.path)
            except OSError as e:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise CookieError(f"cannot write {self.path}: {e.strerror}") from None
            return key
        finally:
            try:
                os.unlink(lock)
            except OSError:
                pass

    def _lock(self, lock: str) -> None:
        for attempt in range(LOCK_ATTEMPTS + 1):
            try:
                os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                return
            except FileExistsError:
                if attempt == LOCK_ATTEMPTS:
                    # libdbus also assumes a lock that outlives its patience is stale.
                    try:
                        os.unlink(lock)
                    except OSError:
                        pass
                    try:
                        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                        return
                    except OSError as e:
                        raise CookieError(f"cannot lock {lock}: {e.strerror}") from None
                time.sleep(LOCK_WAIT)
            except OSError as e:
                raise CookieError(f"cannot lock {lock}: {e.strerror}") from None
