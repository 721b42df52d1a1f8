# DeviceClient's cold paths while it runs: a lost link, the lifecycle core's decisions
# (reconnect, SAS renewal, twin re-sync, a dead link), the rare sends (a message larger
# than the outbox ring, the exact size of one near the D2C limit) and a handler set or
# cleared while connected (its SUBSCRIBE or UNSUBSCRIBE, with iothub.clientx's filters).
# Loaded when one of them runs; a reconnect's connected() unloads it with the connection
# code (iothub.clientx), so a first connect never has it in RAM beside the link's code.

import gc

from . import errors, transitions
from .clock import ticks_ms
from .errors import ConfigError, ConnectionLost, IoTHubError


def handler_changed(c, name, set_):
    """A handler was set (subscribe its topics) or set to None (unsubscribe them), while
    connected. The twin's responses stay subscribed while get_twin()/update_reported() use
    them."""
    from .clientx import (
        METHODS_SUB,
        TWIN_DESIRED_SUB,
        TWIN_RES_SUB,
        c2d_subscribe_topic,
        filters,
        module_inputs_subscribe_topic,
        subscribe,
    )

    if set_:
        subscribe(c, filters(c, name))
        return
    if name == "message":
        f = [
            module_inputs_subscribe_topic(c.device_id, c.module_id)
            if c.module_id
            else c2d_subscribe_topic(c.device_id)
        ]
    elif name in ("method", "command"):
        if c._handlers.get("method") or c._handlers.get("command"):
            return  # the other one still answers on the methods topic
        f = [METHODS_SUB]
    elif c._handlers.get("desired") or c._handlers.get("writable"):
        return  # the other one still reads desired patches
    elif c._tw is not None and c._tw.want:
        f = [TWIN_DESIRED_SUB]
    else:
        f = [TWIN_RES_SUB, TWIN_DESIRED_SUB]
    # Not waiting for UNSUBACK: a message the hub sends meanwhile finds no handler (a method
    # gets 404, a C2D message is acknowledged and dropped), as after it.
    from .mqttconn import encode_unsubscribe

    s = c._s
    try:
        s.write(encode_unsubscribe(s.tx_full(), s.next_pid(), f))
    except ConnectionLost as e:
        c._lost(e)
        return
    c._log_line(2, "unsubscribed %s" % (f,))


def send_unqueued(c, topic, payload, n, block, timeout_ms):
    # A message larger than the outbox ring: sent straight from the payload, never queued.
    if not block:
        raise ConfigError(
            "a message of %d bytes does not fit the queue (queue_bytes=%d): send it with "
            "block=True while connected, or give the client a larger queue_bytes"
            % (n, len(c._outbox.buf))
        )
    if not c.is_connected:
        raise ConnectionLost(
            "not connected, and a message of %d bytes is larger than the queue "
            "(queue_bytes=%d): nothing was queued" % (n, len(c._outbox.buf))
        )
    pid = c._s.next_pid()
    c._direct = pid
    try:
        try:
            c._s.publish(topic, payload, 1, pid)
        except ConnectionLost as e:
            c._lost(e)
        c._await(pid, timeout_ms)
    finally:
        c._direct = 0
    return pid


def props_size(properties, *values):
    n = 0
    if properties:
        items = properties.items() if isinstance(properties, dict) else properties
        for k, v in items:
            n += len(str(k)) + (len(str(v)) if v is not None else 0)
    for v in values:
        if v:
            n += len(v)
    return n


# ---- failures and reconnects: acting on the lifecycle core's decisions (client._step) ------


def act(c, a, timeout_ms):
    """Do what lifecycle.next() decided (anything but WAIT)."""
    lc = c._lc
    if a == 3:  # DEAD
        c._lost(ConnectionLost(lc.why))
        if not c.auto_reconnect:
            raise ConnectionLost(lc.why)
    elif a == 5:  # RESYNC
        from .inbound import twin_of
        from .twin import resync

        resync(twin_of(c), max(min(timeout_ms, c.timeout_ms), 1))
    elif a == 4:  # RENEW: reconnect with a fresh SAS token, 80 % into the current one's life
        from .clock import unix_time

        left = c._renew_unix - unix_time()
        if left > 0:  # a token longer than the ticks span: wait on
            transitions.renew_later(lc, ticks_ms(), left * 1000)
            return
        # MQTT 3.1.1 has no re-authentication: reconnect with a fresh token. The session
        # (clean_session=False) and the outbox survive; subscriptions are renewed anyway.
        c.stats["renewals"] += 1
        drop(c, "SAS token renewal", clean=True)
        transitions.renewing(lc)
    if a != 1 and a != 4:
        return  # STOP: nothing to do until the application acts (poll() waits, a send() gives up)
    # CONNECT, or RENEW's reconnect.
    # Collect first: what this attempt loads for good (mqttconn, credentials, sas, after an
    # unload) then goes into the lowest free blocks rather than between the garbage of an
    # outage, and the handshake finds the largest contiguous block the heap can offer.
    gc.collect()
    try:
        c.connect()
    except errors.AuthenticationError as e:  # iothub.errstatus, loaded on a failure
        transitions.failed(lc, ticks_ms(), True)
        c._log_line(0, str(e) + "; not retrying until the credentials change")
        c._notify("auth_failed", e.code)
    except (IoTHubError, OSError, MemoryError) as e:
        # MemoryError: the heap is too fragmented for a handshake right now; the link's
        # buffers are released, so back off and try again rather than end the loop.
        why = "out of memory" if isinstance(e, MemoryError) else e
        c._log_line(1, "connect failed: %s" % (why,))
        lost(c, None, transitions.failed(lc, ticks_ms()))
    else:
        c.stats["reconnects"] += 1
        return
    if a == 4 and not c.auto_reconnect:
        raise ConnectionLost("SAS token renewal: reconnect failed")


def drop(c, reason, clean=False):
    c._s.close(clean)
    lc = c._lc
    was = lc.state
    if was == "connected":
        lc.state = "disconnected"
    c._log_line(1, "disconnected: %s" % reason)
    if was == "connected":
        c._notify("disconnected", reason)


def lost(c, err, ms=0):
    """The link failed (err), or an attempt failed (err None, ms: what lifecycle decided):
    say when the next attempt comes, if one does."""
    if err is not None:
        drop(c, str(err))
        ms = transitions.lost(c._lc, ticks_ms())
    if ms >= 0:
        c._log_line(1, "retrying in %d ms" % ms)
        c._notify("retrying", ms)
