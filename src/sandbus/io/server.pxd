from sandbus.core.bus cimport Bus

cdef class Server:
    cdef public Bus bus
    cdef public object loop, guid, uid_allowed, allow_anonymous, listeners, connections
    cdef public object incomplete, _dirty, _flush_scheduled, dispatching, max_outgoing
    cdef public object max_outgoing_fds, max_pending_fds, pending_fd_timeout, max_message_size
    cdef public object auth_settings
    cpdef mark_dirty(self, conn)
    cpdef flush_dirty(self)
