"""DBUS_COOKIE_SHA1, the parts without I/O (D-Bus specification,
"DBUS_COOKIE_SHA1"; constants as libdbus's dbus-keyring.c).

A keyring file ``~/.dbus-keyrings/CONTEXT`` holds lines
``ID CREATION_TIME COOKIE_HEX``. The server sends
``CONTEXT ID SERVER_CHALLENGE``; the client answers
``CLIENT_CHALLENGE SHA1_HEX`` where the hash is over
``SERVER_CHALLENGE:CLIENT_CHALLENGE:COOKIE``.
"""

import hashlib
import hmac
import secrets

DEFAULT_CONTEXT = "org_freedesktop_general"
NEW_KEY_TIMEOUT = 5 * 60  # a cookie older than this is not handed out
EXPIRE_KEYS_TIMEOUT = NEW_KEY_TIMEOUT + 2 * 60  # ... and dropped after this
MAX_TIME_TRAVEL = 5 * 60  # cookies from further in the future are dropped
MAX_KEYS_IN_FILE = 256
COOKIE_BYTES = 24


class CookieError(Exception):
    """The keyring cannot be used (permissions, lock, I/O, bad context)."""


def valid_context(context: str) -> bool:
    # The spec: no slashes, no dots at the start, no whitespace; libdbus
    # refuses '/', '\\', '.' and whitespace anywhere.
    return bool(context) and context.isascii() and not any(
        c in "/\\. \t\r\n" for c in context)


def parse_keyring(text: str, now: float) -> list:
    """Valid, unexpired cookies of a keyring file, as [(id, time, hex)].
    Broken lines and duplicate ids are skipped, as libdbus does."""
    keys = []
    seen = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        sid, stime, cookie = parts
        if not (sid.isdigit() and stime.lstrip("-").isdigit()):
            continue
        try:
            bytes.fromhex(cookie)
        except ValueError:
            continue
        cid, created = int(sid), int(stime)
        if cid in seen or cid >= 2 ** 31:
            continue
        if created - now > MAX_TIME_TRAVEL or now - created > EXPIRE_KEYS_TIMEOUT:
            continue
        seen.add(cid)
        keys.append((cid, created, cookie))
    return keys[-MAX_KEYS_IN_FILE:]


def format_keyring(keys) -> str:
    return "".join(f"{cid} {created} {cookie}\n" for cid, created, cookie in keys)


def recent_key(keys, now: float):
    """The newest cookie young enough to hand out, or None."""
    best = None
    for key in keys:
        if now - key[1] < NEW_KEY_TIMEOUT and (best is None or key[1] > best[1]):
            best = key
    return best


def new_key(keys, now: float):
    ids = {k[0] for k in keys}
    while True:
        cid = secrets.randbelow(2 ** 31)
        if cid not in ids:
            return (cid, int(now), secrets.token_hex(COOKIE_BYTES))


def format_challenge(context: str, cookie_id: int, challenge: str) -> bytes:
    return f"{context} {cookie_id} {challenge}".encode("ascii")


def response_hash(server_challenge: str, client_challenge: str, cookie: str) -> str:
    return hashlib.sha1(f"{server_challenge}:{client_challenge}:{cookie}".encode()).hexdigest()


def check_response(server_challenge: str, cookie: str, response: bytes) -> bool:
    """Is ``response`` (the client's decoded DATA) right for this challenge?"""
    try:
        text = response.decode("ascii")
    except UnicodeDecodeError:
        return False
    client_challenge, sep, digest = text.partition(" ")
    digest = digest.strip(" ")
    if not sep or not client_challenge or not digest:
        return False
    expected = response_hash(server_challenge, client_challenge, cookie)
    return hmac.compare_digest(expected.encode(), digest.encode())
