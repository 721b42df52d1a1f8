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
# RAM: between connections a telemetry-only client keeps this module, clientbase, session,
# transport, lifecycle, mqtt, outbox, clock and errors. What runs once per connection
# (clientx: token, TLS context, CONNECT, subscriptions, with sas, tlsconf, walltime and
# topics) is loaded by connect() and unloaded after it (clientx.connected); construction
# (clientinit, connstr) is unloaded once the client is made; topics comes back to build a
# telemetry topic with properties (dropped after the first, kept from the second, different
# one); the rarely called API (update_credentials, disconnect, tls_info) is in clientrare,
# loaded for each such call (ClientBase.__getattr__); setting a handler loads handlers for
# that call; twin, C2D/method routing, JSON (and str/dict payloads) and backoff load when
# first used. The send path allocates nothing for a bytes payload whose properties equal the
# previous send's: the encoded topic is cached and the PUBLISH is encoded straight into
# the outbox ring, from which it is written.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import gc

from .clientbase import _BUFFERS, D2C_MAX, ClientBase  # noqa: F401 - D2C_MAX: the public figure
from .clock import sleep_ms, ticks_add, ticks_diff, ticks_ms
from .errors import ConnectionLost, ProtocolError, Timeout, explained

_WAIT = const(0)  # lifecycle.WAIT
_STOP = const(6)  # lifecycle.STOP
del const  # (inlined above: one global less in a resident module)


class DeviceClient(ClientBase):
    # update_credentials, disconnect/close, get_twin, update_reported, report_properties,
    # ack_writable and tls_info are in iothub.clientrare (ClientBase's __getattr__),
    # loaded for each call.

    # ---- connection ----------------------------------------------------------------

    def connect(self, timeout_ms=None):
        """Connect (DNS, TCP, TLS, CONNECT/CONNACK, subscriptions). Raises on failure."""
        deadline = ticks_add(ticks_ms(), self._timeout(timeout_ms))
        from .clientx import connect_blocking  # (not resident: unloaded after connect)

        session_present = connect_blocking(self, deadline)
        # The last reference to clientx: its code is freed before the twin re-sync, whose
        # first PUBLISH loads inbound (without this, the peak of a connect).
        connect_blocking = None
        h = self._handlers
        if h.get("desired") or h.get("writable"):
            # Collect first: the connection-time code just dropped is freed, and the twin's
            # code (and inbound, with the first response) loads into its place.
            gc.collect()
            from .inbound import twin_of
            from .twin import resync

            resync(twin_of(self), max(ticks_diff(deadline, ticks_ms()), 1))
        return session_present

    def _lost(self, err):
        # Collect first: what the outage loads for good (clientrun, backoff, and the qstr
        # pool they may grow) then goes into the lowest free blocks, not between garbage
        # that the outage's sends leave behind (a Pico W's handshake needs one 8 KB block).
        gc.collect()
        from .clientrun import lost

        lost(self, err)

    # ---- sending -------------------------------------------------------------------

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
        if not isinstance(payload, _BUFFERS):
            from .jsonc import body

            payload, content_type, content_encoding = body(payload, content_type, content_encoding)
        topic = self._d2c(
            payload,
            qos,
            properties,
            content_type,
            content_encoding,
            message_id,
            correlation_id,
            component,
        )
        s = self._s
        if qos == 0:
            if not self.is_connected:
                raise explained("reports", "failure", 0, ())  # (the texts are not resident)
            s.publish(topic, payload)
            return None
        if not self.is_connected and not self.auto_reconnect:
            raise explained("reports", "failure", 1, ())
        off = self._enqueue(topic, payload)
        n = self._qn
        if off < 0:
            from .clientrun import send_unqueued

            return send_unqueued(self, topic, payload, n, block, timeout_ms)
        pid = s._pid  # the id _enqueue() gave it
        ob = self._outbox
        if self.is_connected:
            ob.commit(pid, off, n, ticks_ms())
            try:
                s.write_from(ob.buf, off, n)
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
                raise explained("reports", "failure", 2, (pid,))
            if pid == self._direct and not self.is_connected:
                raise ConnectionLost(
                    "the link failed before the PUBACK of message %d, which is larger than "
                    "queue_bytes and was not queued: send it again" % pid
                )
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise Timeout(
                    "no PUBACK for message %d within %d ms%s"
                    % (pid, timeout_ms, "" if pid == self._direct else " (it stays queued)")
                )
            if self._step(min(left, 1000)) == _STOP:
                # auth_failed, or the link failed with auto_reconnect off: waiting longer
                # cannot help (the message is delivered after the next connect())
                raise ConnectionLost("%s: message %d stays queued" % (self._lc.why, pid))

    # ---- subscriptions, twin -------------------------------------------------------

    # Plug and Play: thin entries into iothub/pnp.py (loaded on first use).

    # ---- the loop ------------------------------------------------------------------

    def poll(self, timeout_ms=0):
        """Process incoming packets for up to timeout_ms; send PINGREQ on schedule; renew
        the SAS token and reconnect when due. Never blocks longer than timeout_ms (plus one
        bounded connection attempt when a reconnect is due)."""
        if timeout_ms is None:
            timeout_ms = 0
        elif not isinstance(timeout_ms, int):
            raise explained("reports", "error", 1, ())  # (the text is not resident)
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
            from .clientrun import act

            act(self, a, timeout_ms)
            return a
        if not self.is_connected:
            if lc.state == "connected":  # (lifecycle.CONNECTED) the link died under a call
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
