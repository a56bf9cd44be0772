"""ContainerInstance bookkeeping of connections still authenticating
(issue 11, hole 4), without sockets."""

from sandbus.containers.instance import ContainerInstance
from sandbus.core.peer import Credentials


class _Creator:
    creds = Credentials(uid=1000, pid=1)
    unique_name = ":1.1"


class _Conn:
    """Stands for an io connection: closing it reports back like the io
    layer does (Server.connection_closed -> connection_gone)."""

    def __init__(self, inst):
        self.inst = inst
        self.closed = None

    def close(self, reason=""):
        if self.closed is None:
            self.closed = reason
            self.inst.connection_gone(None, self)


def _instance(max_connections=4):
    inst = ContainerInstance(1, "com.example.App", "app", {}, _Creator(), {}, max_connections)
    inst.listening = True
    return inst


def _accept(inst):
    assert inst.admit_connection()
    conn = _Conn(inst)
    inst.track_pending(conn)
    return conn


def test_close_pending_closes_every_connection_still_authenticating():
    inst = _instance()
    removed = []
    inst.on_change = lambda: removed.append(inst.alive)
    a, b = _accept(inst), _accept(inst)
    inst.listening = False
    assert inst.alive  # the two pending ones keep it
    inst.close_pending("stopped")
    assert a.closed == b.closed == "stopped"
    assert inst.authenticating == 0 and not inst.pending and not inst.alive
    assert removed[-1] is False


def test_a_connection_that_finished_authenticating_is_not_pending():
    inst = _instance()
    a, b = _accept(inst), _accept(inst)
    # what ContainerManager.on_connect does when a's SASL completes
    inst.authenticating -= 1
    inst.pending.discard(a)
    inst.close_pending("stopped")
    assert a.closed is None and b.closed == "stopped"


def test_pending_connections_count_against_max_connections_and_give_back_their_slot():
    inst = _instance(max_connections=2)
    a = _accept(inst)
    _accept(inst)
    assert not inst.admit_connection()
    a.close("gone")
    assert inst.admit_connection()
