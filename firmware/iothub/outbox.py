# Bounded queue of QoS 1 messages not yet acknowledged by the hub. Pure: no I/O, no clock.
#
# The messages live as encoded PUBLISH packets in ONE ring buffer allocated at construction
# (`nbytes`), with their packet id, offset, length and send time in preallocated arrays of
# `size` slots: queueing, acknowledging, dropping and redelivering allocate nothing, and a
# long outage cannot scatter message copies over the heap (on a Pico W that fragmentation
# left the next TLS handshake without a contiguous block).
#
# Each packet is stored contiguously, so the adapter writes it with one call (one TLS
# record). Limits, both counted: `size` messages and `nbytes` bytes. When a new packet does
# not fit, the policy decides:
#   "drop-oldest" (default): the oldest messages are dropped until it fits; `dropped` counts them
#   "reject": the new message is refused, nothing already queued is lost
# A packet larger than the whole ring is never queued (the adapter decides what to do).
from array import array

from .errors import ConfigError

POLICIES = ("drop-oldest", "reject")


class Outbox:
    def __init__(self, size=16, policy="drop-oldest", nbytes=4096):
        if not isinstance(size, int) or size < 1:
            raise ConfigError("queue_size must be an int >= 1, got %r" % (size,))
        if not isinstance(nbytes, int) or nbytes < 64:
            raise ConfigError("queue_bytes must be an int >= 64, got %r" % (nbytes,))
        if policy not in POLICIES:
            raise ConfigError(
                "queue_policy must be one of %s, got %r" % (", ".join(POLICIES), policy)
            )
        self.size = size
        self.policy = policy
        self.dropped = 0
        self.buf = bytearray(nbytes)
        z = [0] * size
        self._pid = array("i", z)  # 0: acknowledged (a hole until the older ones go)
        self._off = array("i", z)
        self._len = array("i", z)
        self._sent = array("i", z)  # tick count of the last write, -1 never written
        self._head = 0  # slot of the oldest entry
        self._n = 0  # entries, holes included
        self._live = 0  # entries not yet acknowledged
        self._tail = 0  # byte offset where the next packet goes

    def __len__(self):
        return self._live

    def _pop(self):
        h = self._head
        if self._pid[h]:
            self._live -= 1
        self._head = (h + 1) % self.size
        self._n -= 1
        if not self._n:
            self._tail = 0

    def _gc(self):
        while self._n and not self._pid[self._head]:
            self._pop()

    def _place(self, need):
        # Byte offset for `need` contiguous bytes, or -1. Used bytes run from the head's
        # offset to _tail, possibly wrapped past the end of the buffer.
        if not self._n:
            return 0 if need <= len(self.buf) else -1
        if self._n >= self.size:
            return -1
        start = self._off[self._head]
        tail = self._tail
        if tail > start:
            if tail + need <= len(self.buf):
                return tail
            return 0 if need <= start else -1
        return tail if tail + need <= start else -1

    def reserve(self, need):
        """Offset in .buf where a packet of `need` bytes may be written, or -1 when the
        policy refuses it (or it is larger than the ring). Drop-oldest drops here."""
        if need > len(self.buf):
            return -1
        self._gc()
        off = self._place(need)
        while off < 0:
            if self.policy == "reject" or not self._n:
                return -1
            self._pop()
            self.dropped += 1
            self._gc()
            off = self._place(need)
        return off

    def commit(self, pid, off, n, sent=-1):
        """Queue the packet of n bytes that the caller wrote at off (from reserve);
        sent: the tick count it is written at, -1 when it waits for a connection."""
        s = (self._head + self._n) % self.size
        self._pid[s] = pid
        self._off[s] = off
        self._len[s] = n
        self._sent[s] = sent
        self._n += 1
        self._live += 1
        self._tail = off + n

    def _find(self, pid):
        for k in range(self._n):
            s = (self._head + k) % self.size
            if self._pid[s] == pid:
                return s
        return -1

    def has(self, pid):
        return self._find(pid) >= 0

    def ack(self, pid):
        """Forget the message acknowledged by PUBACK pid. True if it was queued."""
        s = self._find(pid)
        if s < 0:
            return False
        self._pid[s] = 0
        self._live -= 1
        self._gc()
        return True

    def redeliver(self, write, now):
        """write(buf, off, n) every unacknowledged packet in order, the DUP flag set in
        place on those written before. Returns how many were redeliveries."""
        dup = 0
        buf = self.buf
        for k in range(self._n):
            s = (self._head + k) % self.size
            if self._pid[s]:
                if self._sent[s] != -1:
                    buf[self._off[s]] |= 0x08
                    dup += 1
                self._sent[s] = now
                write(buf, self._off[s], self._len[s])
        return dup

    def oldest_sent(self):
        """Send time of the oldest written, unacknowledged entry, or None."""
        for k in range(self._n):
            s = (self._head + k) % self.size
            if self._pid[s] and self._sent[s] != -1:
                return self._sent[s]
        return None
