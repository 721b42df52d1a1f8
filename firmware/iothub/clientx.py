# DeviceClient's cold paths: opening a connection (SAS token, TLS context, CONNECT,
# subscriptions, redelivery), failures and reconnects, and the rare sends. Loaded when one
# of them runs and unloaded again after connect(), with the modules only they need (sas,
# tlsconf, mqttconn, linkopen): between connections a telemetry-only device keeps just the
# send/receive path in RAM. A reconnect loads them again from flash (a few ms; frozen
# firmware keeps them in flash anyway). Construction is iothub.clientinit's.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import gc
import sys

from . import errors, transitions
from .clock import ticks_add, ticks_ms
from .errors import (
    ConfigError,
    ConnectionLost,
    IoTHubError,
    unload,  # noqa: F401 - clientx.unload, as the clients call it
)

_RENEW_PERCENT = const(80)  # renew the SAS token at 80 % of its lifetime (C SDK)


def connected(c):
    """After a successful connect (both clients): the connection-time code goes until the
    next connection. After a failure it stays loaded for the retries (reloading it for
    every attempt of a long outage would churn the heap)."""
    unload(
        "clientx",
        "clientinit",
        "credentials",
        "mqttconn",
        "sas",
        "saskey",
        "tlsconf",
        "tlsdesc",
        "tlsprofile",
        "connstr",
        "transitions",
        "linkopen",
        "walltime",
    )
    spare(c)


def spare(c):
    """Drop pct and topics (loaded for the token and construction's topic) while no loaded
    module holds them: dropping a held one frees nothing, and the next import would load a
    second copy (measured with the old routes module: +4.7 KB with three handlers). Once
    a send has needed a topic with properties, topics stays (reloading it after every
    reconnect would churn the heap)."""
    m = sys.modules
    if "iothub.sas" in m or "iothub.dps_topics" in m:  # both hold topics, dps_topics pct
        return
    if "iothub.inbound" not in m and "iothub.mqttpub" not in m:
        unload("pct")
    if c._tkey is None and "iothub.topicsx" not in m:
        unload("topics")


def connect_blocking(c, deadline):
    """DeviceClient.connect() up to the twin re-sync: connect, drop the connection-time
    code, tell the application. The caller then drops its last reference to this module
    before the re-sync (the first PUBLISH loads inbound: the peak of a connect)."""
    session_present = connect(c, deadline)
    connected(c)
    c._notify("connected", None)
    return session_present


def context(c):
    if c._ctx is None:
        from .tlsconf import client_context

        client_context(c)
    return c._ctx


def password(c):
    if c._cert is not None:
        transitions.token(c._lc, ticks_ms(), None)
        return None
    from .credentials import sas_password
    from .sas import device_resource_uri

    ttl = c.sas_ttl
    token, now, _ = sas_password(
        device_resource_uri(c.hostname, c.device_id, c.module_id), c._key, ttl, c._key_name
    )
    # Renewal is timed with ticks: the hot path never reads the wall clock (a float, or
    # a big int on 32-bit boards, allocates).
    c._renew_unix = now + ttl * _RENEW_PERCENT // 100
    transitions.token(c._lc, ticks_ms(), ttl)
    return token


# Topic filters of the handlers (docs/protocol.md section 2; the ids were checked by init());
# what arrives on them is parsed by iothub.inbound.
TWIN_RES_SUB = "$iothub/twin/res/#"
TWIN_DESIRED_SUB = "$iothub/twin/PATCH/properties/desired/#"
METHODS_SUB = "$iothub/methods/POST/#"


def c2d_subscribe_topic(device_id):
    return "devices/%s/messages/devicebound/#" % device_id


def module_inputs_subscribe_topic(device_id, module_id):
    return "devices/%s/modules/%s/inputs/#" % (device_id, module_id)


def filters(c, name=None):
    """Topic filters for the handlers set (or for the one named), [] when none."""
    h = c._handlers
    tw = c._tw
    want_twin = (
        name == "twin" or h.get("desired") or h.get("writable") or (tw is not None and tw.want)
    )
    methods = h.get("method") or h.get("command")
    if not (h.get("message") or methods or want_twin):
        return []
    f = []
    if name in (None, "message") and h.get("message"):
        if c.module_id:
            f.append(module_inputs_subscribe_topic(c.device_id, c.module_id))
        else:
            f.append(c2d_subscribe_topic(c.device_id))
    if name in (None, "method", "command") and methods:
        f.append(METHODS_SUB)
    if name in (None, "desired", "writable", "twin") and want_twin:
        f.append(TWIN_RES_SUB)
        f.append(TWIN_DESIRED_SUB)
    return f


def handler_changed(c, name, set_):
    """A handler was set (subscribe its topics) or set to None (unsubscribe them), while
    connected. The twin's responses stay subscribed while get_twin()/update_reported() use
    them."""
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
        s.write(encode_unsubscribe(s.tx, s.next_pid(), f))
    except ConnectionLost as e:
        c._lost(e)
        return
    c._log_line(2, "unsubscribed %s" % (f,))


def subscribe(c, filters, deadline=None):
    if deadline is None:
        deadline = ticks_add(ticks_ms(), c.timeout_ms)
    from .mqttconn import subscribe

    subscribe(c._s, filters, deadline)
    c._log_line(2, "subscribed %s" % (filters,))


def connect(c, deadline):
    """Open the link (token, context, CONNECT/CONNACK), subscribe, redeliver. Returns
    session_present; raises on failure with the link closed."""
    lc = c._lc
    transitions.connecting(lc)
    # No token made yet: the first connect of this client. sas and the wall clock go once
    # the token is made, before the link's modules load: they are not on top of them at
    # the handshake. After a failure, the retries keep them (reloading them for every
    # attempt would churn the heap).
    first = not c._renew_unix
    pw = password(c)
    if first:
        unload("sas", "walltime")
        # pct and topics came for the token (and construction's topic); no send with
        # properties and no handler path holds them yet: not on top of the link's code
        # either (the demo's smallest heap, 64-bit .mpy: 84 -> 82 KiB).
        spare(c)
    ctx = context(c)  # made at construction; again only after new credentials (tlsconf's
    # client_context drops its modules itself)
    c._log_line(1, "connecting to %s:%d as %s" % (c.host, c.port, c._cid))
    s = c._s
    from . import mqttconn  # the CONNECT and SUBSCRIBE packets

    session_present = mqttconn.open_session(
        s,
        c.host,
        c.port,
        ctx,
        c.hostname,
        c._cid,
        c._user,
        pw,
        c.keepalive,
        c.clean_session,
        deadline,
        c._tlsinfo,
    )
    pw = None
    try:
        transitions.opened(lc, ticks_ms())
        c.stats["connects"] += 1
        f = filters(c)
        if f:
            mqttconn.subscribe(s, f, deadline)
        # Everything still unacknowledged goes out again in order, each with the DUP flag
        # set in place if it was written before.
        c.stats["redelivered"] += c._outbox.redeliver(s.write_from, ticks_ms())
    except BaseException:
        s.close()
        lc.state = "disconnected"
        raise
    from .linkopen import cipher

    c._log_line(1, "connected (session present: %s, %s)" % (session_present, cipher(s.link)))
    return session_present


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
        from .twin import resync

        resync(c._twin(), max(min(timeout_ms, c.timeout_ms), 1))
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
