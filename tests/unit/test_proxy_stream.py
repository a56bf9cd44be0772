"""proxy/stream.py's back-pressure on a real socket pair: a stream with
own_limit stops being read while its peer leaves more than that unread,
and is read again once its peer has read it all."""

import asyncio
import socket

from sandbus.proxy.stream import Stream


def test_a_peer_that_does_not_read_is_not_read_until_it_does():
    loop = asyncio.new_event_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    got = []
    stream = None

    def answer(data, fds):
        # every byte read is answered with four (the proxy's own errors
        # are larger than the calls they answer)
        got.append(len(data))
        stream.send(b"e" * (4 * len(data)))

    stream = Stream(loop, ours, answer, lambda reason: None, own_limit=256 * 1024)

    def pump(seconds=0.2):
        loop.run_until_complete(asyncio.sleep(seconds))

    try:
        written = 0
        while written < 64 * 1024 * 1024:
            try:
                written += peer.send(b"c" * 4096)
            except BlockingIOError:
                pump()
                try:
                    written += peer.send(b"c" * 4096)
                except BlockingIOError:
                    break
        # not read past the limit (and what one read answers)
        assert not stream.reading
        assert stream.queued <= 256 * 1024 + 4 * 65536
        assert sum(got) < 4 * 1024 * 1024
        # the peer reads everything: the stream is read again and answers all
        answered = 0
        for _ in range(2000):
            try:
                answered += len(peer.recv(1 << 20))
            except BlockingIOError:
                pump(0.01)
            if answered == 4 * written:
                break
        assert answered == 4 * written and sum(got) == written
        assert stream.reading and stream.queued == 0
    finally:
        stream.close()
        peer.close()
        loop.close()


def test_without_own_limit_only_the_partner_pauses_it():
    loop = asyncio.new_event_loop()
    ours, peer = socket.socketpair()
    sink, drain = socket.socketpair()
    peer.setblocking(False)
    stream = Stream(loop, ours, lambda d, f: other.send(d), lambda reason: None)
    other = Stream(loop, sink, lambda d, f: None, lambda reason: None)
    stream.partner, other.partner = other, stream
    try:
        stream.send(b"x" * (8 * 1024 * 1024))  # its own queue, unread by peer
        assert stream.queued > 4 * 1024 * 1024
        peer.send(b"y" * 1000)
        loop.run_until_complete(asyncio.sleep(0.1))
        # read and forwarded all the same: only a full partner pauses it
        assert stream.reading and drain.recv(4096) == b"y" * 1000
    finally:
        stream.close()
        other.close()
        peer.close()
        drain.close()
        loop.close()
