# What happened to the connection, reported to the lifecycle core (iothub.lifecycle) by an
# adapter: the state transitions. Pure like the core (time passed in, no I/O); a separate
# module because these run at connect, loss, renewal and close only, so they load with the
# connection code and are unloaded with it, while the decisions (lifecycle.Lifecycle.next
# and keepalive) stay loaded. docs/lifecycle.md lists the rules.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .clock import ticks_add

_RESYNC_RETRY_MS = const(5000)  # a failed twin re-sync is retried after 5 s
_TICKS_SPAN = const(0x1FFFFFFF)  # longest span (ms) ticks_diff measures on every port
_RENEW_PERCENT = const(80)  # renew at 80 % of the token's lifetime (the Azure C SDK's rule)


def connecting(lc):
    """The application called connect(): a closed client opens again."""
    lc.closed = False


def token(lc, now, ttl_s):
    """A SAS token with a lifetime of ttl_s was made at `now`: renew it at 80 % of its
    lifetime. ttl_s None: X.509, nothing to renew."""
    lc.renew_at = None
    if ttl_s is not None:
        lc.renew_at = ticks_add(now, min(ttl_s * _RENEW_PERCENT * 10, _TICKS_SPAN))


def renew_later(lc, now, ms):
    """RENEW came early by the wall clock (a token longer than the ticks span)."""
    lc.renew_at = ticks_add(now, min(ms, _TICKS_SPAN))


def opened(lc, now):
    """CONNACK accepted (and subscriptions made)."""
    lc.state = "connected"
    lc.retry_at = None
    lc.last_tx = now
    lc.ping_at = None
    if lc.backoff is not None:
        lc.backoff.reset()


def lost(lc, now):
    """The link failed or was dropped. Returns the ms until the next attempt, or -1 when
    none follows (closed, auth_failed, auto_reconnect off)."""
    if lc.state == "connected":
        lc.state = "disconnected"
    lc.ping_at = None
    if lc.auto and not lc.closed and lc.state != "auth_failed":
        return _schedule(lc, now)
    return -1


def failed(lc, now, auth=False):
    """A connection attempt failed: auth=True when the hub refused the credentials (no
    retry until they change). Returns the ms until the next attempt, or -1."""
    if auth:
        lc.state = "auth_failed"
        lc.retry_at = None
        return -1
    lc.state = "disconnected"
    if lc.auto and not lc.closed:
        return _schedule(lc, now)
    return -1


def _schedule(lc, now):
    b = lc.backoff
    if b is None:
        from .backoff import Backoff

        b = lc.backoff = Backoff()
    d = b.next_delay_ms()
    lc.retry_at = ticks_add(now, d)
    lc.state = "retrying"
    return d


def renewing(lc):
    """RENEW is being acted on: the link is closed and a connection is due at once."""
    lc.state = "disconnected"
    lc.renew_at = None
    lc.retry_at = None


def close(lc):
    """disconnect() by the application: nothing is retried until connect()."""
    lc.closed = True
    lc.state = "disconnected"
    lc.retry_at = None
    lc.resync_at = None


def credentials_changed(lc, now):
    """New credentials: a refused client tries again at once, without backoff."""
    if lc.state == "auth_failed":
        lc.state = "disconnected"
    if lc.backoff is not None:
        lc.backoff.reset()
    lc.retry_at = now


def resync_due(lc, now, ms=0):
    lc.resync_at = ticks_add(now, ms)


def resync_done(lc, now, ok):
    """A twin re-sync ended; one that failed on a live link is tried again in 5 s."""
    lc.resync_at = None if ok or lc.state != "connected" else ticks_add(now, _RESYNC_RETRY_MS)
