cdef class Message:
    cdef public object data, endian, type, flags, body_len, serial, path, interface, member
    cdef public object error_name, reply_serial, destination, sender, signature, unix_fds
    cdef public object fields_len, body_start, _kept_fields, fds, _forwarded, args_cache
    cpdef forwarded(self, sender_field, instance_field=*)
    cpdef forwarded_parts(self, sender_field)
