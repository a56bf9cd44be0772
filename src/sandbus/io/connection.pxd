from sandbus.io.server cimport Server
from sandbus.core.peer cimport Peer

cdef class Connection:
    cdef public Server server
    cdef public Peer peer
    cdef public object sock, fd, listener, sasl, creds, framer, wqueue
    cdef public object queued_bytes, closed, auth_timer, reading, writing, dirty
    cdef public object queued_fds, fd_timer, budget, backlog
    cpdef _frames(self, data, fds=*)
    cpdef _deliver(self, frame)
    cpdef flush(self)
    cpdef send_parts(self, head, body, fds=*)
