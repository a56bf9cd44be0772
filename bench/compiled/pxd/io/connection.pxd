from sandbus.io.server cimport Server
from sandbus.core.peer cimport Peer

cdef class Connection:
    cdef public Server server
    cdef public Peer peer
    cdef public object sock, fd, listener, sasl, creds, rbuf, wqueue
    cdef public object queued_bytes, closed, auth_timer, reading, writing, dirty
    cdef public object big, big_fill, queued_fds, fd_timer, early_fds
    cpdef _frames(self, data)
    cpdef _deliver(self, frame)
    cpdef flush(self)
