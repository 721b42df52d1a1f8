# The lifecycle core (iothub/lifecycle.py, its transitions in iothub/transitions.py) as
# table-driven cases, run on CPython and on the
# unix port (coretest.py). Each rule of the README's "Lifecycle" section is a script: events
# and the time they happen at, then what next()/keepalive() must answer. No sockets, no
# clock: time is whatever the case says.

from coretest import eq

import iothub.lifecycle as L
import iothub.transitions as T

# The actions' numbers (private constants in lifecycle.py; docs/lifecycle.md lists them)
WAIT, CONNECT, PING, DEAD, RENEW, RESYNC, STOP = range(7)
NAMES = ("WAIT", "CONNECT", "PING", "DEAD", "RENEW", "RESYNC", "STOP")


class Fixed:
    """A backoff that returns the delays it was given, in order (then the last again)."""

    def __init__(self, *delays):
        self.delays = list(delays)
        self.attempt = 0
        self.resets = 0

    def next_delay_ms(self):
        d = self.delays[min(self.attempt, len(self.delays) - 1)]
        self.attempt += 1
        return d

    def reset(self):
        self.attempt = 0
        self.resets += 1


def make(keepalive_s=10, timeout_ms=3000, auto=True, backoff=None):
    return L.Lifecycle(keepalive_s, timeout_ms, auto, backoff or Fixed(1000, 2000, 4000))


def run(lc, script):
    """script: rows (t, event, args..., expect). event is a transitions function, or "next"
    / "next_oldest" / "keepalive" whose expect is (action name, wait or why or None). Checks
    every answer and returns the transcript (action names, states) as the observation."""
    seen = []
    for row in script:
        t, ev = row[0], row[1]
        if ev in ("next", "next_oldest", "keepalive"):
            want = row[-1]
            if ev == "next":
                a = lc.next(t)
            elif ev == "next_oldest":
                a = lc.next(t, row[2])
            else:
                a = lc.keepalive(t)
            got = NAMES[a]
            detail = lc.wait if a == WAIT else (lc.why if a in (DEAD, STOP) else None)
            if want[1] is None or isinstance(want[1], int):
                eq((got, detail if want[1] is not None else None), want, "at t=%d %s" % (t, ev))
            else:  # a text: it must be contained in the reason
                eq(got, want[0], "at t=%d %s" % (t, ev))
                if want[1] not in detail:
                    raise AssertionError("at t=%d: %r not in %r" % (t, want[1], detail))
            seen.append((t, got, lc.state))
        else:
            if ev == "pinged":  # what the adapter does when it writes a PINGREQ
                lc.ping_at = lc.last_tx = t
                continue
            if ev == "pong":
                lc.ping_at = None
                continue
            if ev == "sent":
                lc.last_tx = t
                continue
            fn = getattr(T, ev)
            r = fn(lc, t, *row[2:]) if ev not in NO_TIME else fn(lc, *row[2:])
            if ev in ("lost", "failed"):
                seen.append((t, ev, r, lc.state))
    return seen


NO_TIME = ("connecting", "renewing", "close")


def test_first_connect_is_due_at_once():
    return run(make(), [(0, "next", ("CONNECT", None))])


def test_keepalive_ping_when_idle_then_dead_without_pingresp():
    # keepalive 10 s: PINGREQ after 10 s without a write; no PINGRESP within 5 s: dead link
    lc = make()
    return run(
        lc,
        [
            (0, "opened"),
            (0, "keepalive", ("WAIT", 10001)),
            (4000, "sent"),  # a write postpones the ping
            (13999, "keepalive", ("WAIT", 2)),  # due at 14000; the read ends just after
            (14000, "keepalive", ("PING", None)),
            (14000, "pinged"),
            (14000, "keepalive", ("WAIT", 5001)),
            (19000, "keepalive", ("WAIT", 1)),
            (19001, "keepalive", ("DEAD", "no PINGRESP within 5 s")),
        ],
    )


def test_pingresp_clears_the_ping():
    lc = make()
    return run(
        lc,
        [
            (0, "opened"),
            (10000, "keepalive", ("PING", None)),
            (10000, "pinged"),
            (10100, "pong"),
            (10100, "keepalive", ("WAIT", 9901)),  # counted from the PINGREQ's write
            (20000, "keepalive", ("PING", None)),
        ],
    )


def test_dead_link_by_missing_puback_while_publishing():
    # a device that keeps publishing never pings: the oldest unacknowledged message decides
    lc = make(timeout_ms=3000)
    return run(
        lc,
        [
            (0, "opened"),
            (100, "next_oldest", 100, ("WAIT", 3001)),
            (3100, "next_oldest", 100, ("WAIT", 1)),
            (3101, "next_oldest", 100, ("DEAD", "no PUBACK for 3000 ms")),
            (3101, "next", ("WAIT", 0x1FFFFFFF)),  # acknowledged meanwhile: nothing due
        ],
    )


def test_lost_link_backs_off_then_reconnects():
    bo = Fixed(1000, 2000, 4000)
    lc = make(backoff=bo)
    out = run(
        lc,
        [
            (0, "opened"),
            (500, "lost"),
            (500, "next", ("WAIT", 1000)),
            (1499, "next", ("WAIT", 1)),
            (1500, "next", ("CONNECT", None)),
            (1600, "failed"),
            (1600, "next", ("WAIT", 2000)),
            (3600, "next", ("CONNECT", None)),
            (3700, "failed"),
            (3700, "next", ("WAIT", 4000)),
            (7700, "opened"),
        ],
    )
    eq(lc.state, "connected")
    eq(bo.resets, 2, "every successful connection resets the backoff")
    eq(bo.attempt, 0)
    return out


def test_states_through_an_outage():
    lc = make()
    states = [lc.state]
    T.opened(lc, 0)
    states.append(lc.state)
    T.lost(lc, 10)
    states.append(lc.state)
    T.failed(lc, 2000)
    states.append(lc.state)
    T.opened(lc, 5000)
    states.append(lc.state)
    eq(states, ["disconnected", "connected", "retrying", "retrying", "connected"])
    return states


def test_auth_failure_stops_until_credentials_change():
    bo = Fixed(1000)
    lc = make(backoff=bo)
    out = run(
        lc,
        [
            (0, "failed", True),  # CONNACK 4/5
            (0, "next", ("STOP", "authentication failed")),
            (999999, "next", ("STOP", "authentication failed")),  # however long it waits
            (1000000, "credentials_changed"),
            (1000000, "next", ("CONNECT", None)),  # at once, no backoff
        ],
    )
    eq(bo.attempt, 0, "no backoff delay was drawn for an authentication failure")
    return out


def test_auth_failure_is_not_undone_by_a_lost_link():
    lc = make()
    T.failed(lc, 0, True)
    eq(T.lost(lc, 10), -1)
    eq(lc.state, "auth_failed")
    eq(STOP, lc.next(20))


def test_closed_by_the_application():
    lc = make()
    out = run(
        lc,
        [
            (0, "opened"),
            (100, "close"),
            (100, "next", ("STOP", "closed by the application")),
            (100, "lost"),  # the link's end after close: no retry
            (5000, "next", ("STOP", "closed by the application")),
            (6000, "connecting"),  # connect() again
            (6000, "next", ("CONNECT", None)),
        ],
    )
    return out


def test_no_auto_reconnect():
    lc = make(auto=False)
    out = run(
        lc,
        [
            (0, "opened"),
            (100, "lost"),
            (100, "next", ("STOP", "auto_reconnect is off")),
        ],
    )
    eq(T.lost(lc, 200), -1)
    eq(T.failed(lc, 300), -1)
    return out


def test_sas_renewal_at_80_percent():
    # token of 100 s made at t=0 (before CONNECT): renew at 80 s, whatever the traffic
    lc = make(keepalive_s=60)
    return run(
        lc,
        [
            (0, "token", 100),
            (300, "opened"),
            (300, "next", ("WAIT", 79700)),
            (79999, "next_oldest", 79990, ("WAIT", 1)),
            (80000, "next", ("RENEW", None)),
            (80000, "renewing"),
            (80000, "next", ("CONNECT", None)),  # at once, no backoff
            (80100, "token", 100),
            (80200, "opened"),
            (80200, "next", ("WAIT", 79900)),
        ],
    )


def test_x509_never_renews():
    lc = make()
    return run(lc, [(0, "token", None), (0, "opened"), (0, "next", ("WAIT", 0x1FFFFFFF))])


def test_renew_later_for_tokens_beyond_the_ticks_span():
    lc = make()
    T.token(lc, 0, 10**9)  # ~31 years: capped to the ticks span, then re-armed by the wall clock
    T.opened(lc, 0)
    eq(lc.renew_at, 0x1FFFFFFF)
    T.renew_later(lc, 0x1FFFFFFF, 5000)
    eq(WAIT, lc.next(0x1FFFFFFF))
    eq(lc.wait, 5000)


def test_twin_resync_retried_after_5_s_only_while_connected():
    lc = make(keepalive_s=60)
    out = run(
        lc,
        [
            (0, "opened"),
            (0, "resync_due"),
            (0, "next", ("RESYNC", None)),
            (10, "resync_done", False),  # failed on a live link: again in 5 s
            (10, "next", ("WAIT", 5000)),
            (5010, "next", ("RESYNC", None)),
            (5020, "resync_done", True),
            (5020, "next", ("WAIT", 0x1FFFFFFF)),
        ],
    )
    T.resync_due(lc, 6000)
    T.lost(lc, 6000)
    T.resync_done(lc, 6001, False)
    eq(lc.resync_at, None, "a re-sync that failed because the link went is not retried")
    return out
