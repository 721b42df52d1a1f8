# iothub.aio.DeviceClient: the IoT Hub client for applications built on asyncio. Same
# constructors, options, handlers, outbox and lifecycle rules as the blocking
# iothub.client.DeviceClient (importing this module never loads that one); every wait is an
# await, so sensor, display and network tasks run while the client waits for the hub.
#
# Tasks: connect() starts the lifecycle task, which asks lifecycle.Lifecycle what is due
# (keepalive PINGREQ, dead link, SAS renewal, reconnect with backoff, twin re-sync) and does
# it, and a reader task per connection, which reads and dispatches packets as they arrive
# (PUBACK, C2D, methods, twin). Calls wait on one shared event pulsed after every batch of
# packets and when the link goes down; each waiter rechecks its own condition (its packet
# id left the outbox, its twin reply came), so any number of send() may be in flight.
#
# Writes never block (alink.ALink): what the socket does not take at once is kept in order
# and drained by an await, so a packet is never interleaved with another and the codec,
# session and outbox are the blocking client's. The message is in the outbox ring before
# send() first awaits: a cancelled send() leaves it queued, and it is delivered.
#
# Not supported here: transport="websockets" and proxy= (ConfigError), and coroutine
# on_writable/on_command handlers (plain functions only). DPS: register() (iothub.aprov).
import asyncio
import gc

from . import errors, mqtt
from .alink import ALink, _core, _ioq, check
from .asession import read_once
from .clientbase import _BUFFERS, ClientBase
from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import (
    ConfigError,
    ConnectionLost,
    IoTHubError,
    ProtocolError,
    Timeout,
)
from .lifecycle import AUTH_FAILED, CONNECTED, DISCONNECTED, RETRYING

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# lifecycle's actions (private constants there: inlined, no names kept)
_WAIT = const(0)
_CONNECT = const(1)
_PING = const(2)
_DEAD = const(3)
_RENEW = const(4)
_RESYNC = const(5)
_STOP = const(6)

__all__ = ("DeviceClient", "register")


def _tr():
    # iothub.transitions: what happened, told to the lifecycle core. Loaded when a
    # transition happens and unloaded after connect (as by the blocking client).
    from . import transitions

    return transitions


def _is_coro(r):
    # A coroutine (a generator object in MicroPython) from an `async def` handler.
    return r is not None and hasattr(r, "send") and hasattr(r, "throw")


def _wrapped(name):
    # on_message / on_desired: a coroutine handler runs as its own task.
    def get(self):
        return self._uh.get(name)

    def set_(self, fn):
        self._uh[name] = fn
        errors.explained(
            "handlers",
            "set_handler",
            self,
            name,
            None if fn is None else self._wrap(fn, "on_" + name),
        )

    return property(get, set_)


class DeviceClient(ClientBase):
    def __init__(self, hostname, device_id, **options):
        check()
        t = options.get("transport", "mqtt")
        if t != "mqtt":
            raise ConfigError(
                "iothub.aio speaks MQTT over TLS only; transport=%r needs the blocking "
                "iothub.client.DeviceClient" % (t,)
            )
        if options.get("proxy") is not None:
            raise ConfigError(
                "iothub.aio does not tunnel through an HTTP proxy: use the blocking "
                "iothub.client.DeviceClient for proxy="
            )
        self._uh = {}  # the application's handlers as given (coroutine functions too)
        ClientBase.__init__(self, hostname, device_id, **options)
        self._s.link = ALink()
        # The lifecycle core is session.Session's, set up by clientx.init as the blocking
        # client's: every decision about the connection.
        self._lc.keepalive_ms = self.keepalive * 1000
        self._pulse = asyncio.Event()  # pulsed after packets were dispatched, and on loss
        self._kick = asyncio.Event()  # wakes the lifecycle task early
        self._task = None  # the lifecycle task (connect() .. disconnect())
        self._reader = None  # the reader task of the current connection
        self._napping = None  # when the lifecycle task's nap ends (None: not napping)
        self._soonest = None  # the earliest deadline a waiter waits for
        self._draining = False
        self._gen = 0  # counts _stop(): an opening cancelled by one cleans up only its own

    on_message = _wrapped("message")
    on_desired = _wrapped("desired")

    def update_credentials(
        self, *, connection_string=None, shared_access_key=None, cert=None, key=None
    ):
        """Replace the credentials; the client reconnects with them (an auth_failed client
        tries again at once)."""
        from .clientinit import update_credentials

        update_credentials(self, connection_string, shared_access_key, cert, key)
        self._kick.set()

    # ---- connection ----------------------------------------------------------------

    async def connect(self, timeout_ms=None):
        """Connect (DNS, TCP, TLS, CONNECT/CONNACK, subscriptions) and start the
        background tasks. Returns session_present; raises on failure (nothing retries
        then)."""
        ms = self._timeout(timeout_ms)
        lc = self._lc
        if self._task is not None:  # connected already: start over
            self._stop()
            _tr().close(lc)
        _tr().connecting(lc)
        try:
            sp = await self._open(ms)
        except errors.AuthenticationError as e:
            _tr().failed(lc, ticks_ms(), True)
            self._notify(AUTH_FAILED, e.code)
            raise
        self._connected()
        self._task = asyncio.create_task(self._run())
        return sp

    async def disconnect(self):
        """Send DISCONNECT, close, stop the background tasks. Queued messages stay queued
        (they go out after the next connect())."""
        self._stop()
        _tr().close(self._lc)
        self._notify(DISCONNECTED, "closed by the application")
        self._wake()

    close = disconnect

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.disconnect()

    def _stop(self):
        self._gen += 1
        t = self._task
        self._task = None
        if t is not None and t is not _core.cur_task:
            t.cancel()
        r = self._reader
        self._reader = None
        if r is not None and r is not _core.cur_task:
            r.cancel()
        self._s.close(clean=True)

    async def _open(self, ms):
        try:
            return await asyncio.wait_for_ms(self._opening(), ms)
        except asyncio.TimeoutError:
            self._s.link.close()
            raise Timeout(
                "no connection to %s:%d within %d ms (TCP, TLS handshake or CONNACK)"
                % (self.host, self.port, ms)
            )

    async def _opening(self):
        from . import clientx
        from .asession import open_session, subscribe

        s = self._s
        link = s.link
        lc = self._lc
        gen = self._gen
        pw = clientx.password(self)  # (a first connect drops what made it)
        ctx = clientx.context(self)  # (tlsconf's client_context drops its modules itself)
        self._log_line(1, "connecting to %s:%d as %s" % (self.host, self.port, self._cid))
        try:
            # this task reads the link itself until the reader task runs
            session_present = await open_session(
                s,
                self.host,
                self.port,
                ctx,
                self.hostname,
                self._cid,
                self._user,
                pw,
                self.keepalive,
                self.clean_session,
                self._tlsinfo,
            )
            pw = None
            self.stats["connects"] += 1
            f = clientx.filters(self)
            if f:
                await subscribe(s, f)
                self._log_line(2, "subscribed %s" % (f,))
            # Connected from here: a send() made while the redelivered messages drain is
            # written behind them.
            _tr().opened(lc, ticks_ms())
            self.stats["redelivered"] += self._outbox.redeliver(s.write_from, ticks_ms())
            await link.drain()
        except BaseException:
            if gen == self._gen:  # not when connect() or disconnect() already moved on
                link.close()
                if lc.state == CONNECTED:
                    lc.state = DISCONNECTED
            raise
        from .linkopen import cipher  # loaded for connecting

        self._log_line(1, "connected (session present: %s, %s)" % (session_present, cipher(link)))
        return session_present

    def _connected(self):
        from .clientx import connected

        connected(self)  # the connection-time code goes; reloaded for a reconnect
        self._notify(CONNECTED, None)
        self._wake()
        self._reader = asyncio.create_task(self._read_loop())
        h = self._handlers
        if h.get("desired") or h.get("writable"):
            _tr().resync_due(self._lc, ticks_ms())
        self._kick.set()

    def _drop(self, reason, clean=False):
        """Close the link (the reader task stops)."""
        r = self._reader
        self._reader = None
        if r is not None and r is not _core.cur_task:
            r.cancel()
        self._s.close(clean)
        lc = self._lc
        was = lc.state == CONNECTED
        if was:
            lc.state = DISCONNECTED
        self._log_line(1, "disconnected: %s" % reason)
        if was:
            self._notify(DISCONNECTED, reason)
        self._wake()
        self._kick.set()

    def _lost(self, err):
        # Collect first: what the outage loads for good then goes low in the heap, not
        # between the garbage the outage's sends leave behind (as the blocking client).
        gc.collect()
        self._drop(str(err))
        d = _tr().lost(self._lc, ticks_ms())
        if d >= 0:
            self._log_line(1, "retrying in %d ms" % d)
            self._notify(RETRYING, d)

    # ---- the background tasks ------------------------------------------------------

    async def _run(self):
        while True:
            try:
                await self._turns()
            except Exception as e:  # a bug must not leave the device silently offline
                self._log_line(0, "iothub.aio background task: %r" % (e,))
                if self.is_connected:
                    self._lost(ConnectionLost("internal error: %r" % (e,)))
                await asyncio.sleep_ms(1000)

    async def _turns(self):
        lc = self._lc
        s = self._s
        while True:
            self._kick.clear()
            now = ticks_ms()
            a = lc.next(now, self._outbox.oldest_sent())
            if a == _WAIT:
                w = lc.wait
                if lc.state == CONNECTED:
                    k = lc.keepalive(now)
                    if k == _PING:
                        try:
                            s.write(mqtt._short(s.tx, 0xC0, 0, "PINGREQ"))
                        except ConnectionLost as e:
                            self._lost(e)
                            continue
                        lc.ping_at = now
                        continue
                    if k == _DEAD:
                        self._lost(ConnectionLost(lc.why))
                        continue
                    w = min(w, lc.wait)
                    if s.link.pending is not None and not self._draining:
                        try:
                            await self._flush()
                        except ConnectionLost as e:
                            self._lost(e)
                        continue
                await self._nap(w)
            elif a == _CONNECT:
                await self._attempt()
            elif a == _DEAD:
                self._lost(ConnectionLost(lc.why))
            elif a == _RENEW:
                self._renew(now)
            elif a == _RESYNC:
                await self._resync()
            else:  # STOP: until the application acts (new credentials, connect())
                await self._nap(None)

    async def _nap(self, w):
        # Sleep w ms (None: until kicked), or until the earliest waiter's deadline, when
        # the waiters are pulsed so each checks its own.
        d = self._soonest
        if d is not None:
            left = ticks_diff(d, ticks_ms())
            if left <= 0:
                self._soonest = None
                self._wake()
                return
            if w is None or left < w:
                w = left
        if w is None:
            self._napping = True
            try:
                await self._kick.wait()
            finally:
                self._napping = None
            return
        self._napping = ticks_add(ticks_ms(), w)
        try:
            await asyncio.wait_for_ms(self._kick.wait(), w)
        except asyncio.TimeoutError:
            pass
        finally:
            self._napping = None

    def _due(self, t):
        # Something is due at tick t: wake the lifecycle task if its nap ends later.
        n = self._napping
        if n is True or (n is not None and ticks_diff(t, n) < 0):
            self._kick.set()

    async def _attempt(self):
        lc = self._lc
        # Collect first, as the blocking client does: what this attempt loads (the
        # connection code, a TLS context rebuilt after new credentials) then goes into the
        # lowest free blocks, and the handshake finds the largest block the heap can offer.
        gc.collect()
        try:
            await self._open(self.timeout_ms)
        except errors.AuthenticationError as e:
            _tr().failed(lc, ticks_ms(), True)
            self._log_line(0, str(e) + "; not retrying until the credentials change")
            self._notify(AUTH_FAILED, e.code)
            self._wake()
            return
        except (IoTHubError, OSError, MemoryError) as e:
            why = "out of memory" if isinstance(e, MemoryError) else e
            self._log_line(1, "connect failed: %s" % (why,))
            d = _tr().failed(lc, ticks_ms())
            if d >= 0:
                self._log_line(1, "retrying in %d ms" % d)
                self._notify(RETRYING, d)
            return
        self.stats["reconnects"] += 1
        self._connected()

    def _renew(self, now):
        from .clock import unix_time

        left = self._renew_unix - unix_time()
        if left > 0:  # a token longer than the ticks span: wait on
            _tr().renew_later(self._lc, now, left * 1000)
            return
        # MQTT 3.1.1 has no re-authentication: reconnect with a fresh token. The session
        # and the outbox survive.
        self.stats["renewals"] += 1
        self._drop("SAS token renewal", clean=True)
        _tr().renewing(self._lc)

    def _read_loop(self):
        # A generator, as asyncio's own streams are: it waits on the raw socket in the I/O
        # queue with a bare yield, so a turn allocates nothing.
        link = self._s.link
        ioq = _ioq
        try:
            while True:
                if not link._more:  # else mbedTLS may hold decrypted bytes: read first
                    raw = link.raw
                    if raw is None:
                        raise ConnectionLost("not connected")
                    yield ioq.queue_read(raw)
                if self._pump() and link.pending is not None:
                    yield from self._flush()
        except (ConnectionLost, ProtocolError, Timeout) as e:
            self._reader = None
            self._lost(e)
        except MemoryError:
            # Out of memory while receiving: the link is given up and retried after the
            # backoff, like any transient failure (its buffers are freed meanwhile).
            self._reader = None
            self._lost(ConnectionLost("out of memory while receiving"))
        except Exception as e:  # a bug must not leave the link open and unread
            self._log_line(0, "iothub.aio reader task: %r" % (e,))
            self._reader = None
            self._lost(ConnectionLost("internal error while receiving: %r" % (e,)))

    def _pump(self):
        """Read what is there and dispatch every complete packet (session.py's dispatch:
        PUBACK -> outbox, PUBLISH -> inbound.route and PUBACK, SUBACK, PINGRESP, DROPPED);
        then pulse the waiters. Returns the bytes read."""
        n = read_once(self._s)
        if n:
            self._wake()
        return n

    def _wake(self):
        e = self._pulse
        e.set()
        e.clear()

    async def _flush(self):
        # Drain what the socket did not take. One task drains at a time (the others' bytes
        # are behind it in the same pending buffer); if it is cancelled, the lifecycle task
        # drains the rest.
        link = self._s.link
        if link.pending is None or self._draining:
            return
        self._draining = True
        try:
            await link.drain()
        finally:
            self._draining = False
            if link.pending is not None:
                self._kick.set()

    async def _await(self, done, deadline, what):
        """Wait (the reader task reads) until done() is true, the link is lost
        (ConnectionLost) or the deadline (ticks) passes (Timeout)."""
        link = self._s.link
        while not done():
            if not link.is_open:
                raise ConnectionLost("the link closed while waiting for the %s" % what)
            if ticks_diff(deadline, ticks_ms()) <= 0:
                raise Timeout("no %s from the hub in time" % what)
            await self._sleep_until(deadline)

    async def _sleep_until(self, deadline):
        """Wait for the next pulse, or (roughly) the deadline: the lifecycle task pulses
        when the earliest deadline of the waiters passes."""
        if deadline is None:
            await self._pulse.wait()
            return
        if _core.cur_task is self._task or self._task is None:
            # the lifecycle task itself (twin re-sync), or no lifecycle task
            try:
                await asyncio.wait_for_ms(self._pulse.wait(), ticks_diff(deadline, ticks_ms()))
            except asyncio.TimeoutError:
                pass
            return
        d = self._soonest
        if d is None or ticks_diff(deadline, d) < 0:
            self._soonest = deadline
            self._due(deadline)
        await self._pulse.wait()

    async def _subscribe(self, filters, deadline):
        from .asession import subscribe_finish, subscribe_start

        s = self._s
        pid = subscribe_start(s, filters)
        try:
            if s.link.pending is not None:
                await self._flush()
            await self._await(lambda: s._subacks.get(pid) is not None, deadline, "SUBACK")
        except BaseException:
            s._subacks.pop(pid, None)
            raise
        subscribe_finish(s, pid, filters)
        self._log_line(2, "subscribed %s" % (filters,))

    async def _subscribe_later(self, filters):
        try:
            await self._subscribe(filters, ticks_add(ticks_ms(), self.timeout_ms))
        except IoTHubError as e:
            self._log_line(0, "subscribing to %s failed: %s" % (filters, e))

    def _handler_changed(self, name, set_):
        from . import clientx

        if set_:
            asyncio.create_task(self._subscribe_later(clientx.filters(self, name)))
        else:
            from .clientrun import handler_changed

            handler_changed(self, name, False)  # UNSUBSCRIBE, not awaited

    # ---- handlers that are coroutines ----------------------------------------------

    def _wrap(self, fn, what):
        def call(*args):
            r = fn(*args)
            if _is_coro(r):
                asyncio.create_task(self._guard(r, what))
            return None

        return call

    async def _guard(self, coro, what):
        try:
            await coro
        except Exception as e:  # a handler's failure never stops the client
            self._log_line(0, "%s raised %r" % (what, e))

    def _callback(self, fn, what, a, b):
        # on_connection_state, on_error: a coroutine result runs as its own task
        r = ClientBase._callback(self, fn, what, a, b)
        if _is_coro(r):
            asyncio.create_task(self._guard(r, what))

    def _answer_later(self, name, rid, coro):
        # inbound: a method handler returned a coroutine; answered when it finishes.
        asyncio.create_task(self._method(name, rid, coro))

    async def _method(self, name, rid, coro):
        from .inbound import respond

        r = e = None
        try:
            r = await coro
        except Exception as x:
            e = x  # answered with 500 and logged by respond()
        if not self.is_connected:
            if e is not None:
                self._log_line(0, "method %s raised %r" % (name, e))
            self._log_line(1, "method %s: the link went down before its response" % name)
            return
        try:
            respond(self, name, rid, r, e)
            await self._flush()
        except ConnectionLost as e:
            self._lost(e)

    # ---- sending -------------------------------------------------------------------

    async def send(
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
        """Send telemetry. QoS 1 with block=True returns the packet id once the hub's
        PUBACK arrives (Timeout after timeout_ms: it stays queued and is delivered, do not
        send it again); block=False returns once it is queued. Cancelling a send() leaves
        the message queued; it is delivered."""
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
                raise ConnectionLost("not connected (QoS 0 messages are not queued)")
            try:
                s.publish(topic, payload)
                await self._flush()
            except ConnectionLost as e:
                self._lost(e)
                raise
            return None
        if not self.is_connected and not self.auto_reconnect:
            raise ConnectionLost("not connected (auto_reconnect is off: nothing was queued)")
        off = self._enqueue(topic, payload)
        n = self._qn
        if off < 0:
            return await self._send_direct(topic, payload, n, block, timeout_ms)
        pid = s._pid  # the id _enqueue() gave it
        ob = self._outbox
        if self.is_connected:
            now = ticks_ms()
            ob.commit(pid, off, n, now)
            self._due(ticks_add(now, self.timeout_ms + 1))  # the dead-link check
            try:
                s.write_from(ob.buf, off, n)
                if s.link.pending is not None:  # (a call allocates: only when needed)
                    await self._flush()
            except ConnectionLost as e:
                self._lost(e)
        else:
            ob.commit(pid, off, n)
        if block:
            await self._puback(pid, timeout_ms)
        return pid

    async def _puback(self, pid, timeout_ms):
        ms = self._timeout(timeout_ms)
        deadline = ticks_add(ticks_ms(), ms)
        has = self._outbox.has
        while pid == self._direct or has(pid):
            if self._task is None:
                raise ConnectionLost(
                    "not connected: message %d stays queued and goes out after connect()" % pid
                )
            if self._lc.next(ticks_ms()) == _STOP:
                # auth_failed, or the link failed with auto_reconnect off: waiting longer
                # cannot help (the message is delivered after the next connect())
                raise ConnectionLost("%s: message %d stays queued" % (self._lc.why, pid))
            if pid == self._direct and not self.is_connected:
                raise ConnectionLost(
                    "the link failed before the PUBACK of message %d, which is larger than "
                    "queue_bytes and was not queued: send it again" % pid
                )
            if ticks_diff(deadline, ticks_ms()) <= 0:
                if pid == self._direct:
                    raise Timeout("no PUBACK for message %d within %d ms" % (pid, ms))
                raise Timeout("no PUBACK for message %d within %d ms (it stays queued)" % (pid, ms))
            # _sleep_until(deadline), inline: never the lifecycle task here
            d = self._soonest
            if d is None or ticks_diff(deadline, d) < 0:
                self._soonest = deadline
                self._due(deadline)
            await self._pulse.wait()

    async def _send_direct(self, topic, payload, n, block, timeout_ms):
        # Larger than the outbox ring: sent straight from the payload, never queued.
        if not block or not self.is_connected:
            raise ConfigError(
                "a message of %d bytes does not fit the queue (queue_bytes=%d): send it with "
                "block=True while connected, or give the client a larger queue_bytes"
                % (n, len(self._outbox.buf))
            )
        s = self._s
        pid = s.next_pid()
        self._direct = pid
        try:
            try:
                s.publish(topic, payload, 1, pid)
                await self._flush()
            except ConnectionLost as e:
                self._lost(e)
            await self._puback(pid, timeout_ms)
        finally:
            self._direct = 0
        return pid

    async def wait_sent(self, timeout_ms=None):
        """Wait until every queued QoS 1 message is acknowledged (Timeout otherwise: they
        stay queued)."""
        ms = self._timeout(timeout_ms)
        deadline = ticks_add(ticks_ms(), ms)
        ob = self._outbox
        while len(ob):
            if self._task is None:
                raise ConnectionLost("not connected: %d messages stay queued" % len(ob))
            if self._lc.next(ticks_ms()) == _STOP:
                raise ConnectionLost("%s: %d messages stay queued" % (self._lc.why, len(ob)))
            if ticks_diff(deadline, ticks_ms()) <= 0:
                raise Timeout("%d messages still unacknowledged after %d ms" % (len(ob), ms))
            await self._sleep_until(deadline)

    # ---- twin ----------------------------------------------------------------------

    async def _twin_request(self, topic, payload, what, timeout_ms):
        from .inbound import twin_of

        ms = self._timeout(timeout_ms)
        deadline = ticks_add(ticks_ms(), ms)
        tw = twin_of(self)
        if not self.is_connected:
            raise ConnectionLost("not connected")
        if not tw.want:
            # first twin request: subscribe to the responses (renewed by every connect);
            # a desired or writable handler subscribed them already
            h = self._handlers
            if not (h.get("desired") or h.get("writable")):
                from .clientx import filters

                await self._subscribe(filters(self, "twin"), deadline)
            tw.want = True
        from . import twin

        rid = twin.start(tw, topic, payload)
        try:
            await self._flush()
            await self._await(lambda: tw.waiting.get(rid) is not None, deadline, what + " response")
        except ConnectionLost as e:
            tw.waiting.pop(rid, None)
            if self._s.link.is_open:
                self._lost(e)
            raise
        except BaseException:
            tw.waiting.pop(rid, None)
            raise
        return twin.end(tw, rid, what)

    async def get_twin(self, timeout_ms=None):
        """The twin document {"desired": {...}, "reported": {...}}."""
        from .twin import GET, get

        _, body = await self._twin_request(GET, b"", "twin document GET", timeout_ms)
        return get(self._tw, None, body)

    async def update_reported(self, patch, timeout_ms=None):
        """PATCH reported properties (None deletes a member). Returns the new version."""
        from .twin import PATCH, body

        v, _ = await self._twin_request(PATCH, body(patch), "twin reported PATCH", timeout_ms)
        return v

    # Plug and Play: thin entries into iothub/pnp.py (loaded on first use).

    async def report_properties(self, properties, component=None, timeout_ms=None):
        """Report properties (a dict; of a component: wrapped with "__t":"c"), or send a
        pnp.Patch with several properties, components and acks. Returns the new version."""
        from .pnp import reported_patch
        from .twin import PATCH

        v, _ = await self._twin_request(
            PATCH,
            reported_patch(properties, component),
            "twin reported PATCH",
            timeout_ms,
        )
        return v

    async def ack_writable(
        self, name, value, version, status=200, description=None, component=None, timeout_ms=None
    ):
        """Acknowledge a writable property ({"ac", "av", "ad", "value"}) at the desired
        version it answers. Returns the new reported version."""
        from .pnp import Patch

        patch = Patch().ack(name, value, version, status, description, component)
        return await self.report_properties(patch, None, timeout_ms)

    async def _resync(self):
        from .inbound import twin_of
        from .twin import GET, parse, resync

        tw = twin_of(self)
        ok = True
        try:
            _, body = await self._twin_request(GET, b"", "twin document GET", None)
            doc = parse(body)
        except ProtocolError as e:
            errors.explained("reports", "report", self, "twin", "twin re-sync skipped: %s" % (e,))
        except IoTHubError as e:
            ok = False
            if self.is_connected:
                self._log_line(1, "twin re-sync failed (%s); retrying in 5 s" % (e,))
        else:
            resync(tw, None, doc)
        _tr().resync_done(self._lc, ticks_ms(), ok)


async def register(pc, timeout_ms=None):
    """Provision through DPS without blocking the loop: iothub.provisioning's
    ProvisioningClient (pc) and its conversation, over asyncio. Returns its
    ProvisioningResult (result.client(DeviceClient) makes this module's client)."""
    from .aprov import register as _register

    return await _register(pc, timeout_ms)
