# What the blocking DeviceClient (iothub.client) and the asyncio one (iothub.aio) share:
# construction, handler properties, the telemetry encoding into the outbox ring, and what
# is done with packets from the hub. Neither adapter's waiting is here: the blocking client
# waits by reading the link, the asyncio one by awaiting.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from . import mqtt, topics
from .errors import ConfigError, IoTHubError

D2C_MAX = const(262144)  # IoT Hub D2C limit: body + property names and values

_BUFFERS = (bytes, bytearray, memoryview)  # built once: a literal tuple allocates per call


def _positive(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError("%s must be a positive int (milliseconds), got %r" % (what, v))
    return v


def body(payload, ct, ce):
    """A payload that is not bytes-like, as bytes: (payload, content type, encoding);
    dict and list travel as JSON."""
    if isinstance(payload, str):
        return payload.encode(), ct, ce
    if isinstance(payload, (dict, list)):
        from .jsonc import dumps

        return (
            dumps(payload).encode(),
            "application/json" if ct is None else ct,
            "utf-8" if ce is None else ce,
        )
    raise ConfigError("payload must be bytes, str, dict or list")


def _handler_prop(name):
    def get(self):
        return self._handlers.get(name)

    def set_(self, fn):
        self._set_handler(name, fn)

    return property(get, set_)


class ClientBase:
    # Plug and Play: the model's component names, for desired patches written without the
    # "__t":"c" marker (a marked object is a component anyway).
    components = ()

    def __init__(self, hostname, device_id, **options):
        # Options and their defaults: see clientinit.init (checked there, once).
        from .clientinit import init

        self._qpid = self._qn = 0  # what _enqueue() made, without a tuple
        init(self, hostname, device_id, options)

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, connection_string, **kw):
        from . import clientinit

        return clientinit.connection_string(cls, connection_string, kw)

    @classmethod
    def from_x509(cls, hostname, device_id, cert, key, *, module_id=None, **kw):
        if cert is None or key is None:
            raise ConfigError("from_x509 needs both the device certificate and its private key")
        return cls(hostname, device_id, module_id=module_id, cert=cert, key=key, **kw)

    # ---- handlers (setting one subscribes to its topic, None unsubscribes) ----------

    on_message = _handler_prop("message")
    on_method = _handler_prop("method")
    on_desired = _handler_prop("desired")
    # Plug and Play (iothub/pnp.py, loaded when first needed): on_writable(component, name,
    # value, version) -> None (200), a status or (status, description), acknowledged for it;
    # on_command(component, command, payload) -> (status, payload), None for a command it
    # does not know (passed to on_method, else answered 404).
    on_writable = _handler_prop("writable")
    on_command = _handler_prop("command")

    def _set_handler(self, name, fn):
        had = self._handlers.get(name) is not None
        self._handlers[name] = fn
        if (name == "desired" or name == "writable") and fn is not None:
            self._twin()
        if self.is_connected and (fn is not None or had):
            self._handler_changed(name, fn is not None)

    def _twin(self):
        if self._tw is None:
            from .twin import Twin

            self._tw = Twin(self)
        return self._tw

    def tls_info(self):
        """Negotiated suite and version, and what the context was configured with."""
        conf = self._tlsinfo
        if conf is not None and "verify" not in conf:
            # The client keeps a minimal record of its own context: the rest is rebuilt.
            from .tlsconf import describe

            conf = describe(self._ctx, conf, self._roots, self._cert, self._pkey)
        return {"cipher": self._s.link.cipher(), "configured": conf}

    def _timeout(self, timeout_ms):
        return self.timeout_ms if timeout_ms is None else _positive(timeout_ms, "timeout_ms")

    def _notify(self, state, detail):
        cb = self.on_connection_state
        if cb is not None:
            self._callback(cb, "on_connection_state", state, detail)

    def _callback(self, fn, what, a, b):
        try:
            return fn(a, b)
        except Exception as e:  # an application callback never breaks the loop
            self._log_line(0, "%s raised %r" % (what, e))

    def _log_line(self, level, text):
        log = self._log
        if log is not None:
            log(level, text)

    # ---- sending -------------------------------------------------------------------

    def _publish(self, topic, payload, qos=0, pid=0, dup=False):
        self._s.publish(topic, payload, qos, pid, dup)

    def _telemetry_topic(self, props, mid, cid, ct, ce, comp):
        # The encoded topic of the previous send is reused when nothing it was built from
        # changed: compared by value against a private snapshot, so a dict the
        # application mutates between sends is noticed.
        if (
            props is None
            and mid is None
            and cid is None
            and ct is None
            and ce is None
            and comp is None
        ):
            return self._t0  # the bare telemetry topic, built once
        k = self._tkey
        if (
            k is not None
            and k[1] == mid
            and k[2] == cid
            and k[3] == ct
            and k[4] == ce
            and k[5] == comp
            and k[0] == props
        ):
            return self._topic
        t = topics.telemetry_topic(self.device_id, self.module_id, props, mid, cid, None, ct, ce)
        if comp is not None:  # Plug and Play component telemetry: $.sub={component}
            from .pnp import add_component

            t = add_component(t, comp)
        t = t.encode()
        if isinstance(props, dict):
            snap = dict(props)
        elif props is None:
            snap = None
        else:
            snap = [p[:] for p in props]
        self._tkey = [snap, mid, cid, ct, ce, comp]
        self._topic = t
        return t

    def _d2c(self, payload, qos, properties, ct, ce, mid, cid, component):
        """Check a telemetry message (payload: bytes-like, see body()) and return its
        encoded topic. Allocates nothing when the topic is cached."""
        if qos != 1 and qos != 0:
            raise ConfigError("qos must be 0 or 1 (IoT Hub closes the connection on QoS 2)")
        topic = self._telemetry_topic(properties, mid, cid, ct, ce, component)
        plen = len(payload)
        # The encoded topic is never shorter than the property names and values it carries,
        # so the exact count (which allocates) is needed only near the limit.
        if plen + len(topic) > D2C_MAX:
            from .clientx import props_size

            size = plen + props_size(properties, mid, cid, ct, ce, component)
            if size > D2C_MAX:
                raise ConfigError(
                    "message too large: %d bytes, IoT Hub accepts at most %d" % (size, D2C_MAX)
                )
        return topic

    def _enqueue(self, topic, payload):
        """Encode a QoS 1 PUBLISH straight into the outbox ring. Returns its offset there
        (self._qpid: its packet id, self._qn: its size), or -1 when it is larger than the
        ring (self._qn says how large). Raises when the queue policy refuses it. Returns
        one int, not a tuple: a tuple would allocate on every send."""
        ob = self._outbox
        plen = len(payload)
        n = mqtt.publish_size(len(topic), plen, 1)
        self._qn = n
        off = ob.reserve(n)
        if off < 0:
            if n > len(ob.buf):
                return -1
            raise IoTHubError(
                "the offline queue is full (%d messages, policy %s)" % (len(ob), ob.policy)
            )
        pid = self._s.next_pid()
        self._qpid = pid
        buf = ob.buf
        i = mqtt.encode_publish_header(buf, topic, plen, 1, pid, False, off)
        buf[i : i + plen] = payload
        return off

    def _pid_in_use(self, pid):
        return pid == self._direct or self._outbox.has(pid)

    @property
    def queued(self):
        """Number of QoS 1 messages not yet acknowledged by the hub."""
        return len(self._outbox)

    @property
    def dropped(self):
        """Messages dropped by the queue policy since start."""
        return self._outbox.dropped

    @property
    def queue_policy(self):
        return self._outbox.policy

    # ---- what the hub sends --------------------------------------------------------

    def _on_publish(self, pkt):
        from .inbound import route

        try:
            route(self, pkt)
        except (IoTHubError, ValueError, MemoryError) as e:
            # A message whose topic or properties cannot be decoded, or that cannot be
            # held in memory: dropped (and still acknowledged), never a reason to reconnect.
            self._report(
                "memory" if isinstance(e, MemoryError) else "undecodable",
                "a message from the hub was dropped (%d bytes): %s"
                % (pkt.payload_len, "out of memory" if isinstance(e, MemoryError) else e),
            )

    def _on_drop(self, pkt):
        why = ("oversized", "memory", "undecodable")[pkt.rc - 1]
        self._report(
            why,
            "a message from the hub was dropped (%d bytes): %s"
            % (
                pkt.payload_len,
                (
                    "larger than max_packet=%d" % self._s.max_packet,
                    "no memory for a buffer of its size",
                    "its topic cannot be decoded",
                )[pkt.rc - 1],
            ),
        )

    def _report(self, kind, detail):
        """Something from the hub the client could not take: counted, logged (without the
        content) and passed to on_error(kind, detail). kind: "oversized", "memory",
        "undecodable" (a message, dropped and acknowledged) or "twin" (a twin body
        skipped)."""
        if kind != "twin":
            self.stats["poison"] += 1
        self._log_line(0, detail)
        fn = self.on_error
        if fn is not None:
            self._callback(fn, "on_error", kind, detail)

    def _on_puback(self, pid):
        if pid == self._direct:
            self._direct = 0
        else:
            self._outbox.ack(pid)
