"""Reply tracking: which calls a peer may still answer, the NoReply errors
the bus sends when a callee leaves or times out, and the bookkeeping that
must vanish when a caller leaves first (docs/architecture.md).

A caller's container instance (``peer.container``, opaque to core
otherwise) counts the calls all its connections await in its own
``pending_calls``, kept here beside theirs: the instance's quota
(containers/quotas.py) reads one number instead of summing its connections
on every call.

A callee's ``expected_replies`` maps (caller, serial) to its timeout timer
(True when there is none); the caller's ``calls_out`` holds the callees it
waits for, so either side's departure finds the entries in time linear in
that peer's own calls."""

from . import errors

CALLEE_LEFT = "Message recipient disconnected from message bus without replying"
TIMED_OUT = "Message did not receive a reply (timeout by message bus)"


class ReplyTracker:
    __slots__ = ("bus",)

    def __init__(self, bus):
        self.bus = bus

    def expect(self, caller, callee, serial: int) -> None:
        """caller's call (serial) was delivered to callee: one reply may pass."""
        bus = self.bus
        timeout = bus.limits.reply_timeout
        callee.expected_replies[(caller, serial)] = True if timeout < 0 or bus.call_later is None \
            else bus.call_later(timeout / 1000.0, self._timed_out, callee, caller, serial)
        calls_out = caller.calls_out
        calls_out[callee] = calls_out.get(callee, 0) + 1
        caller.pending_calls += 1
        group = caller.container
        if group is not None:
            group.pending_calls += 1

    def take(self, callee, caller, reply_serial: int) -> bool:
        """A reply from callee to caller: True (and forgotten) if it was owed."""
        timer = callee.expected_replies.pop((caller, reply_serial), None)
        if timer is None:
            return False
        if timer is not True:
            timer.cancel()
        # _forget, inlined: this runs for every reply
        caller.pending_calls -= 1
        group = caller.container
        if group is not None:
            group.pending_calls -= 1
        calls_out = caller.calls_out
        n = calls_out[callee] - 1
        if n:
            calls_out[callee] = n
        else:
            del calls_out[callee]
        return True

    def _forget(self, caller, callee) -> None:
        caller.pending_calls -= 1
        group = caller.container
        if group is not None:
            group.pending_calls -= 1
        calls_out = caller.calls_out
        n = calls_out[callee] - 1
        if n:
            calls_out[callee] = n
        else:
            del calls_out[callee]

    def callee_left(self, callee) -> None:
        """Calls callee never answered: their callers get NoReply."""
        expected = callee.expected_replies
        callee.expected_replies = {}
        bus = self.bus
        for (caller, serial), timer in expected.items():
            if timer is not True:
                timer.cancel()
            self._forget(caller, callee)
            if not caller.closed:
                bus.send_error_to(caller, serial, errors.NO_REPLY, CALLEE_LEFT)

    def caller_left(self, caller) -> None:
        """caller is gone: no callee may answer it any more, and the entries
        must not stay until each callee answers (if it ever does)."""
        calls_out = caller.calls_out
        caller.calls_out = {}
        group = caller.container
        if group is not None:
            group.pending_calls -= caller.pending_calls
        caller.pending_calls = 0
        for callee in calls_out:
            expected = callee.expected_replies
            for key in [k for k in expected if k[0] is caller]:
                timer = expected.pop(key)
                if timer is not True:
                    timer.cancel()

    def _timed_out(self, callee, caller, serial: int) -> None:
        if callee.expected_replies.pop((caller, serial), None) is None:
            return
        self._forget(caller, callee)
        if not caller.closed:
            self.bus.send_error_to(caller, serial, errors.NO_REPLY, TIMED_OUT)
