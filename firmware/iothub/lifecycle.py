# The connection lifecycle as a pure state machine: no sockets, no clock reads (the caller
# passes `now`, a ticks_ms value), no I/O. Given the state and the time, next() says what to
# do; the adapters (the blocking DeviceClient, iothub.aio's DeviceClient) do it and report
# back what happened through iothub.transitions. docs/lifecycle.md lists the rules;
# host_tests run them as table-driven cases on CPython and on the unix port.
#
# Split for RAM: this module (the decisions, asked on every turn of the loop) stays loaded;
# the transitions run at connect, loss and close only and load with the connection code.
# next(now, oldest) returns one action and sets self.wait (ms) for WAIT and self.why (text)
# for DEAD and STOP. It allocates nothing on the connected path (called on every turn of a
# send's wait). The adapter keeps two fields current itself: last_tx (set on every write)
# and ping_at (set when it writes a PINGREQ, None on the PINGRESP).

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .clock import ticks_diff

# Actions of next() and keepalive(), private constants (inlined, no names kept: every name
# a loaded module adds is interned for good, docs/protocol.md 6.3); the adapters repeat the
# numbers they act on.
_WAIT = const(0)  # nothing due: read (or sleep, when not connected) up to self.wait ms
_CONNECT = const(1)  # open a connection now
_PING = const(2)  # send PINGREQ and set ping_at
_DEAD = const(3)  # drop the link as dead (self.why), then transitions.lost(lc, now)
_RENEW = const(4)  # reconnect with a fresh SAS token: transitions.renewing(), then connect
_RESYNC = const(5)  # fetch the twin again: transitions.resync_done(lc, now, ok)
_STOP = const(6)  # nothing happens until the application acts (self.why)

# states (on_connection_state's values)
CONNECTED = "connected"
DISCONNECTED = "disconnected"
RETRYING = "retrying"
AUTH_FAILED = "auth_failed"

_TICKS_SPAN = const(0x1FFFFFFF)  # longest span (ms) ticks_diff measures on every port


class Lifecycle:
    def __init__(self, keepalive_s, timeout_ms, auto_reconnect=True, backoff=None):
        self.keepalive_ms = keepalive_s * 1000
        self.timeout_ms = timeout_ms  # a PUBACK later than this: dead link
        self.auto = auto_reconnect
        self.backoff = backoff  # next_delay_ms()/reset(); a Backoff() at the first failure
        self.state = DISCONNECTED
        self.closed = False  # disconnect() by the application
        self.retry_at = None  # when the next connection attempt is due (None: now)
        self.renew_at = None  # when the SAS token is due for renewal (None: X.509)
        self.resync_at = None  # when the twin is to be fetched again (None: not due)
        self.last_tx = 0  # when the last packet was written
        self.ping_at = None  # when the unanswered PINGREQ was sent
        self.wait = 0
        # self.why is made by the first DEAD or STOP (read only after one): a client that
        # never fails keeps 12 fields, one map size step less (96 B on a 64-bit port).

    def keepalive(self, now):
        """The link's own rule (MQTT keepalive): PING when nothing was written for a
        keepalive period, DEAD when a PINGREQ got no answer within half of one, else WAIT
        (self.wait: ms until one of them is due)."""
        ka = self.keepalive_ms
        if self.ping_at is not None:
            waited = ticks_diff(now, self.ping_at)
            if waited > ka // 2:
                self.why = "no PINGRESP within %d s: dead link" % (ka // 2000)
                return _DEAD
            self.wait = ka // 2 - waited + 1
            return _WAIT
        idle = ticks_diff(now, self.last_tx)
        if idle >= ka:
            return _PING
        self.wait = ka - idle + 1
        return _WAIT

    def next(self, now, oldest=None):
        """What to do at `now`. oldest: when the oldest unacknowledged QoS 1 message was
        written (None if none). While connected, WAIT means: read for up to self.wait ms,
        keeping the keepalive rule (keepalive())."""
        if self.state == CONNECTED:
            if self.renew_at is not None:
                wait = ticks_diff(self.renew_at, now)
                if wait <= 0:
                    return _RENEW
            else:
                wait = _TICKS_SPAN
            if oldest is not None:
                # A device that keeps publishing never goes idle, so keepalive pings alone
                # would not notice a hub that stopped answering.
                age = ticks_diff(now, oldest)
                if age > self.timeout_ms:
                    self.why = "no PUBACK for %d ms: dead link" % self.timeout_ms
                    return _DEAD
                wait = min(wait, self.timeout_ms - age + 1)
            if self.resync_at is not None:
                d = ticks_diff(self.resync_at, now)
                if d <= 0:
                    return _RESYNC
                wait = min(wait, d)
            self.wait = wait
            return _WAIT
        if self.closed:
            self.why = "closed by the application"
            return _STOP
        if self.state == AUTH_FAILED:
            self.why = "authentication failed: waiting for new credentials"
            return _STOP
        if not self.auto:
            self.why = "not connected and auto_reconnect is off"
            return _STOP
        if self.retry_at is not None:
            d = ticks_diff(self.retry_at, now)
            if d > 0:
                self.wait = d
                return _WAIT
        return _CONNECT
