# DeviceClient: the adapter that owns the link, the clock and retries, and drives the
# pure core (topics, sas, mqtt, outbox). Blocking API with callbacks; every wait is bounded.
#
# What the client does on its own: keepalive pings and dead-link detection, PUBACK
# tracking, SAS renewal (reconnect with a fresh token once 80 % of its lifetime has
# passed, as the Azure C SDK does), reconnect with exponential backoff and jitter,
# resubscribe and twin re-sync after reconnect, redelivery of unacknowledged QoS 1
# messages (DUP flag), and answering methods. What the application decides: its
# handlers, what to send, and how long a call may wait.
#
# RAM: between connections a telemetry-only client keeps this module, session, transport,
# mqtt, outbox, topics, clock and errors. What runs once per connection (clientx: token,
# TLS context, CONNECT, subscriptions, with sas and tlsprofile) is loaded by connect()
# and unloaded after it; twin, C2D/method routing, JSON and backoff load when first
# used. The send path allocates nothing for a bytes payload whose properties equal the
# previous send's: the encoded topic is cached and the PUBLISH is encoded straight into
# the outbox ring, from which it is written.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import gc

from . import mqtt, topics
from .clock import sleep_ms, ticks_add, ticks_diff, ticks_ms
from .errors import (
    ConfigError,
    ConnectionLost,
    IoTHubError,
    ProtocolError,
    Timeout,
)

D2C_MAX = const(262144)  # IoT Hub D2C limit: body + property names and values
_WAIT = const(0)  # lifecycle.WAIT
_STOP = const(6)  # lifecycle.STOP

# Connection states reported to on_connection_state(state, detail) (lifecycle's)
CONNECTED = "connected"
DISCONNECTED = "disconnected"
RETRYING = "retrying"
AUTH_FAILED = "auth_failed"

_BUFFERS = (bytes, bytearray, memoryview)  # built once: a literal tuple allocates per call


def _positive(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError("%s must be a positive int (milliseconds), got %r" % (what, v))
    return v


class DeviceClient:
    # Plug and Play: the model's component names, for desired patches written without the
    # "__t":"c" marker (a marked object is a component anyway).
    components = ()

    def __init__(self, hostname, device_id, **options):
        # Options and their defaults: see clientx.OPTIONS (checked there, once).
        from . import clientx

        clientx.init(self, hostname, device_id, options)

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, connection_string, **kw):
        from . import clientx

        c = clientx.connection_string(cls, connection_string, kw)
        clientx.unload("connstr", "clientx", "sas")
        return c

    @classmethod
    def from_x509(cls, hostname, device_id, cert, key, *, module_id=None, **kw):
        if cert is None or key is None:
            raise ConfigError("from_x509 needs both the device certificate and its private key")
        return cls(hostname, device_id, module_id=module_id, cert=cert, key=key, **kw)

    def update_credentials(
        self, *, connection_string=None, shared_access_key=None, cert=None, key=None
    ):
        """Replace the credentials of a live client; it reconnects with them."""
        from . import clientx

        clientx.update_credentials(self, connection_string, shared_access_key, cert, key)

    # ---- handlers (setting one subscribes to its topic, None unsubscribes) ----------

    def _handler_prop(name):  # noqa: N805 - class-body helper
        def get(self):
            return self._handlers.get(name)

        def set_(self, fn):
            had = self._handlers.get(name) is not None
            self._handlers[name] = fn
            if (name == "desired" or name == "writable") and fn is not None:
                self._twin()
            if self.is_connected and (fn is not None or had):
                from . import clientx

                clientx.handler_changed(self, name, fn is not None)

        return property(get, set_)

    on_message = _handler_prop("message")
    on_method = _handler_prop("method")
    on_desired = _handler_prop("desired")
    # Plug and Play (iothub/pnp.py, loaded when first needed): on_writable(component, name,
    # value, version) -> None (200), a status or (status, description), acknowledged for it;
    # on_command(component, command, payload) -> (status, payload), None for a command it
    # does not know (passed to on_method, else answered 404).
    on_writable = _handler_prop("writable")
    on_command = _handler_prop("command")
    del _handler_prop

    def _twin(self):
        if self._tw is None:
            from .twin import Twin

            self._tw = Twin(self)
        return self._tw

    # ---- connection ----------------------------------------------------------------

    @property
    def is_connected(self):
        return self._lc.state == CONNECTED and self._s.is_open

    @property
    def state(self):
        return self._lc.state

    def tls_info(self):
        """Negotiated suite and version, and what the context was configured with."""
        return {"cipher": self._s.link.cipher(), "configured": self._tlsinfo}

    def _timeout(self, timeout_ms):
        return self.timeout_ms if timeout_ms is None else _positive(timeout_ms, "timeout_ms")

    def connect(self, timeout_ms=None):
        """Connect (DNS, TCP, TLS, CONNECT/CONNACK, subscriptions). Raises on failure."""
        deadline = ticks_add(ticks_ms(), self._timeout(timeout_ms))
        from . import clientx

        session_present = clientx.connect(self, deadline)
        # Connected: the connection-time code goes until the next connection. After a
        # failure it stays loaded for the retries (reloading it for every attempt of a
        # long outage would churn the heap).
        clientx.unload(
            "clientx",
            "credentials",
            "mqttconn",
            "routes",
            "sas",
            "pct",
            "tlsprofile",
            "connstr",
            "transitions",
            "linkopen",
        )
        self._notify(CONNECTED, None)
        h = self._handlers
        if h.get("desired") or h.get("writable"):
            self._twin().resync(max(ticks_diff(deadline, ticks_ms()), 1))
        return session_present

    def disconnect(self):
        """Send DISCONNECT and close. Queued messages stay queued."""
        self._s.close(clean=True)
        from .transitions import close

        close(self._lc)
        self._notify(DISCONNECTED, "closed by the application")

    close = disconnect

    def _notify(self, state, detail):
        cb = self.on_connection_state
        if cb is not None:
            try:
                cb(state, detail)
            except Exception as e:  # an application callback never breaks the loop
                self._log_line(0, "on_connection_state raised %r" % (e,))

    def _log_line(self, level, text):
        log = self._log
        if log is not None:
            log(level, text)

    def _drop(self, reason, clean=False):
        from .clientx import drop

        drop(self, reason, clean)

    def _lost(self, err):
        # Collect first: what the outage loads for good (clientx, backoff, and the qstr
        # pool they may grow) then goes into the lowest free blocks, not between garbage
        # that the outage's sends leave behind (a Pico W's handshake needs one 8 KB block).
        gc.collect()
        from .clientx import lost

        lost(self, err)

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

    def send(
        self,
        payload,
        *,
        properties=None,
        content_type=None,
        content_encoding=None,
        message_id=None,
        correlation_id=None,
        qos=1,
        timeout_ms=None,
        block=True,
        component=None,
    ):
        """Send telemetry. QoS 1 returns once the hub's PUBACK arrives.

        The message is copied into the outbox ring (queue_bytes) as an encoded PUBLISH; on
        Timeout it stays queued and is delivered after reconnect: do not send it again.
        With block=False it is queued and sent by poll(). A message larger than the ring
        is never queued: it is sent straight from the payload while connected, and send()
        raises ConnectionLost if the link fails before its PUBACK (send it again).
        component: the Plug and Play component the telemetry belongs to ($.sub).
        """
        if qos != 1 and qos != 0:
            raise ConfigError("qos must be 0 or 1 (IoT Hub closes the connection on QoS 2)")
        if not isinstance(payload, _BUFFERS):
            if isinstance(payload, str):
                payload = payload.encode()
            elif isinstance(payload, (dict, list)):
                from .jsonc import dumps

                payload = dumps(payload).encode()
                if content_type is None:
                    content_type = "application/json"
                if content_encoding is None:
                    content_encoding = "utf-8"
            else:
                raise ConfigError("payload must be bytes, str, dict or list")
        topic = self._telemetry_topic(
            properties, message_id, correlation_id, content_type, content_encoding, component
        )
        plen = len(payload)
        # The encoded topic is never shorter than the property names and values it carries,
        # so the exact count (which allocates) is needed only near the limit.
        if plen + len(topic) > D2C_MAX:
            from .clientx import props_size

            size = plen + props_size(
                properties, message_id, correlation_id, content_type, content_encoding, component
            )
            if size > D2C_MAX:
                raise ConfigError(
                    "message too large: %d bytes, IoT Hub accepts at most %d" % (size, D2C_MAX)
                )
        s = self._s
        if qos == 0:
            if not self.is_connected:
                raise ConnectionLost("not connected (QoS 0 messages are not queued)")
            s.publish(topic, payload)
            return None
        if not self.is_connected and not self.auto_reconnect:
            raise ConnectionLost("not connected (auto_reconnect is off: nothing was queued)")
        ob = self._outbox
        n = mqtt.publish_size(len(topic), plen, 1)
        off = ob.reserve(n)
        if off < 0:
            if n > len(ob.buf):
                from .clientx import send_unqueued

                return send_unqueued(self, topic, payload, n, block, timeout_ms)
            raise IoTHubError(
                "the offline queue is full (%d messages, policy %s)" % (len(ob), ob.policy)
            )
        pid = s.next_pid()
        buf = ob.buf
        i = mqtt.encode_publish_header(buf, topic, plen, 1, pid, False, off)
        buf[i : i + plen] = payload
        if self.is_connected:
            ob.commit(pid, off, n, ticks_ms())
            try:
                s.write_from(buf, off, n)
            except ConnectionLost as e:
                self._lost(e)
        else:
            ob.commit(pid, off, n)
        if block:
            self._await(pid, timeout_ms)
        return pid

    def _await(self, pid, timeout_ms):
        timeout_ms = self._timeout(timeout_ms)
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while pid == self._direct or self._outbox.has(pid):
            if self._lc.closed:
                raise ConnectionLost(
                    "disconnect() was called: message %d stays queued until connect()" % pid
                )
            if pid == self._direct and not self.is_connected:
                raise ConnectionLost(
                    "the link failed before the PUBACK of message %d, which is larger than "
                    "queue_bytes and was not queued: send it again" % pid
                )
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                if pid == self._direct:
                    raise Timeout("no PUBACK for message %d within %d ms" % (pid, timeout_ms))
                raise Timeout(
                    "no PUBACK for message %d within %d ms (it stays queued)" % (pid, timeout_ms)
                )
            if self._step(min(left, 1000)) == _STOP:
                # auth_failed, or the link failed with auto_reconnect off: waiting longer
                # cannot help (the message is delivered after the next connect())
                raise ConnectionLost("%s: message %d stays queued" % (self._lc.why, pid))

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

    # ---- subscriptions, twin -------------------------------------------------------

    def get_twin(self, timeout_ms=None):
        """The twin document {"desired": {...}, "reported": {...}}."""
        return self._twin().get(timeout_ms)

    def update_reported(self, patch, timeout_ms=None):
        """PATCH reported properties (None deletes a member). Returns the new version."""
        return self._twin().update_reported(patch, timeout_ms)

    # Plug and Play: thin entries into iothub/pnp.py (loaded on first use).

    def report_properties(self, properties, component=None, timeout_ms=None):
        """Report properties (a dict; of a component: wrapped with "__t":"c"), or send a
        pnp.Patch with several properties, components and acks. Returns the new version."""
        from .pnp import report_properties

        return report_properties(self._twin(), properties, component, timeout_ms)

    def ack_writable(
        self, name, value, version, status=200, description=None, component=None, timeout_ms=None
    ):
        """Acknowledge a writable property ({"ac", "av", "ad", "value"}) at the desired
        version it answers. Returns the new reported version."""
        from .pnp import Patch, report_properties

        patch = Patch().ack(name, value, version, status, description, component)
        return report_properties(self._twin(), patch, None, timeout_ms)

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
            try:
                fn(kind, detail)
            except Exception as e:
                self._log_line(0, "on_error raised %r" % (e,))

    def _on_puback(self, pid):
        if pid == self._direct:
            self._direct = 0
        else:
            self._outbox.ack(pid)

    # ---- the loop ------------------------------------------------------------------

    def poll(self, timeout_ms=0):
        """Process incoming packets for up to timeout_ms; send PINGREQ on schedule; renew
        the SAS token and reconnect when due. Never blocks longer than timeout_ms (plus one
        bounded connection attempt when a reconnect is due)."""
        if timeout_ms is None:
            timeout_ms = 0
        elif not isinstance(timeout_ms, int):
            raise ConfigError("poll timeout_ms must be an int (milliseconds)")
        deadline = ticks_add(ticks_ms(), max(timeout_ms, 0))
        while True:
            left = max(ticks_diff(deadline, ticks_ms()), 0)
            if self._step(left) == _STOP:  # nothing to do until the application acts
                sleep_ms(min(left, 1000))
            if ticks_diff(deadline, ticks_ms()) <= 0:
                return

    def _step(self, timeout_ms):
        """One turn of the loop: what the lifecycle core says is due (a reconnect, a token
        renewal, a twin re-sync, dropping a dead link), else one read. Returns the action."""
        lc = self._lc
        a = lc.next(ticks_ms(), self._outbox.oldest_sent())
        if a != _WAIT:
            from .clientx import act

            act(self, a, timeout_ms)
            return a
        if not self.is_connected:
            if lc.state == CONNECTED:  # the link died under a call: back off first
                self._lost(ConnectionLost("link closed"))
            else:
                sleep_ms(min(timeout_ms, lc.wait, 1000))
            return a
        try:
            self._s.pump(min(timeout_ms, lc.wait))
        except (ConnectionLost, ProtocolError, Timeout) as e:
            self._lost(e)
            if not self.auto_reconnect:
                raise
        except MemoryError:
            # Out of memory while receiving: the link is given up and retried after the
            # backoff, like any transient failure (its buffers are freed meanwhile).
            self._lost(ConnectionLost("out of memory while receiving"))
            if not self.auto_reconnect:
                raise ConnectionLost("out of memory while receiving")
        return a
