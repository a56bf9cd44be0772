cdef class Peer:
    cdef public object id, unique_name, creds, unix_fds, sink, names, queued, rules
    cdef public object expected_replies, calls_out, pending_calls, is_monitor, monitor_rules
    cdef public object sender_fields, container, instance_field, wants_instance_header, incoming_fds
    cdef public object closed, policy, send_policy, receive_policy, restricted, replies_restricted, listener
    cdef public object extra_credentials, machine_id
    cdef object __weakref__
