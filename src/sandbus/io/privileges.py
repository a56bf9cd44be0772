"""The system bus's <user>: started as root, the daemon binds its sockets
and writes its pidfile, then becomes that user for good (dbus-daemon does
the same, bus/bus.c).

A root process that changes all of its uids to a non-zero one loses every
capability (capabilities(7), unless SECBIT_KEEP_CAPS, which nothing here
sets), so after `drop_to` the bus keeps nothing of root: activation goes
through the setuid <servicehelper> or systemd, which need none."""

import os
import pwd


class PrivilegeError(Exception):
    pass


def daemon_user(name):
    """The passwd entry the bus must become, or None when there is nothing
    to change: no <user>, the bus already runs as it, or it is not root
    (dbus-daemon too runs the stock system.conf as whoever started it
    then, which is how one tries a system bus without root)."""
    if not name:
        return None
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise PrivilegeError(f"Could not get UID and GID for username \"{name}\"") from None
    if os.geteuid() != 0 or (os.getuid() == pw.pw_uid and os.geteuid() == pw.pw_uid):
        return None
    return pw


def drop_to(pw) -> None:
    """Become pw for good: no supplementary groups (root's would stay
    otherwise; dbus-daemon drops them all too), its gid, then its uid, in
    that order: after setuid no right is left to change groups.  A failure
    is fatal to the caller: a half-dropped bus must not serve."""
    try:
        os.setgroups([])
    except OSError as e:
        raise PrivilegeError(f"Failed to drop supplementary groups: {e.strerror}") from None
    try:
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    except OSError as e:
        raise PrivilegeError(f"Failed to set GID to {pw.pw_gid}: {e.strerror}") from None
    try:
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    except OSError as e:
        raise PrivilegeError(f"Failed to set UID to {pw.pw_uid}: {e.strerror}") from None
    # Proof, not hope: no way back to root may be left.
    if pw.pw_uid != 0:
        try:
            os.setresuid(0, 0, 0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError("could regain root after dropping privileges")
