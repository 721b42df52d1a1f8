"""The offline queue: one preallocated ring of encoded packets, bounded in messages and
bytes, ordered, drop policy counted, DUP set in place, no allocation after construction.
Same cases on both runtimes; the heap_lock case on the unix port."""

import pytest

import mpyrun
from iothub.errors import ConfigError
from iothub.outbox import Outbox

CASES = r"""
from iothub.outbox import Outbox
out = []


def put(q, pid, n, sent=-1):
    off = q.reserve(n)
    if off < 0:
        return -1
    for i in range(n):
        q.buf[off + i] = pid
    q.buf[off] = 0x32  # a PUBLISH QoS 1 first byte, so DUP can be seen
    q.commit(pid, off, n, sent)
    return off


def written(q, now):
    # what a reconnect writes: (first byte, pid byte, length) per packet, in order
    w = []
    n = q.redeliver(lambda buf, off, k: w.append([buf[off], buf[off + 1], k]), now)
    return [n, w]


def pids(q):
    # queued packet ids, oldest first (read from the ring's slots; holes skipped)
    slots = [4 * ((q._head + k) % q.size) for k in range(q._n)]  # 4 fields a slot, pid first
    return [q._q[i] for i in slots if q._q[i]]


# count limit, drop-oldest
q = Outbox(3, nbytes=100)
for pid in (1, 2, 3, 4):
    put(q, pid, 10)
out.append(pids(q))
out.append([q.dropped, len(q)])
out.append([q.ack(3), q.ack(3)])
out.append(pids(q))
# byte limit, drop-oldest: 100-byte ring, 40-byte packets -> two fit
b = Outbox(8, nbytes=100)
offs = [put(b, pid, 40) for pid in (1, 2, 3)]
out.append([offs, pids(b), b.dropped])
# wrap-around: ack the oldest, the next packet goes to the front again
b.ack(2)
out.append([put(b, 4, 40), pids(b)])
# the packets are stored where reserve() said, contiguous and intact
out.append([written(b, 0)[1], b.buf[1:40] == bytes([3]) * 39])
# out-of-order acknowledgement leaves a hole; space returns when the head goes
c = Outbox(4, "reject", nbytes=64)
for pid in (1, 2, 3):
    put(c, pid, 20)
c.ack(2)
out.append([pids(c), len(c), put(c, 9, 20)])
c.ack(1)
out.append([pids(c), put(c, 9, 20), pids(c)])
# reject policy: nothing queued is lost
r = Outbox(2, "reject", nbytes=100)
put(r, 1, 10)
put(r, 2, 10)
out.append([put(r, 3, 10), len(r), r.has(2), r.dropped])
r2 = Outbox(8, "reject", nbytes=100)
put(r2, 1, 60)
out.append(put(r2, 2, 60))
# larger than the whole ring: never queued, whatever the policy
out.append([Outbox(4, nbytes=64).reserve(65), q.reserve(1000)])
# send times and DUP set in place on redelivery of what was written before
s = Outbox(4, nbytes=64)
put(s, 5, 10)
put(s, 6, 10, 77)
out.append(s.oldest_sent())
out.append(written(s, 90))
out.append([s.oldest_sent(), written(s, 95)])
s.ack(5)
out.append(s.oldest_sent())
"""

EXPECTED = [
    [2, 3, 4],
    [1, 3],
    [True, False],
    [2, 4],
    [[0, 40, 0], [2, 3], 1],
    [40, [3, 4]],
    [[[0x32, 3, 40], [0x32, 4, 40]], True],
    [[1, 3], 2, -1],
    [[3], 0, [3, 9]],
    [-1, 2, True, 0],
    -1,
    [-1, -1],
    77,
    [1, [[0x32, 5, 10], [0x3A, 6, 10]]],
    [90, [2, [[0x3A, 5, 10], [0x3A, 6, 10]]]],
    95,
]


def run_cases():
    ns = {}
    exec(CASES, ns)
    return ns["out"]


def test_outbox_cpython():
    assert run_cases() == EXPECTED


def test_outbox_unix_port():
    got = mpyrun.run_json(CASES + "\nimport json\nprint(json.dumps(out))")
    assert got == EXPECTED


def test_outbox_rejects_bad_config():
    with pytest.raises(ConfigError, match="queue_policy"):
        Outbox(4, "drop-everything")
    with pytest.raises(ConfigError, match="queue_size"):
        Outbox(0)
    with pytest.raises(ConfigError, match="queue_bytes"):
        Outbox(4, nbytes=10)


HEAP_LOCKED = r"""
import json, micropython
from iothub.outbox import Outbox


def sink(buf, off, n):
    pass


def run(q):
    # locals only: a module-level loop would grow the globals dict under the lock
    step = "start"
    done = 0
    micropython.heap_lock()
    try:
        for i in range(1, 3001):
            pid = i & 0x7FFF or 1
            step = "reserve"
            off = q.reserve(37 + i % 50)
            step = "commit"
            q.commit(pid, off, 37 + i % 50, i)
            step = "has/oldest_sent"
            if not q.has(pid) or q.oldest_sent() is None:
                break
            if i % 3 == 0:
                step = "ack"
                q.ack(pid)
            if i % 500 == 0:
                step = "redeliver"
                q.redeliver(sink, i)
            done += 1
        step = "done"
    except MemoryError:
        pass
    micropython.heap_unlock()
    return step, done


q = Outbox(8, nbytes=512)
step, done = run(q)
print(json.dumps({"step": step, "done": done, "dropped": q.dropped, "queued": len(q)}))
"""


def test_outbox_allocates_nothing_after_construction():
    got = mpyrun.run_json(HEAP_LOCKED)
    assert got["step"] == "done", "allocated under heap_lock at: " + got["step"]
    assert got["done"] == 3000
    assert got["dropped"] > 0 and 0 < got["queued"] <= 8
