# DeviceClient's connection code: opening a connection (SAS token, TLS context, CONNECT,
# subscriptions, redelivery) and the subscriptions of handlers set later. Loaded when one
# of them runs and unloaded again after connect(), with the modules only they need (sas,
# tlsconf, mqttconn, linkopen): between connections a telemetry-only device keeps just the
# send/receive path in RAM. A reconnect loads them again from flash (a few ms; frozen
# firmware keeps them in flash anyway). Construction is iothub.clientinit's; failures,
# reconnects and the rare sends are iothub.clientrun's (not in RAM at a first connect).

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import sys

from .clock import ticks_add, ticks_ms
from .errors import (
    unload,  # noqa: F401 - clientx.unload, as the clients call it
)
from .spare import spare  # (loaded with this module, unloaded with it by connected())

_RENEW_PERCENT = const(80)  # renew the SAS token at 80 % of its lifetime (C SDK)


def _tr():
    # iothub.transitions, imported where it is used: a first connect drops it while the
    # link's code loads and the handshake runs (connect()), and loads it again for opened().
    from . import transitions

    return transitions


def connected(c):
    """After a successful connect (both clients): the connection-time code goes until the
    next connection. After a failure it stays loaded for the retries (reloading it for
    every attempt of a long outage would churn the heap)."""
    unload(
        "clientx",
        "clientrun",
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
        "spare",
    )
    spare(c)


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
    """The MQTT password (a SAS token; None with X.509), and when the lifecycle renews it.
    On the first connect of a client (no token made yet), what made it goes at once: sas,
    the wall clock, credentials and transitions (2 KB; opened() loads it again) go before
    the link's modules load, so they are not on top of them at the handshake; so do pct
    and topics while nothing holds them (the demo's smallest heap, 64-bit .mpy). After a
    failure the retries keep them (reloading them for every attempt would churn the heap)."""
    first = not c._renew_unix
    token = ttl = None
    if c._cert is None:
        from .credentials import sas_password
        from .sas import device_resource_uri

        ttl = c.sas_ttl
        token, now, _ = sas_password(
            device_resource_uri(c.hostname, c.device_id, c.module_id), c._key, ttl, c._key_name
        )
        # Renewal is timed with ticks: the hot path never reads the wall clock (a float, or
        # a big int on 32-bit boards, allocates).
        c._renew_unix = now + ttl * _RENEW_PERCENT // 100
    _tr().token(c._lc, ticks_ms(), ttl)
    if first:
        unload("sas", "walltime", "credentials")
        if "iothub.clientrun" not in sys.modules:  # (its retries hold transitions)
            unload("transitions")
        spare(c)
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
    _tr().connecting(lc)
    pw = password(c)  # (a first connect drops what made it)
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
        _tr().opened(lc, ticks_ms())
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
