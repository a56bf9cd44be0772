"""Proxy.stop (proxy/main.py) gives back the proxied groups' sockets and
paths, served by the loop or still only listening."""

import asyncio
import os
import socket

from sandbus.proxy import cmdline
from sandbus.proxy.backend import ProxyGroup
from sandbus.proxy.listening import Listening
from sandbus.proxy.main import Proxy


def test_stop_removes_every_proxied_groups_socket(tmp_path):
    paths = [str(tmp_path / "served"), str(tmp_path / "waiting")]
    args = cmdline.parse([a for p in paths for a in ("unix:path=/nonexistent", p, "--filter")])
    proxy = Proxy(args)
    served, waiting = (Listening(g) for g in args.groups)
    proxy.loop = asyncio.new_event_loop()
    group = ProxyGroup(proxy.loop, served, "org.example.App")
    group.start()
    proxy.backends = [group]
    proxy.listening = [waiting]
    socks = [served.sock, waiting.sock]
    assert all(os.path.exists(p) for p in paths)
    proxy.stop()
    assert not any(os.path.exists(p) for p in paths)
    assert all(s.fileno() == -1 for s in socks)
    assert proxy.backends == [] and proxy.listening == [] and proxy.loop is None
    # nothing listens there any more
    c = socket.socket(socket.AF_UNIX)
    try:
        for p in paths:
            try:
                c.connect(p)
            except OSError:
                continue
            raise AssertionError(f"{p} still accepts")
    finally:
        c.close()
