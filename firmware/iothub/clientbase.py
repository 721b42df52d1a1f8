# What the blocking DeviceClient (iothub.client) and the asyncio one (iothub.aio) share:
# construction, handler properties, the telemetry encoding into the outbox ring, and what
# is done with packets from the hub. Neither adapter's waiting is here: the blocking client
# waits by reading the link, the asyncio one by awaiting.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from . import mqtt
from .errors import IoTHubError, explained

D2C_MAX = const(262144)  # IoT Hub D2C limit: body + property names and values

_BUFFERS = (bytes, bytearray, memoryview)  # built once: a literal tuple allocates per call


class _On:
    # client.on_message and the other handlers: a descriptor, one small object per handler
    # (five property objects with two closures each measured 416 B more after connect).
    # Ports built without descriptors get properties instead (the end of this module).
    def __init__(self, name):
        self.n = name

    def __get__(self, c, cls=None):
        return self if c is None else c._handlers.get(self.n)

    def __set__(self, c, fn):
        # iothub.handlers, loaded for this call (a client sets its handlers a few times; one
        # that sets none never holds that code)
        explained("handlers", "set_handler", c, self.n, fn)


class ClientBase:
    # Plug and Play: the model's component names, for desired patches written without the
    # "__t":"c" marker (a marked object is a component anyway).
    components = ()

    def __init__(self, hostname, device_id, **options):
        # Options and their defaults: see clientinit.init (checked there, once).
        from .clientinit import init

        self._qn = 0  # the size of what _enqueue() made, without a tuple
        bare = init(self, hostname, device_id, options)  # (clientinit unloads itself)
        init = None  # the last reference to clientinit's code
        if bare is not False:  # our own TLS context, configured without clientinit in RAM
            from .tlsconf import client_context

            client_context(self, True, bare)

    @property
    def is_connected(self):
        return self._lc.state == "connected" and self._s.link.is_open  # (lifecycle.CONNECTED)

    # ---- construction -------------------------------------------------------------

    @classmethod
    def from_connection_string(cls, connection_string, **kw):
        from . import clientinit

        return clientinit.connection_string(cls, connection_string, kw)

    @classmethod
    def from_x509(cls, hostname, device_id, cert, key, *, module_id=None, **kw):
        if cert is None or key is None:
            raise explained("reports", "error", 4, ())
        return cls(hostname, device_id, module_id=module_id, cert=cert, key=key, **kw)

    # ---- handlers (setting one subscribes to its topic, None unsubscribes) ----------

    on_message = _On("message")
    on_method = _On("method")
    on_desired = _On("desired")
    # Plug and Play (iothub/pnp.py, loaded when first needed): on_writable(component, name,
    # value, version) -> None (200), a status or (status, description), acknowledged for it;
    # on_command(component, command, payload) -> (status, payload), None for a command it
    # does not know (passed to on_method, else answered 404).
    on_writable = _On("writable")
    on_command = _On("command")

    def __getattr__(self, name):
        # Only for names the class does not hold: the queue counters (asked often: answered
        # here), else the rarely called API (iothub.clientrare), kept out of RAM but for
        # the time of a call. A private name asked before it is set (getattr(c, "_x", None))
        # does not load it.
        if name == "queued":  # QoS 1 messages not yet acknowledged by the hub
            return len(self._outbox)
        if name == "dropped":  # messages dropped by the queue policy since start
            return self._outbox.dropped
        if name == "queue_policy":
            return self._outbox.policy
        if name == "state":  # the lifecycle's state (iothub.lifecycle: CONNECTED ...)
            return self._lc.state
        if name.startswith("_"):
            raise AttributeError(name)
        import gc

        # Collect first: what the call loads then goes into the lowest free blocks, not on
        # top of the garbage of the calls before (the demo's smallest heap, 64-bit .mpy:
        # 87 -> 83 KiB).
        gc.collect()
        if name == "get_twin" or name == "update_reported":
            # The twin's own entry points, without clientrare: its code would be on top of
            # twin's when the heap is fullest (the demo's peak).
            from .twin import app

            return app(self, name == "get_twin")
        from .clientrare import get

        return get(self, name)

    def _timeout(self, t):
        if t is None:
            return self.timeout_ms
        if not isinstance(t, int) or isinstance(t, bool) or t <= 0:
            raise explained("reports", "error", 2, ("timeout_ms", t))  # (texts not resident)
        return t

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

    def _d2c(self, payload, qos, props, ct, ce, mid, cid, comp):
        """Check a telemetry message (payload: bytes-like, see jsonc.body()) and return its
        encoded topic. Allocates nothing when the topic is cached."""
        if qos != 1 and qos != 0:
            raise explained("reports", "error", 5, ())
        # The encoded topic of the previous send is reused when nothing it was built from
        # changed: compared by value against a private snapshot, so a dict the
        # application mutates between sends is noticed.
        k = self._tkey
        if (
            props is None
            and mid is None
            and cid is None
            and ct is None
            and ce is None
            and comp is None
        ):
            topic = self._t0  # the bare telemetry topic, built once
        elif (
            k is not None
            and k[1] == mid
            and k[2] == cid
            and k[3] == ct
            and k[4] == ce
            and k[5] == comp
            and k[0] == props
        ):
            topic = k[6]
        else:
            # A new topic: topics (unloaded after connect) is loaded again, and kept, by
            # the first send with properties or ids; a device that sends none never needs
            # it. That first send collects first, so topics goes into the lowest free
            # blocks, not on top of the garbage before it (the demo's heap).
            if k is None:
                import gc

                gc.collect()
            from .topics import telemetry_topic

            topic = telemetry_topic(self.device_id, self.module_id, props, mid, cid, None, ct, ce)
            if comp is not None:  # Plug and Play component telemetry: $.sub={component}
                from .pnp import add_component

                topic = add_component(topic, comp)
            topic = topic.encode()
            if isinstance(props, dict):
                snap = dict(props)
            elif props is None:
                snap = None
            else:
                snap = [p[:] for p in props]
            # What it was built from, the topic, and whether topics stays loaded: not after
            # the first such topic (a device whose properties never change keeps only the
            # topic: 2.1 KB less on a 64-bit port), but from the second on. The drop is
            # iothub.spare's, as after a connect (loaded for it, this once).
            self._tkey = [snap, mid, cid, ct, ce, comp, topic, k is not None]
            if k is None:
                explained("spare", "spare", self)
        plen = len(payload)
        # The encoded topic is never shorter than the property names and values it carries,
        # so the exact count (which allocates) is needed only near the limit.
        if plen + len(topic) > D2C_MAX:
            from .clientrun import props_size

            size = plen + props_size(props, mid, cid, ct, ce, comp)
            if size > D2C_MAX:
                raise explained("reports", "error", 6, (size, D2C_MAX))
        return topic

    def _enqueue(self, topic, payload):
        """Encode a QoS 1 PUBLISH straight into the outbox ring. Returns its offset there
        (its packet id: self._s._pid, the last one given out; self._qn: its size), or -1
        when it is larger than the ring (self._qn says how large). Raises when the queue
        policy refuses it. Returns one int, not a tuple: a tuple would allocate on every
        send."""
        ob = self._outbox
        plen = len(payload)
        n = mqtt.publish_size(len(topic), plen, 1)
        self._qn = n
        off = ob.reserve(n)
        if off < 0:
            if n > len(ob.buf):
                return -1
            raise explained("reports", "failure", 3, (len(ob), ob.policy))
        pid = self._s.next_pid()
        buf = ob.buf
        i = mqtt.encode_publish_header(buf, topic, plen, 1, pid, False, off)
        buf[i : i + plen] = payload
        return off

    def _pid_in_use(self, pid):
        return pid == self._direct or self._outbox.has(pid)

    # ---- what the hub sends --------------------------------------------------------

    def _on_publish(self, pkt):
        if not pkt.type:  # mqtt.DROPPED: read through by the decoder, reported
            explained("reports", "on_drop", self, pkt)
            return
        from .inbound import route

        try:
            route(self, pkt)
        except (IoTHubError, ValueError, MemoryError) as e:
            # Dropped (and still acknowledged), never a reason to reconnect. The texts are
            # loaded for this one report (explained()).
            explained("reports", "on_publish", self, pkt, e)

    def _on_puback(self, pid):
        if pid == self._direct:
            self._direct = 0
        else:
            self._outbox.ack(pid)


class _T:  # a probe: does this firmware call __get__ (MICROPY_PY_DESCRIPTORS)?
    on_message = _On("message")


_t = _T()
_t._handlers = {"message": _T}
if _t.on_message is not _T:  # no: properties instead
    from .reports import handler_prop

    handler_prop(ClientBase)
del _T, _t
