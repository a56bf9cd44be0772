"""The echo service: answers every method call with a method return that
carries the call's body (and its unix fds) back.

Run as its own process (``python -m bench.echo_service ADDRESS NAME``) so
it does not share an interpreter with the load generator. Prints
``READY <unique-name>`` once it owns NAME, then serves until the bus
closes the connection or it gets SIGTERM.
"""

import os
import signal
import struct
import sys

from . import wire
from .conn import Conn, recv_with_fds, request_name, send_fds, sendall_parts

REPLY_SERIAL_OFFSET = 20   # REPLY_SERIAL is the first header field: 16 + 4


class Echo:
    def __init__(self, address, name):
        self.conn = Conn(address, unix_fds=True)
        request_name(self.conn, name)
        self.conn.drain()
        self.templates = {}
        self.fd_queue = []

    def template(self, sender, signature, nfds):
        key = (sender, signature, nfds)
        t = self.templates.get(key)
        if t is None:
            t = wire.message(wire.METHOD_RETURN, reply_serial=0,
                             destination=sender, signature=signature,
                             body=b"", unix_fds=nfds)
            assert t[16] == wire.F_REPLY_SERIAL
            self.templates[key] = t
        return t

    def reply_for(self, frame):
        f = wire.header_fields(frame)
        body = memoryview(frame)[wire.body_offset(frame):]
        nfds = f.get(wire.F_UNIX_FDS, 0)
        t = bytearray(self.template(f.get(wire.F_SENDER, ""), f.get(wire.F_SIGNATURE, ""), nfds))
        self.conn.serial += 1
        struct.pack_into("<II", t, 4, len(body), self.conn.serial)
        struct.pack_into("<I", t, REPLY_SERIAL_OFFSET,
                              struct.unpack_from("<I", frame, 8)[0])
        fds = self.fd_queue[:nfds]
        del self.fd_queue[:nfds]
        return t, body, fds

    def serve(self):
        sock, reader = self.conn.sock, self.conn.reader
        sock.settimeout(None)
        for frame in self.conn.pending:
            reader.feed(frame)
        while True:
            data, fds = recv_with_fds(sock, 1 << 20)
            if not data:
                return
            self.fd_queue += fds
            reader.feed(data)
            out = bytearray()
            for frame in reader.frames():
                if frame[1] != wire.METHOD_CALL or frame[2] & wire.NO_REPLY_EXPECTED:
                    continue
                head, body, rfds = self.reply_for(frame)
                if rfds:
                    if out:
                        sock.sendall(out)
                        out = bytearray()
                    send_fds(sock, bytes(head) + body, rfds)
                    for fd in rfds:
                        os.close(fd)
                elif len(body) > 65536:
                    if out:
                        sock.sendall(out)
                        out = bytearray()
                    sendall_parts(sock, [head, body])
                else:
                    out += head
                    out += body
            if out:
                sock.sendall(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    address, name = argv[0], argv[1]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    echo = Echo(address, name)
    print("READY", echo.conn.unique_name, flush=True)
    try:
        echo.serve()
    except (ConnectionError, OSError):
        pass


if __name__ == "__main__":
    main()
