from sandbus.wire.message cimport Message
from sandbus.core.peer cimport Peer

cdef class Bus:
    cdef public object settings, limits, peers, connections, registry, matches, eavesdrop_rules
    cdef public object monitors, replies, driver_peer, _next_peer_id, _next_unique, _serial, release_fds
    cdef public object mediation, driver, call_later
    cpdef receive(self, Peer peer, data)
    cpdef route(self, Peer sender, Message msg)
    cpdef _owner_name(self, name)
    cpdef unicast(self, Peer sender, Peer target, Message msg, bint capture=*)
    cpdef _send(self, sender, Peer target, Message msg)
