"""alink.ALink, the asyncio client's non-blocking link, at the seam with the socket: what the
socket does not take is kept and sent in order, later packets queue behind it, nothing is
interleaved, and failures close the link with the errors the client expects. A tiny fake
socket and a stand-in for asyncio's I/O queue; runs on the unix port."""

import mpyrun

CASES = r"""
import json
import iothub.alink as al
from iothub.errors import ConnectionLost

class Queue:  # stands in for asyncio's I/O queue: records what the link waited for
    def __init__(self):
        self.waits = []
    def queue_write(self, s):
        self.waits.append("w")
    def queue_read(self, s):
        self.waits.append("r")

class Sock:
    # takes at most what `plan` allows per write call (None: would block), records the stream
    def __init__(self, plan):
        self.plan = plan
        self.stream = bytearray()
        self.closed = False
    def write(self, buf, off, n):
        k = self.plan.pop(0) if self.plan else n
        if k is None:
            return None
        if k == "reset":
            raise OSError(104)
        k = min(k, n)
        self.stream += buf[off : off + k]
        return k
    def close(self):
        self.closed = True

def link(plan):
    l = al.ALink()
    l.sock = Sock(plan)
    l.raw = l.sock
    return l

def run(gen):  # drive drain() as the loop would, answering every wait at once
    try:
        while True:
            next(gen)
    except StopIteration:
        pass

q = al._ioq = Queue()
out = {}

# the socket takes 4 of A's 10 bytes, then would block: the rest is pending; B queues
# behind it, the socket is not even asked
l = link([4, None])
l.write(b"AAAAAAAAAA")
l.write(bytearray(b"xxBBBBByy"), 2, 5)
out["pending"] = [bytes(l.pending), bytes(l.sock.stream)]
# drain: 3 bytes, then "would block" (a wait for writing), then the rest
l.sock.plan = [3, None]
run(l.drain())
out["drained"] = [bytes(l.sock.stream), l.pending, q.waits, l.bytes_out, l.writes]

# a write while nothing is pending goes straight out, in one call
q.waits = []
l2 = link([])
l2.write(b"CCCC")
out["direct"] = [bytes(l2.sock.stream), l2.pending, q.waits]

# a reset while writing: ConnectionLost, the link is closed (sock and pending dropped)
l3 = link(["reset"])
l3._hs = None
try:
    l3.write(b"DDDD")
    out["reset"] = "no error"
except ConnectionLost as e:
    out["reset"] = [str(e), l3.is_open, l3.pending]

# a reset while draining: the same
l4 = link([2, None, "reset"])
l4.write(b"EEEE")
try:
    run(l4.drain())
    out["drain_reset"] = "no error"
except ConnectionLost as e:
    out["drain_reset"] = [str(e).split(":")[0], l4.is_open]

# writing on a closed link
try:
    l4.write(b"F")
except ConnectionLost as e:
    out["closed"] = str(e)
print(json.dumps(out))
"""


def test_pending_bytes_keep_the_stream_in_order():
    out = mpyrun.run_json(CASES, timeout=60)
    assert out["pending"] == ["AAAAAABBBBB", "AAAA"]
    stream, pending, waits, bytes_out, writes = out["drained"]
    assert stream == "AAAAAAAAAABBBBB" and pending is None
    assert waits == ["w"] and bytes_out == 15 and writes == 2
    assert out["direct"] == ["CCCC", None, []]
    msg, is_open, pending = out["reset"]
    assert msg.startswith("write failed") and is_open is False and pending is None
    assert out["drain_reset"] == ["write failed", False]
    assert out["closed"] == "not connected"
