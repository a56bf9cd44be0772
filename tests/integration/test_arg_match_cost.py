"""argN match rules read only the leading arguments they need (issue 11,
hole 1): a broadcast with a huge array after arg0 is matched on arg0 without
the array being unmarshalled, so the bus does not build millions of values
for it, and everyone else is answered as usual meanwhile."""

import struct
import threading

from itutil import BUS_NAME, BUS_PATH, Client, hello_bytes, raw_auth, raw_connect, raw_message
from test_bad_input import recv_messages

# 16 MiB of short strings: 2 million elements
COUNT = 2_000_000


def _big_as_signal(serial: int) -> bytes:
    head = struct.pack("<I", 1) + b"x\0"
    head += b"\0" * (-len(head) % 4)
    element = struct.pack("<I", 3) + b"abc\0"  # 8 bytes, stays 4-aligned
    body = head + struct.pack("<I", len(element) * COUNT) + element * COUNT
    return raw_message(4, fields=[(1, "o", "/big"), (2, "s", "org.example.Big"), (3, "s", "Huge"),
                                  (8, "g", "sas")], body=body, serial=serial)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_arg0_rule_on_a_huge_broadcast(bus):
    frame = _big_as_signal(2)
    with Client(bus.address) as matcher, Client(bus.address) as other, \
            Client(bus.address) as unrelated:
        matcher.add_match("arg0='x',member='Huge'")
        unrelated.add_match("arg0='y',member='Huge'")  # looks at arg0 too, and does not match
        before = _peak_rss_kib(bus.pid)
        sender = raw_connect(bus)
        raw_auth(sender)
        sender.sendall(hello_bytes())
        recv_messages(sender, 2)
        t = threading.Thread(target=sender.sendall, args=(frame,))
        t.start()
        # another client keeps being answered while the frame is routed
        for _ in range(20):
            assert other.call(BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Peer", "Ping") == ()
        t.join()
        m = matcher.wait_signal("Huge", timeout=60)
        assert m.body[0] == "x" and len(m.body[1]) == COUNT
        unrelated.assert_no(lambda m: m.header.fields.get(3) == "Huge", what="the huge signal")
        growth_mib = (_peak_rss_kib(bus.pid) - before) / 1024
        sender.close()
    # Receiving, framing and forwarding hold a few copies of the 16 MiB frame;
    # unmarshalling the array would add ~150 MiB of Python strings on top.
    assert growth_mib < 6 * len(frame) / 2**20, f"daemon peak RSS grew by {growth_mib:.0f} MiB"
