# Bounded queue of QoS 1 messages not yet acknowledged by the hub. Pure: no I/O, no clock.
#
# Entries are [pid, topic, payload, sent_at]; sent_at is None until the message was written,
# then the adapter's tick count (it turns the DUP flag on at retransmission, and lets the
# adapter spot a PUBACK that never comes). No clock is read here.
# The payload is referenced, not copied. When full, the policy decides:
#   "drop-oldest" (default): the oldest unacknowledged message is dropped, `dropped` counts it
#   "reject": the new message is refused (send() raises), nothing already queued is lost

POLICIES = ("drop-oldest", "reject")


class Outbox:
    def __init__(self, size=16, policy="drop-oldest"):
        if size < 1:
            raise ValueError("queue size must be at least 1")
        if policy not in POLICIES:
            raise ValueError(
                "queue policy must be one of %s, got %r" % (", ".join(POLICIES), policy)
            )
        self.size = size
        self.policy = policy
        self.dropped = 0
        self._q = []

    def __len__(self):
        return len(self._q)

    def add(self, pid, topic, payload):
        """Queue a message; returns its entry, or None when refused by the policy."""
        if len(self._q) >= self.size:
            if self.policy == "reject":
                return None
            self._q.pop(0)
            self.dropped += 1
        entry = [pid, topic, payload, None]
        self._q.append(entry)
        return entry

    def has(self, pid):
        for e in self._q:
            if e[0] == pid:
                return True
        return False

    def ack(self, pid):
        """Remove the entry acknowledged by PUBACK pid. Returns True if it was queued."""
        q = self._q
        for i in range(len(q)):
            if q[i][0] == pid:
                q.pop(i)
                return True
        return False

    def entries(self):
        return list(self._q)

    def oldest_sent(self):
        """sent_at of the oldest written, unacknowledged entry, or None."""
        for e in self._q:
            if e[3] is not None:
                return e[3]
        return None
