# What the client says when something is wrong, loaded for one message and dropped again
# (errors.explained): the texts of bad arguments to the resident modules, and the reports of
# what the hub sent that the client could not take. A device that never fails never loads
# it. Also the handler properties for a firmware without descriptors (clientbase).

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


# What a send or its wait cannot do, not while a link dies (those texts stay resident):
# codes 3 and 4 an IoTHubError, the others ConnectionLost.
_FAILURES = (
    "not connected (QoS 0 messages are not queued)",
    "not connected (auto_reconnect is off: nothing was queued)",
    "disconnect() was called: message %d stays queued until connect()",
    "the offline queue is full (%d messages, policy %s)",
    "no free MQTT packet id",
)


def failure(code, args):
    from .errors import ConnectionLost, IoTHubError

    return (IoTHubError if code >= 3 else ConnectionLost)(_FAILURES[code] % args)


# ---- what the hub sent that the client could not take ----------------------------------


def report(c, kind, detail):
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


def on_publish(c, pkt, e):  # (names the client interned already: no new qstr)
    # A message whose topic or properties cannot be decoded, or that cannot be held in
    # memory: dropped (and still acknowledged), never a reason to reconnect.
    mem = isinstance(e, MemoryError)
    report(
        c,
        "memory" if mem else "undecodable",
        "a message from the hub was dropped (%d bytes): %s"
        % (pkt.payload_len, "out of memory" if mem else e),
    )


def on_drop(c, pkt):
    # A PUBLISH the decoder read through without taking it (mqtt.DROPPED; .rc says why).
    why = ("oversized", "memory", "undecodable")[pkt.rc - 1]
    report(
        c,
        why,
        "a message from the hub was dropped (%d bytes): %s"
        % (
            pkt.payload_len,
            (
                "larger than max_packet=%d" % c._s.decoder.max_packet,
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
        from .errors import explained

        explained("handlers", "set_handler", c, name, fn)

    return property(get, set_)
