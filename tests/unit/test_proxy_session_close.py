"""Session.close (proxy/backend.py) gives back everything a session holds,
without sockets to a bus: a ClientFilter still waiting for the picture of
the bus, holding a client's message with an fd."""

import os
from types import SimpleNamespace

from sandbus.proxy.backend import Session
from sandbus.proxy.filter import SYNCING, ClientFilter
from sandbus.wire.framer import Framer
from sandbus.wire.message import METHOD_CALL, Message, build_message

from test_proxy_filter import instance


class _Closed:
    def close(self):
        self.closed = True


def test_close_closes_the_fds_of_held_messages():
    f = ClientFilter(instance())
    f.state = SYNCING  # Hello went up; the picture of the bus is not in yet
    r, w = os.pipe()
    f.from_client(Message(build_message(METHOD_CALL, 2, path="/", interface="a.b", member="C",
                                        destination="org.example.Other", unix_fds=1), [r]))
    assert [m.fds for m in f.held] == [[r]]
    group = SimpleNamespace(sessions=set(), group=SimpleNamespace(path="/sock"),
                            instance=SimpleNamespace(remove_member=lambda name: None))
    s = Session.__new__(Session)
    s.__dict__.update(closed=False, group=group, filter=f, waiting=[], client=_Closed(), upstream=_Closed(),
                      client_framer=Framer(sasl="server"))
    try:
        s.close("test")
        try:
            os.fstat(r)
        except OSError:
            pass
        else:
            raise AssertionError("the held message's fd is still open")
        assert f.held == []
    finally:
        os.close(w)
