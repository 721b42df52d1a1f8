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
# RAM: a telemetry-only client loads only this module, session, transport, mqtt, outbox,
# topics, sas, clock and errors. Twin, C2D/method routing, JSON, backoff and the TLS
# profile code load when first used; the TLS profile and connection-string code are
# unloaded again once the context is made. The send path allocates nothing for a bytes
# payload whose properties equal the previous send's: the encoded topic is cached and
# the PUBLISH is encoded straight into the outbox ring, from which it is written.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import sys

from . import mqtt, topics
from .clock import sleep_ms, ticks_add, ticks_diff, ticks_ms
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    IoTHubError,
    ProtocolError,
    Timeout,
)
from .outbox import Outbox
from .session import Session

D2C_MAX = const(262144)  # IoT Hub D2C limit: body + property names and values
MAX_KEEPALIVE = const(1177)  # hub timeout is 1.5 x keepalive, capped at 1767 s
_RENEW_PERCENT = const(80)  # renew the SAS token at 80 % of its lifetime (C SDK)
_TICKS_SPAN = const(0x1FFFFFFF)  # longest span (ms) ticks_diff measures on every port

# Connection states reported to on_connection_state(state, detail)
CONNECTED = "connected"
DISCONNECTED = "disconnected"
RETRYING = "retrying"
AUTH_FAILED = "auth_failed"

_BUFFERS = (bytes, bytearray, memoryview)  # built once: a literal tuple allocates per call


def _unload(*names):
    # Drop package modules needed only to build something (the object built keeps no
    # reference to them): their bytecode is freed at the next collection.
    pkg = sys.modules.get("iothub")
    for n in names:
        if sys.modules.pop("iothub." + n, None) is not None and pkg is not None:
            try:
                delattr(pkg, n)
            except AttributeError:
                pass


def _positive(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError("%s must be a positive int (milliseconds), got %r" % (what, v))
    return v


class DeviceClient:
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
        queue_bytes=4096,
        queue_policy="drop-oldest",
        ssl_context=None,
        log=None,
    ):
        if not hostname or not device_id:
            raise ConfigError("hostname and device_id are required")
        if not isinstance(keepalive, int) or not 0 < keepalive <= MAX_KEEPALIVE:
            raise ConfigError(
                "keepalive must be 1..%d s (IoT Hub limit), got %r" % (MAX_KEEPALIVE, keepalive)
            )
        if not isinstance(sas_ttl, int) or sas_ttl < 10:
            raise ConfigError("sas_ttl must be an int of at least 10 s, got %r" % (sas_ttl,))
        self.hostname = hostname
        self.device_id = device_id
        self.module_id = module_id
        # Checked now (a "/" in an id would break every topic) and kept: built once.
        self._cid = topics.client_id(device_id, module_id)
        self._user = topics.username(hostname, device_id, module_id, model_id)
        self.host = host or hostname
        self.port = port
        self.model_id = model_id
        self.keepalive = keepalive
        self.sas_ttl = sas_ttl
        self.clean_session = clean_session
        self.timeout_ms = _positive(timeout_ms, "timeout_ms")
        self.auto_reconnect = auto_reconnect
        self._tls_profile = tls
        self._roots = roots
        self._mfl = max_fragment_length
        self._log = log
        self._ctx = None
        self._tlsinfo = None
        if ssl_context is not None:
            self._use_context(ssl_context)
        self._set_credentials(shared_access_key, shared_access_key_name, cert, key)

        self._s = Session(txbuf, max_packet)
        self._s.on_publish = self._on_publish
        self._s.on_puback = self._on_puback
        self._outbox = Outbox(queue_size, queue_policy, queue_bytes)
        self._s.pid_in_use = self._pid_in_use
        self._direct = 0  # packet id of an unqueued (larger than the ring) message in flight
        self._tkey = None  # what the cached telemetry topic was built from
        self._topic = None
        self._renew_at = None  # tick count when the SAS token is due for renewal
        self._renew_unix = 0
        self._handlers = {}
        self._tw = None  # twin state (iothub.twin), made on first use
        self._state = DISCONNECTED
        self._retry_at = None
        self._closed = False
        self._backoff = backoff  # iothub.backoff.Backoff() made at the first failure
        self.on_connection_state = None
        self.stats = {"connects": 0, "reconnects": 0, "renewals": 0, "redelivered": 0}

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, connection_string, **kw):
        from .connstr import parse_connection_string

        cs = parse_connection_string(connection_string)
        _unload("connstr")
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

    def _use_context(self, ctx):
        # An application's own context is accepted only if it verifies the server.
        try:
            import tls
        except ImportError:
            tls = None
        want = getattr(tls, "CERT_REQUIRED", 2)
        if getattr(ctx, "verify_mode", None) != want:
            raise ConfigError(
                "ssl_context must verify the hub's certificate (verify_mode CERT_REQUIRED); "
                "iothub never connects without verification"
            )
        self._ctx = ctx
        self._tlsinfo = getattr(ctx, "iothub_info", None)
        self._owned = False

    def _set_credentials(self, sak, sak_name, cert, key):
        if sak is not None and cert is not None:
            raise ConfigError("give either a shared access key or an X.509 certificate, not both")
        if sak is None and cert is None and self._ctx is None:
            raise ConfigError(
                "no credentials: give a shared access key or an X.509 certificate and key"
            )
        if isinstance(sak, str):
            from .sas import decode_key

            sak = decode_key(sak)
        self._key = sak
        self._key_name = sak_name
        self._cert = cert
        self._pkey = key
        if cert is not None or self._ctx is None or self._owned:
            self._ctx = None  # rebuilt at the next connect with the new credentials
            self._owned = True

    def update_credentials(
        self, *, connection_string=None, shared_access_key=None, cert=None, key=None
    ):
        """Replace the credentials of a live client; it reconnects with them."""
        if connection_string is not None:
            from .connstr import parse_connection_string

            cs = parse_connection_string(connection_string)
            _unload("connstr")
            if cs["HostName"] != self.hostname or cs["DeviceId"] != self.device_id:
                raise ConfigError("the new connection string is for another hub or device")
            shared_access_key = cs.get("SharedAccessKey")
        self._set_credentials(shared_access_key, self._key_name, cert, key)
        self._log_line(1, "credentials replaced; reconnecting")
        if self._state == AUTH_FAILED:
            self._state = DISCONNECTED
        if self._backoff is not None:
            self._backoff.reset()
        self._retry_at = ticks_ms()
        if self._s.is_open:
            self._drop("credentials changed", clean=True)

    # ---- handlers (setting one subscribes to its topic) ---------------------------

    def _handler_prop(name):  # noqa: N805 - class-body helper
        def get(self):
            return self._handlers.get(name)

        def set_(self, fn):
            self._handlers[name] = fn
            if name == "desired" and fn is not None:
                self._twin()
            if fn is not None and self.is_connected:
                self._subscribe(self._filters(name))

        return property(get, set_)

    on_message = _handler_prop("message")
    on_method = _handler_prop("method")
    on_desired = _handler_prop("desired")
    del _handler_prop

    def _filters(self, only=None):
        """Topic filters for the handlers set (or for the one named), [] when none."""
        h = self._handlers
        tw = self._tw
        want_twin = only == "twin" or h.get("desired") or (tw is not None and tw.want)
        if not (h.get("message") or h.get("method") or want_twin):
            return []
        from . import routes

        f = []
        if only in (None, "message") and h.get("message"):
            if self.module_id:
                f.append(routes.module_inputs_subscribe_topic(self.device_id, self.module_id))
            else:
                f.append(routes.c2d_subscribe_topic(self.device_id))
        if only in (None, "method") and h.get("method"):
            f.append(routes.METHODS_SUB)
        if only in (None, "desired", "twin") and want_twin:
            f.append(routes.TWIN_RES_SUB)
            f.append(routes.TWIN_DESIRED_SUB)
        return f

    def _twin(self):
        if self._tw is None:
            from .twin import Twin

            self._tw = Twin(self)
        return self._tw

    # ---- connection ----------------------------------------------------------------

    @property
    def is_connected(self):
        return self._state == CONNECTED and self._s.is_open

    @property
    def state(self):
        return self._state

    @property
    def uses_x509(self):
        return self._cert is not None

    def tls_info(self):
        """Negotiated suite and version, and what the context was configured with."""
        return {"cipher": self._s.link.cipher(), "configured": self._tlsinfo}

    def _context(self):
        if self._ctx is None:
            from .tlsprofile import configure

            self._ctx, self._tlsinfo = configure(
                self._tls_profile, self._roots, self._mfl, False, self._cert, self._pkey, True
            )
            self._owned = True
            # The plain firmware context keeps nothing of these modules alive.
            _unload("tlsprofile", "roots", "pem")
        return self._ctx

    def _password(self):
        if self._cert is not None:
            self._renew_at = None
            return None
        from . import sas
        from .clock import require_valid_clock, unix_time

        now = require_valid_clock(unix_time())
        ttl = self.sas_ttl
        token = sas.sas_token(
            sas.device_resource_uri(self.hostname, self.device_id, self.module_id),
            self._key,
            now + ttl,
            self._key_name,
        )
        # Renewal is timed with ticks: the hot path never reads the wall clock (a float,
        # or a big int on 32-bit boards, allocates).
        self._renew_unix = now + ttl * _RENEW_PERCENT // 100
        self._renew_at = ticks_add(ticks_ms(), min(ttl * _RENEW_PERCENT * 10, _TICKS_SPAN))
        return token

    def _timeout(self, timeout_ms):
        return self.timeout_ms if timeout_ms is None else _positive(timeout_ms, "timeout_ms")

    def connect(self, timeout_ms=None):
        """Connect (DNS, TCP, TLS, CONNECT/CONNACK, subscriptions). Raises on failure."""
        deadline = ticks_add(ticks_ms(), self._timeout(timeout_ms))
        self._closed = False
        password = self._password()
        ctx = self._context()
        self._log_line(1, "connecting to %s:%d as %s" % (self.host, self.port, self._cid))
        session_present = self._s.open(
            self.host,
            self.port,
            ctx,
            self.hostname,
            self._cid,
            self._user,
            password,
            self.keepalive,
            self.clean_session,
            deadline,
            self._tlsinfo,
        )
        password = None
        try:
            self._state = CONNECTED
            self.stats["connects"] += 1
            filters = self._filters()
            if filters:
                self._s.subscribe(filters, deadline)
            self._retransmit()
        except BaseException:
            self._s.close()
            self._state = DISCONNECTED
            raise
        if self._backoff is not None:
            self._backoff.reset()
        self._retry_at = None
        self._log_line(
            1, "connected (session present: %s, %s)" % (session_present, self._s.link.cipher())
        )
        self._notify(CONNECTED, None)
        if self._handlers.get("desired"):
            self._twin().resync()
        return session_present

    def disconnect(self):
        """Send DISCONNECT and close. Queued messages stay queued."""
        self._s.close(clean=True)
        self._state = DISCONNECTED
        self._retry_at = None
        self._closed = True
        self._notify(DISCONNECTED, "closed by the application")

    close = disconnect

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
        if self._backoff is None:
            from .backoff import Backoff

            self._backoff = Backoff()
        delay = self._backoff.next_delay_ms()
        self._retry_at = ticks_add(ticks_ms(), delay)
        self._state = RETRYING
        self._log_line(1, "retrying in %d ms" % delay)
        self._notify(RETRYING, delay)

    # ---- sending -------------------------------------------------------------------

    def _publish(self, topic, payload, qos=0, pid=0, dup=False):
        self._s.publish(topic, payload, qos, pid, dup)

    def _telemetry_topic(self, props, mid, cid, ct, ce):
        # The encoded topic of the previous send is reused when nothing it was built from
        # changed: compared by value against a private snapshot, so a dict the
        # application mutates between sends is noticed.
        k = self._tkey
        if (
            k is not None
            and k[1] == mid
            and k[2] == cid
            and k[3] == ct
            and k[4] == ce
            and k[0] == props
        ):
            return self._topic
        t = topics.telemetry_topic(
            self.device_id, self.module_id, props, mid, cid, None, ct, ce
        ).encode()
        if isinstance(props, dict):
            snap = dict(props)
        elif props is None:
            snap = None
        else:
            snap = [p[:] for p in props]
        self._tkey = [snap, mid, cid, ct, ce]
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
    ):
        """Send telemetry. QoS 1 returns once the hub's PUBACK arrives.

        The message is copied into the outbox ring (queue_bytes) as an encoded PUBLISH; on
        Timeout it stays queued and is delivered after reconnect: do not send it again.
        With block=False it is queued and sent by poll(). A message larger than the ring
        is never queued: it is sent straight from the payload while connected, and send()
        raises ConnectionLost if the link fails before its PUBACK (send it again).
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
            properties, message_id, correlation_id, content_type, content_encoding
        )
        plen = len(payload)
        # The encoded topic is never shorter than the property names and values it carries,
        # so the exact count (which allocates) is needed only near the limit.
        if plen + len(topic) > D2C_MAX:
            size = plen + _props_size(
                properties, message_id, correlation_id, content_type, content_encoding
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
                return self._send_unqueued(topic, payload, n, block, timeout_ms)
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
            if self._closed:
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
            self._step(min(left, 1000))

    def _send_unqueued(self, topic, payload, n, block, timeout_ms):
        if not block:
            raise ConfigError(
                "a message of %d bytes does not fit the queue (queue_bytes=%d): send it with "
                "block=True while connected, or give the client a larger queue_bytes"
                % (n, len(self._outbox.buf))
            )
        if not self.is_connected:
            raise ConnectionLost(
                "not connected, and a message of %d bytes is larger than the queue "
                "(queue_bytes=%d): nothing was queued" % (n, len(self._outbox.buf))
            )
        pid = self._s.next_pid()
        self._direct = pid
        try:
            try:
                self._publish(topic, payload, 1, pid)
            except ConnectionLost as e:
                self._lost(e)
            self._await(pid, timeout_ms)
        finally:
            self._direct = 0
        return pid

    def _pid_in_use(self, pid):
        return pid == self._direct or self._outbox.has(pid)

    def _retransmit(self):
        # After (re)connect: everything still unacknowledged goes out again in order,
        # each with the DUP flag set in place if it was written before.
        self.stats["redelivered"] += self._outbox.redeliver(self._s.write_from, ticks_ms())

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

    def _subscribe(self, filters, deadline=None):
        if deadline is None:
            deadline = ticks_add(ticks_ms(), self.timeout_ms)
        self._s.subscribe(filters, deadline)
        self._log_line(2, "subscribed %s" % (filters,))

    def get_twin(self, timeout_ms=None):
        """The twin document {"desired": {...}, "reported": {...}}."""
        return self._twin().get(timeout_ms)

    def update_reported(self, patch, timeout_ms=None):
        """PATCH reported properties (None deletes a member). Returns the new version."""
        return self._twin().update_reported(patch, timeout_ms)

    def _on_publish(self, pkt):
        from .inbound import route

        route(self, pkt)

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
        if not isinstance(timeout_ms, int):
            raise ConfigError("poll timeout_ms must be an int (milliseconds)")
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
        if self._renew_at is not None and self._renew_due():
            self._renew()
            return
        tw = self._tw
        if tw is not None and tw.resync_at is not None:
            if ticks_diff(ticks_ms(), tw.resync_at) >= 0:
                tw.resync()
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

    def _renew_due(self):
        if ticks_diff(ticks_ms(), self._renew_at) < 0:
            return False
        from .clock import unix_time

        left = self._renew_unix - unix_time()
        if left > 0:  # a token longer than the ticks span: wait on
            self._renew_at = ticks_add(ticks_ms(), min(left * 1000, _TICKS_SPAN))
            return False
        return True

    def _renew(self):
        # MQTT 3.1.1 has no re-authentication: reconnect with a fresh token. The session
        # (clean_session=False) and the outbox survive; subscriptions are renewed anyway.
        self.stats["renewals"] += 1
        self._drop("SAS token renewal", clean=True)
        if not self._reconnect_now() and not self.auto_reconnect:
            raise ConnectionLost("SAS token renewal: reconnect failed")

    def _lost(self, err):
        self._drop(str(err))
        if self.auto_reconnect and not self._closed and self._state != AUTH_FAILED:
            self._schedule_retry()


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
