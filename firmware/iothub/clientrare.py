# What a client is rarely asked for: new credentials, the TLS details, the twin and Plug
# and Play calls of the blocking client, disconnect(), and the reports of messages from
# the hub that were dropped. Loaded on the first such call (ClientBase's
# __getattr__ finds these names here) and then kept; a telemetry-only device that only
# connects, sends and polls never loads it. Each resident method costs a function object,
# its bytecode and an interned name in RAM for good (~200 B each on a 64-bit port), which
# the one __getattr__ replaces.
#
# The functions take the client as their first argument; get() hands them out bound to it.
# The asyncio client has its own coroutines (disconnect, twin calls) and update_credentials,
# found before __getattr__ is asked, so only tls_info and _report reach this module from it.


def get(c, name):
    """c.<name> for a name the client class does not hold (the queue counters are
    answered by ClientBase.__getattr__ itself): a function of this module bound to c."""
    if name not in _API:
        raise AttributeError(name)
    fn = globals()[name]

    def bound(*args, **kw):
        return fn(c, *args, **kw)

    return bound


def update_credentials(c, *, connection_string=None, shared_access_key=None, cert=None, key=None):
    """Replace the credentials of a live client; it reconnects with them."""
    from .clientinit import update_credentials

    update_credentials(c, connection_string, shared_access_key, cert, key)


def tls_info(c):
    """Negotiated suite and version, and what the context was configured with."""
    import gc
    import sys

    from .errors import unload

    # linkopen is connection-time code: loaded here while connected, it goes again before
    # tlsconf comes (during an outage the retries hold it, and it stays). Each loads after
    # a collection, into the lowest holes rather than after the garbage of the calls before.
    gc.collect()
    kept = "iothub.linkopen" in sys.modules
    from .linkopen import cipher

    r = {"cipher": cipher(c._s.link)}
    cipher = None
    if not kept:
        unload("linkopen")
    conf = c._tlsinfo
    if conf is not None and "verify" not in conf:
        # The client keeps a minimal record of its own context: the rest is rebuilt.
        gc.collect()
        from .tlsconf import describe

        conf = describe(c._ctx, conf, c._roots, c._cert, c._pkey)
    r["configured"] = conf
    return r


# ---- blocking client only ---------------------------------------------------------------


def disconnect(c):
    """Send DISCONNECT and close. Queued messages stay queued."""
    c._s.close(clean=True)
    import gc

    gc.collect()  # the closed link's objects are freed before transitions loads
    from .transitions import close

    close(c._lc)
    c._notify("disconnected", "closed by the application")


close = disconnect


def get_twin(c, timeout_ms=None):
    """The twin document {"desired": {...}, "reported": {...}}."""
    from .twin import get

    return get(c._twin(), timeout_ms)


def update_reported(c, patch, timeout_ms=None):
    """PATCH reported properties (None deletes a member). Returns the new version."""
    from .twin import update_reported

    return update_reported(c._twin(), patch, timeout_ms)


# Plug and Play: thin entries into iothub/pnp.py (loaded on first use).


def report_properties(c, properties, component=None, timeout_ms=None):
    """Report properties (a dict; of a component: wrapped with "__t":"c"), or send a
    pnp.Patch with several properties, components and acks. Returns the new version."""
    from .pnp import report_properties

    return report_properties(c._twin(), properties, component, timeout_ms)


def ack_writable(
    c, name, value, version, status=200, description=None, component=None, timeout_ms=None
):
    """Acknowledge a writable property ({"ac", "av", "ad", "value"}) at the desired
    version it answers. Returns the new reported version."""
    from .pnp import Patch, report_properties

    patch = Patch().ack(name, value, version, status, description, component)
    return report_properties(c._twin(), patch, None, timeout_ms)


# ---- the texts of bad input to the resident modules -------------------------------------
# The resident code checks, and asks error(code, args) for the ConfigError only when a
# check fails (errors.explained: this module is loaded for that one message). Codes:
# 0 Outbox options (size, policy, nbytes), then the _TEXTS below from 1 on.
_TEXTS = (
    "poll timeout_ms must be an int (milliseconds)",
    "%s must be a positive int (milliseconds), got %r",
    "payload must be bytes, str, dict or list",
    "from_x509 needs both the device certificate and its private key",
    "qos must be 0 or 1 (IoT Hub closes the connection on QoS 2)",
    "message too large: %d bytes, IoT Hub accepts at most %d",
)


def error(code, args):
    from .errors import ConfigError

    if code:
        return ConfigError(_TEXTS[code - 1] % args)
    size, policy, nbytes = args
    if not isinstance(size, int) or size < 1:
        return ConfigError("queue_size must be an int >= 1, got %r" % (size,))
    if not isinstance(nbytes, int) or nbytes < 64:
        return ConfigError("queue_bytes must be an int >= 64, got %r" % (nbytes,))
    return ConfigError("queue_policy must be one of drop-oldest, reject, got %r" % (policy,))


# ---- what the hub sent that the client could not take ----------------------------------


def _report(c, kind, detail):
    """Something from the hub the client could not take: counted, logged (without the
    content) and passed to on_error(kind, detail). kind: "oversized", "memory",
    "undecodable" (a message, dropped and acknowledged) or "twin" (a twin body
    skipped)."""
    if kind != "twin":
        c.stats["poison"] += 1
    c._log_line(0, detail)
    fn = c.on_error
    if fn is not None:
        c._callback(fn, "on_error", kind, detail)


def _on_publish(c, pkt, e):  # (names the client interned already: no new qstr)
    # A message whose topic or properties cannot be decoded, or that cannot be held in
    # memory: dropped (and still acknowledged), never a reason to reconnect.
    mem = isinstance(e, MemoryError)
    _report(
        c,
        "memory" if mem else "undecodable",
        "a message from the hub was dropped (%d bytes): %s"
        % (pkt.payload_len, "out of memory" if mem else e),
    )


def _on_drop(c, pkt):
    # A PUBLISH the decoder read through without taking it (mqtt.DROPPED; .rc says why).
    why = ("oversized", "memory", "undecodable")[pkt.rc - 1]
    _report(
        c,
        why,
        "a message from the hub was dropped (%d bytes): %s"
        % (
            pkt.payload_len,
            (
                "larger than max_packet=%d" % c._s.max_packet,
                "no memory for a buffer of its size",
                "its topic cannot be decoded",
            )[pkt.rc - 1],
        ),
    )


def handler_prop(cls):
    # on_message & co. as properties, for a firmware without descriptors (clientbase).
    for name in ("message", "method", "desired", "writable", "command"):
        setattr(cls, "on_" + name, _prop(name))


def _prop(name):
    def get(c):
        return c._handlers.get(name)

    def set_(c, fn):
        c._set_handler(name, fn)

    return property(get, set_)


# The names get() hands out (the rest of this module is not the client's API).
_API = (
    "update_credentials",
    "tls_info",
    "disconnect",
    "close",
    "get_twin",
    "update_reported",
    "report_properties",
    "ack_writable",
    "_report",
)
