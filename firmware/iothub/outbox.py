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
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from array import array

from .errors import explained

# Fields of slot s in the one array _q: _q[4 * s + field].
_PID = const(0)  # packet id, 0: acknowledged (a hole until the older ones go)
_OFF = const(1)  # offset of the packet in .buf
_LEN = const(2)  # its length
_SENT = const(3)  # tick count of its last write, -1 never written


class Outbox:
    def __init__(self, size=16, policy="drop-oldest", nbytes=4096):
        if (
            not isinstance(size, int)
            or size < 1
            or not isinstance(nbytes, int)
            or nbytes < 64
            or (policy != "drop-oldest" and policy != "reject")
        ):
            # Which one, in words: loaded for this one message (the texts are not resident).
            raise explained("reports", "error", 0, (size, policy, nbytes))
        self.size = size
        self.policy = policy
        self.dropped = 0
        self.buf = bytearray(nbytes)
        self._q = array("i", bytes(16 * size))  # 4 int32 fields a slot, zeroed
        self._head = 0  # slot of the oldest entry
        self._n = 0  # entries, holes included
        self._live = 0  # entries not yet acknowledged
        self._tail = 0  # byte offset where the next packet goes

    def __len__(self):
        return self._live

    def _gc(self, drop=False):
        # Forget acknowledged entries at the head; with drop, the oldest entry first.
        q = self._q
        while self._n and (drop or not q[4 * self._head]):
            if q[4 * self._head]:
                self._live -= 1
            self._head = (self._head + 1) % self.size
            self._n -= 1
            drop = False
        if not self._n:
            self._tail = 0

    def _place(self, need):
        # Byte offset for `need` contiguous bytes, or -1. Used bytes run from the head's
        # offset to _tail, possibly wrapped past the end of the buffer.
        if not self._n:
            return 0 if need <= len(self.buf) else -1
        if self._n >= self.size:
            return -1
        start = self._q[4 * self._head + _OFF]
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
            self._gc(True)
            self.dropped += 1
            off = self._place(need)
        return off

    def commit(self, pid, off, n, sent=-1):
        """Queue the packet of n bytes that the caller wrote at off (from reserve);
        sent: the tick count it is written at, -1 when it waits for a connection."""
        i = 4 * ((self._head + self._n) % self.size)
        q = self._q
        q[i] = pid
        q[i + _OFF] = off
        q[i + _LEN] = n
        q[i + _SENT] = sent
        self._n += 1
        self._live += 1
        self._tail = off + n

    def has(self, pid):
        return self.ack(pid, False)

    def ack(self, pid, forget=True):
        """Forget the message acknowledged by PUBACK pid. True if it was queued (with
        forget=False: only whether it is)."""
        q = self._q
        for k in range(self._n):
            i = 4 * ((self._head + k) % self.size)
            if q[i] == pid:
                if forget:
                    q[i] = 0
                    self._live -= 1
                    self._gc()
                return True
        return False

    def redeliver(self, write, now):
        """write(buf, off, n) every unacknowledged packet in order, the DUP flag set in
        place on those written before. Returns how many were redeliveries."""
        dup = 0
        buf = self.buf
        q = self._q
        for k in range(self._n):
            i = 4 * ((self._head + k) % self.size)
            if q[i]:
                if q[i + _SENT] != -1:
                    buf[q[i + _OFF]] |= 0x08
                    dup += 1
                q[i + _SENT] = now
                write(buf, q[i + _OFF], q[i + _LEN])
        return dup

    def oldest_sent(self):
        """Send time of the oldest written, unacknowledged entry, or None."""
        q = self._q
        for k in range(self._n):
            i = 4 * ((self._head + k) % self.size)
            if q[i] and q[i + _SENT] != -1:
                return q[i + _SENT]
        return None
