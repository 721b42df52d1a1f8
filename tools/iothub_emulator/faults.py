"""Fault injection switches, read by the connection handlers at fixed hook points.

Tests set attributes directly (`emu.faults.stall = True`); the admin API sets them by name. Hook
points in session.py: on CONNECT (refuse_connack, delay_connack_s), on each device PUBLISH (drop_next_publish,
delay_puback_s), on twin requests (twin_status_override), before any packet is sent or processed
(stall), and in the expiry timer (close_at_token_expiry). New faults add an attribute here and a check at
one hook point; Emulator.drop()/send_raw() cover "drop the connection" and "send malformed bytes".
"""

import threading

DEFAULTS = {
    # Abort the connection when the next device PUBLISH arrives (not captured, no PUBACK). An int
    # counts publishes to drop this way; True means 1. Decremented as it fires.
    "drop_next_publish": 0,
    # CONNACK return code to answer every CONNECT with (e.g. 3 server unavailable, 5 not authorized).
    "refuse_connack": None,
    # Seconds to hold back the CONNACK of every CONNECT (a slow hub during connect).
    "delay_connack_s": 0.0,
    # Seconds to hold back each telemetry PUBACK (traffic shaping / throttling).
    "delay_puback_s": 0.0,
    # Answer twin GET / reported PATCH with this status (e.g. 429, 500) and change nothing.
    "twin_status_override": None,
    # Stop answering: incoming packets are read and ignored; nothing is sent (no PINGRESP, PUBACK, ...).
    "stall": False,
    # Close a SAS-authenticated connection when its token expires (what the hub does).
    "close_at_token_expiry": True,
}


class Faults:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        for k, v in DEFAULTS.items():
            setattr(self, k, v)

    def set(self, **kw):
        for k, v in kw.items():
            if k not in DEFAULTS:
                raise ValueError("unknown fault %r (known: %s)" % (k, ", ".join(sorted(DEFAULTS))))
            setattr(self, k, v)

    def as_dict(self):
        return {k: getattr(self, k) for k in DEFAULTS}

    def take_drop_publish(self):
        """True if this publish is to be dropped (consumes one count)."""
        with self._lock:
            n = self.drop_next_publish
            if n is True:
                n = 1
            if not n:
                return False
            self.drop_next_publish = n - 1
            return True
