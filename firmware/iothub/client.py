# DeviceClient: the adapter that owns the link, the clock and retries, and drives the
# pure core (topics, sas, mqtt). Blocking API with callbacks; every wait is bounded.
#
# What the client does on its own: keepalive pings and dead-link detection, PUBACK
# tracking, SAS renewal (reconnect with a fresh token once 80 % of its lifetime has
# passed, as the Azure C SDK does), reconnect with exponential backoff and jitter,
# resubscribe and twin re-sync after reconnect, redelivery of unacknowledged QoS 1
# messages (DUP flag), and answering methods. What the application decides: its
# handlers, what to send, and how long a call may wait.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from . import credentials, sas, topics
from .clock import sleep_ms, ticks_add, ticks_diff, ticks_ms, unix_time
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    IoTHubError,
    ProtocolError,
    Timeout,
)
from .inbound import Inbound, Message  # noqa: F401 - Message re-exported
from .jsonc import dumps as _dumps
from .outbox import Outbox
from .session import Session
from .twin import Twin

D2C_MAX = const(262144)  # IoT Hub D2C limit: body + property names and values
MAX_KEEPALIVE = const(1177)  # hub timeout is 1.5 x keepalive, capped at 1767 s
_RENEW_PERCENT = const(80)  # renew the SAS token at 80 % of its lifetime (C SDK)

# Connection states reported to on_connection_state(state, detail)
CONNECTED = "connected"
DISCONNECTED = "disconnected"
RETRYING = "retrying"
AUTH_FAILED = "auth_failed"


class DeviceClient(Twin, Inbound):
    def __init__(
        self,
        hostname,
        device_id,
        *,
        module_id=None,
        shared_access_key=None,
        shared_access_key_name=None,
        cert=None,
        key=None,
        tls="rsa",
        roots=None,
        max_fragment_length=None,
        host=None,
        port=8883,
        model_id=None,
        keepalive=240,
        sas_ttl=3600,
        clean_session=False,
        timeout_ms=30000,
        max_packet=32768,
        txbuf=1024,
        auto_reconnect=True,
        backoff=None,
        queue_size=16,
        queue_policy="drop-oldest",
        ssl_context=None,
        log=None,
    ):
        if not hostname or not device_id:
            raise ConfigError("hostname and device_id are required")
        if not 0 < keepalive <= MAX_KEEPALIVE:
            raise ConfigError(
                "keepalive must be 1..%d s (IoT Hub limit), got %r" % (MAX_KEEPALIVE, keepalive)
            )
        if sas_ttl < 10:
            raise ConfigError("sas_ttl must be at least 10 s, got %r" % (sas_ttl,))
        self.hostname = hostname
        self.device_id = device_id
        self.module_id = module_id
        self.host = host or hostname
        self.port = port
        self.model_id = model_id
        self.keepalive = keepalive
        self.sas_ttl = sas_ttl
        self.clean_session = clean_session
        self.timeout_ms = timeout_ms
        self.auto_reconnect = auto_reconnect
        self._tls_profile = tls
        self._roots = roots
        self._mfl = max_fragment_length
        self._ctx = ssl_context
        self._log = log
        self._set_credentials(shared_access_key, shared_access_key_name, cert, key)

        self._s = Session(txbuf, max_packet)
        self._s.on_publish = self._on_publish
        self._s.on_puback = self._on_puback
        self._outbox = Outbox(queue_size, queue_policy)
        self._s.pid_in_use = self._outbox.has
        self._rid = 0
        self._replies = {}
        self._token_expiry = 0
        self._token_issued = 0
        self._desired_version = None
        self._want_twin = False
        self._handlers = {}
        self._state = DISCONNECTED
        self._retry_at = None
        self._resync_at = None
        self._closed = False
        if backoff is None:
            from .backoff import Backoff

            backoff = Backoff()
        self._backoff = backoff
        self.on_connection_state = None
        self.stats = {"connects": 0, "reconnects": 0, "renewals": 0, "redelivered": 0}

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, connection_string, **kw):
        from .connstr import parse_connection_string

        cs = parse_connection_string(connection_string)
        if cs.get("x509"):
            raise ConfigError(
                "this connection string says x509=true: use DeviceClient.from_x509(...) "
                "with the device certificate and key"
            )
        if cs.get("GatewayHostName") and "host" not in kw:
            kw["host"] = cs["GatewayHostName"]
        return cls(
            cs["HostName"],
            cs["DeviceId"],
            module_id=cs.get("ModuleId"),
            shared_access_key=cs["SharedAccessKey"],
            shared_access_key_name=cs.get("SharedAccessKeyName"),
            **kw,
        )

    @classmethod
    def from_x509(cls, hostname, device_id, cert, key, *, module_id=None, **kw):
        if cert is None or key is None:
            raise ConfigError("from_x509 needs both the device certificate and its private key")
        return cls(hostname, device_id, module_id=module_id, cert=cert, key=key, **kw)

    def _set_credentials(self, sak, sak_name, cert, key):
        if sak is not None and cert is not None:
            raise ConfigError("give either a shared access key or an X.509 certificate, not both")
        if sak is None and cert is None and self._ctx is None:
            raise ConfigError(
                "no credentials: give a shared access key or an X.509 certificate and key"
            )
        self._key = sas.decode_key(sak) if isinstance(sak, str) else sak
        self._key_name = sak_name
        self._cert = cert
        self._pkey = key
        if cert is not None or self._ctx is None or credentials.is_own(self._ctx):
            self._ctx = None  # rebuilt at the next connect with the new credentials

    def update_credentials(
        self, *, connection_string=None, shared_access_key=None, cert=None, key=None
    ):
        """Replace the credentials of a live client; it reconnects with them."""
        if connection_string is not None:
            from .connstr import parse_connection_string

            cs = parse_connection_string(connection_string)
            if cs["HostName"] != self.hostname or cs["DeviceId"] != self.device_id:
                raise ConfigError("the new connection string is for another hub or device")
            shared_access_key = cs.get("SharedAccessKey")
        self._set_credentials(shared_access_key, self._key_name, cert, key)
        self._log_line(1, "credentials replaced; reconnecting")
        if self._state == AUTH_FAILED:
            self._state = DISCONNECTED
        self._backoff.reset()
        self._retry_at = ticks_ms()
        if self._s.is_open:
            self._drop("credentials changed", clean=True)

    @property
    def uses_x509(self):
        return self._cert is not None

    # ---- handlers (setting one subscribes to its topic, None unsubscribes) ----------

    def _handler_prop(name, sub, unsub=None):  # noqa: N805 - class-body helper
        def get(self):
            return self._handlers.get(name)

        def set_(self, fn):
            had = self._handlers.get(name) is not None
            self._handlers[name] = fn
            if self.is_connected:
                if fn is not None:
                    self._subscribe(sub(self))
                elif had:
                    self._unsubscribe((unsub or sub)(self))

        return property(get, set_)

    on_message = _handler_prop("message", lambda s: s._c2d_filters())
    on_method = _handler_prop("method", lambda s: [topics.METHODS_SUB])
    # twin responses stay subscribed while get_twin()/update_reported() use them
    on_desired = _handler_prop(
        "desired",
        lambda s: s._twin_filters(),
        lambda s: [topics.TWIN_DESIRED_SUB] if s._want_twin else s._twin_filters(),
    )
    del _handler_prop

    def _c2d_filters(self):
        if self.module_id:
            return [topics.module_inputs_subscribe_topic(self.device_id, self.module_id)]
        return [topics.c2d_subscribe_topic(self.device_id)]

    # ---- connection ----------------------------------------------------------------

    @property
    def is_connected(self):
        return self._state == CONNECTED and self._s.is_open

    @property
    def state(self):
        return self._state

    def tls_info(self):
        """Negotiated suite and version (and what the context requested)."""
        info = {"cipher": self._s.link.cipher()}
        ctx = self._ctx
        if ctx is not None:
            info["configured"] = getattr(ctx, "iothub_info", None)
        return info

    def _context(self):
        if self._ctx is None:
            self._ctx = credentials.own_context(
                self._tls_profile, self._roots, self._mfl, self._cert, self._pkey, self._log
            )
        return self._ctx

    def _password(self):
        if self._cert is not None:
            self._token_expiry = 0
            return None
        uri = sas.device_resource_uri(self.hostname, self.device_id, self.module_id)
        token, self._token_issued, self._token_expiry = credentials.sas_password(
            uri, self._key, self.sas_ttl, self._key_name
        )
        return token

    def connect(self, timeout_ms=None):
        """Connect (DNS, TCP, TLS, CONNECT/CONNACK, subscriptions). Raises on failure."""
        if timeout_ms is None:
            timeout_ms = self.timeout_ms
        deadline = ticks_add(ticks_ms(), timeout_ms)
        self._closed = False
        password = self._password()
        ctx = self._context()
        self._log_line(1, "connecting to %s:%d as %s" % (self.host, self.port, self._client_id()))
        session_present = self._s.open(
            self.host,
            self.port,
            ctx,
            self.hostname,
            self._client_id(),
            topics.username(self.hostname, self.device_id, self.module_id, self.model_id),
            password,
            self.keepalive,
            self.clean_session,
            deadline,
        )
        password = None
        try:
            self._state = CONNECTED
            self.stats["connects"] += 1
            filters = []
            if self._handlers.get("message"):
                filters += self._c2d_filters()
            if self._handlers.get("method"):
                filters.append(topics.METHODS_SUB)
            if self._handlers.get("desired") or self._want_twin:
                filters += self._twin_filters()
            if filters:
                self._s.subscribe(filters, deadline)
            self._retransmit()
        except BaseException:
            self._s.close()
            self._state = DISCONNECTED
            raise
        self._backoff.reset()
        self._retry_at = None
        self._log_line(
            1, "connected (session present: %s, %s)" % (session_present, self._s.link.cipher())
        )
        self._notify(CONNECTED, None)
        if self._handlers.get("desired"):
            self._resync_twin()
        return session_present

    def disconnect(self):
        """Send DISCONNECT and close. Queued messages stay queued."""
        self._s.close(clean=True)
        self._state = DISCONNECTED
        self._retry_at = None
        self._closed = True
        self._notify(DISCONNECTED, "closed by the application")

    close = disconnect

    def _client_id(self):
        return topics.client_id(self.device_id, self.module_id)

    def _drop(self, reason, clean=False):
        self._s.close(clean)
        was = self._state
        if was == CONNECTED:
            self._state = DISCONNECTED
        self._log_line(1, "disconnected: %s" % reason)
        if was == CONNECTED:
            self._notify(DISCONNECTED, reason)

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

    # ---- reconnect (driven by poll) -------------------------------------------------

    def _maybe_reconnect(self):
        """Attempt a connection when one is due. True when connected."""
        if self._closed or self._state == AUTH_FAILED or not self.auto_reconnect:
            return False
        if self._retry_at is not None and ticks_diff(self._retry_at, ticks_ms()) > 0:
            return False
        return self._reconnect_now()

    def _reconnect_now(self):
        self._retry_at = None
        try:
            self.connect()
        except AuthenticationError as e:
            self._state = AUTH_FAILED
            self._log_line(0, str(e) + "; not retrying until the credentials change")
            self._notify(AUTH_FAILED, e.code)
            return False
        except (IoTHubError, OSError, MemoryError) as e:
            # MemoryError: the heap is too fragmented for a handshake right now; the link's
            # buffers are released, so back off and try again rather than end the loop.
            self._state = DISCONNECTED
            why = "out of memory" if isinstance(e, MemoryError) else e
            self._log_line(1, "connect failed: %s" % (why,))
            self._schedule_retry()
            return False
        self.stats["reconnects"] += 1
        return True

    def _schedule_retry(self):
        delay = self._backoff.next_delay_ms()
        self._retry_at = ticks_add(ticks_ms(), delay)
        self._state = RETRYING
        self._log_line(1, "retrying in %d ms" % delay)
        self._notify(RETRYING, delay)

    # ---- sending -------------------------------------------------------------------

    def _publish(self, topic, payload, qos=0, pid=0, dup=False):
        self._s.publish(topic, payload, qos, pid, dup)

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
    ):
        """Send telemetry. QoS 1 returns once the hub's PUBACK arrives.

        On Timeout the message is still queued and will be delivered after reconnect:
        do not send it again. With block=False it is queued and sent by poll().
        The payload is queued by reference, not copied: do not modify a bytearray until
        its message is acknowledged (`queued` drops).
        """
        if qos not in (0, 1):
            raise ConfigError("qos must be 0 or 1 (IoT Hub closes the connection on QoS 2)")
        if isinstance(payload, dict) or isinstance(payload, list):
            payload = _dumps(payload)
            if content_type is None:
                content_type = "application/json"
            if content_encoding is None:
                content_encoding = "utf-8"
        if isinstance(payload, str):
            payload = payload.encode()
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise ConfigError("payload must be bytes, str, dict or list")
        topic = topics.telemetry_topic(
            self.device_id,
            self.module_id,
            properties,
            message_id,
            correlation_id,
            None,
            content_type,
            content_encoding,
        )
        # The encoded topic is never shorter than the property names and values it carries,
        # so the exact count (which allocates) is needed only near the limit.
        size = len(payload) + len(topic)
        if size > D2C_MAX:
            size = len(payload) + _props_size(
                properties, message_id, correlation_id, content_type, content_encoding
            )
        if size > D2C_MAX:
            raise ConfigError(
                "message too large: %d bytes, IoT Hub accepts at most %d" % (size, D2C_MAX)
            )
        if qos == 0:
            if not self.is_connected:
                raise ConnectionLost("not connected (QoS 0 messages are not queued)")
            self._publish(topic, payload)
            return None
        if not self.is_connected and not self.auto_reconnect:
            raise ConnectionLost("not connected (auto_reconnect is off: nothing was queued)")
        pid = self._s.next_pid()
        entry = self._outbox.add(pid, topic, payload)
        if entry is None:
            raise IoTHubError("the offline queue is full (policy %s)" % self._outbox.policy)
        if self.is_connected:
            try:
                self._publish(topic, payload, 1, pid)
                entry[3] = ticks_ms()
            except ConnectionLost as e:
                self._lost(e)
        if not block:
            return pid
        if timeout_ms is None:
            timeout_ms = self.timeout_ms
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while self._outbox.has(pid):
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise Timeout(
                    "no PUBACK for message %d within %d ms (it stays queued)" % (pid, timeout_ms)
                )
            self._step(min(left, 1000))
        return pid

    def _retransmit(self):
        # After (re)connect: everything still unacknowledged goes out again in order.
        for entry in self._outbox.entries():
            pid, topic, payload, sent = entry
            self._publish(topic, payload, 1, pid, dup=sent is not None)
            if sent is not None:
                self.stats["redelivered"] += 1
            entry[3] = ticks_ms()

    @property
    def queued(self):
        """Number of QoS 1 messages not yet acknowledged by the hub."""
        return len(self._outbox)

    @property
    def dropped(self):
        """Messages dropped by the queue policy since start."""
        return self._outbox.dropped

    # ---- subscriptions, twin -------------------------------------------------------

    def _subscribe(self, filters, deadline=None):
        if deadline is None:
            deadline = ticks_add(ticks_ms(), self.timeout_ms)
        self._s.subscribe(filters, deadline)
        self._log_line(2, "subscribed %s" % (filters,))

    def _unsubscribe(self, filters):
        # Not waiting for UNSUBACK: a message the hub sends meanwhile finds no handler (a
        # method gets 404, a C2D message is acknowledged and dropped), as after it.
        from .mqtt import encode_unsubscribe

        s = self._s
        try:
            s.write(encode_unsubscribe(s.tx, s.next_pid(), filters))
        except ConnectionLost as e:
            self._lost(e)
            return
        self._log_line(2, "unsubscribed %s" % (filters,))

    # ---- the loop ------------------------------------------------------------------

    def poll(self, timeout_ms=0):
        """Process incoming packets for up to timeout_ms; send PINGREQ on schedule; renew
        the SAS token and reconnect when due. Never blocks longer than timeout_ms (plus one
        bounded connection attempt when a reconnect is due)."""
        deadline = ticks_add(ticks_ms(), max(timeout_ms, 0))
        while True:
            self._step(max(ticks_diff(deadline, ticks_ms()), 0))
            if ticks_diff(deadline, ticks_ms()) <= 0:
                return

    def _step(self, timeout_ms):
        """One turn of the loop: a reconnect attempt (or a wait for one), or one read."""
        if not self.is_connected:
            if self._state == CONNECTED:  # the link died under a call: back off first
                self._lost(ConnectionLost("link closed"))
            if not self._maybe_reconnect():
                wait = timeout_ms
                if self._retry_at is not None and self.auto_reconnect:
                    wait = min(wait, max(ticks_diff(self._retry_at, ticks_ms()), 0))
                sleep_ms(min(wait, 1000))
            return
        if self._token_expiry and self._renew_due():
            self._renew()
            return
        if self._resync_at is not None and ticks_diff(ticks_ms(), self._resync_at) >= 0:
            self._resync_twin()
        try:
            oldest = self._outbox.oldest_sent()
            if oldest is not None and ticks_diff(ticks_ms(), oldest) > self.timeout_ms:
                # A device that keeps publishing never goes idle, so keepalive pings alone
                # would not notice a hub that stopped answering.
                raise ConnectionLost("no PUBACK for %d ms: dead link" % self.timeout_ms)
            self._s.pump(timeout_ms)
        except (ConnectionLost, ProtocolError, Timeout) as e:
            self._lost(e)
            if not self.auto_reconnect:
                raise

    def _renew(self):
        # MQTT 3.1.1 has no re-authentication: reconnect with a fresh token. The session
        # (clean_session=False) and the outbox survive; subscriptions are renewed anyway.
        self.stats["renewals"] += 1
        self._drop("SAS token renewal", clean=True)
        if not self._reconnect_now() and not self.auto_reconnect:
            raise ConnectionLost("SAS token renewal: reconnect failed")

    def _renew_due(self):
        lifetime = self._token_expiry - self._token_issued
        return unix_time() >= self._token_issued + lifetime * _RENEW_PERCENT // 100

    def _lost(self, err):
        self._drop(str(err))
        if self.auto_reconnect and not self._closed and self._state != AUTH_FAILED:
            self._schedule_retry()

    def _on_puback(self, pid):
        self._outbox.ack(pid)


def _props_size(properties, *values):
    n = 0
    if properties:
        items = properties.items() if isinstance(properties, dict) else properties
        for k, v in items:
            n += len(str(k)) + (len(str(v)) if v is not None else 0)
    for v in values:
        if v:
            n += len(v)
    return n
