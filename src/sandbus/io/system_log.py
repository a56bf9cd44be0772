"""The system log for the daemon: systemd's journal (native protocol) when
its socket exists, else syslog on /dev/log; standard library only."""

import logging
import os
import socket
import struct

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
             (logging.INFO, 6), (logging.DEBUG, 7))


def _priority(levelno: int) -> int:
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7


class SystemLogHandler(logging.Handler):
    """The journal's native protocol when its socket exists, else syslog on
    /dev/log (RFC 3164 style, facility daemon), else nothing (``available``
    is false and the caller keeps stderr)."""

    def __init__(self, ident: str = "sandbus-daemon", journal: str = JOURNAL_SOCKET,
                 syslog: str = SYSLOG_SOCKET):
        super().__init__()
        self.ident = ident
        self.kind = self.path = None
        if os.path.exists(journal):
            self.kind, self.path = "journal", journal
        elif os.path.exists(syslog):
            self.kind, self.path = "syslog", syslog
        self.sock = None
        if self.kind:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def available(self) -> bool:
        return self.sock is not None

    def emit(self, record) -> None:
        if self.sock is None:
            return
        try:
            text = self.format(record)
            prio = _priority(record.levelno)
            if self.kind == "journal":
                data = journal_datagram({"MESSAGE": text, "PRIORITY": str(prio),
                                         "SYSLOG_IDENTIFIER": self.ident,
                                         "SYSLOG_PID": str(os.getpid())})
            else:
                data = f"<{3 * 8 + prio}>{self.ident}[{os.getpid()}]: {text}".encode(
                    "utf-8", "replace")
            self.sock.sendto(data, self.path)
        except OSError:
            pass  # a full or absent log must never take the bus down
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().close()


def journal_datagram(fields: dict) -> bytes:
    """systemd's native journal protocol: KEY=value lines, or for values
    with a newline KEY, newline, 64-bit LE length, value, newline."""
    out = bytearray()
    for key, value in fields.items():
        raw = value.encode("utf-8", "replace")
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)
