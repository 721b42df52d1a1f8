# Device twin: GET and reported PATCH correlated by $rid with bounded waits, and desired
# properties delivered once per $version (also after a reconnect, when patches pushed while
# offline were missed). One Twin per DeviceClient, made on the first twin call or desired
# handler; a telemetry-only client never loads this module. With an on_writable handler (IoT
# Plug and Play) writable properties are acknowledged through iothub/pnp.py after every
# connect and on every desired patch.
#
# What the hub sends is checked before it is used: a twin document or desired patch that is
# not a JSON object, or a $version that is not an integer in 0..2^53, is refused with
# ProtocolError (get_twin) or skipped and logged (poll), never passed on.
from .clock import ticks_add, ticks_ms
from .errors import ConfigError, ConnectionLost, IoTHubError, ProtocolError
from .jsonc import dumps, loads

# Request topics, completed by the request id (a decimal number: nothing to quote).
GET = "$iothub/twin/GET/?$rid="
PATCH = "$iothub/twin/PATCH/properties/reported/?$rid="


def check(v, what, version=False):
    # v if it is a JSON object (or with version: a $version, an integer in 0..2^53, JSON's
    # exact integers), else ProtocolError naming what it is.
    if version:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1 << 53:
            raise ProtocolError("%s $version is not an integer in 0..2^53: %r" % (what, v))
    elif not isinstance(v, dict):
        raise ProtocolError("%s is not a JSON object (got %s)" % (what, type(v).__name__))
    return v


def body(patch):
    if not isinstance(patch, dict):
        raise ConfigError("reported properties must be a dict")
    return dumps(patch).encode()


class Twin:
    def __init__(self, client):
        self.c = client
        self.want = False  # twin responses subscribed (first request, or a desired handler)
        self.version = None  # last desired $version delivered or seen
        self.req = 0  # the last request id
        # request id -> None, then (status, version, body) when its response came
        # (iothub.inbound.route fills it in)
        self.waiting = {}

    def request(self, topic, payload, what, timeout_ms):
        """Publish a twin request (topic: GET or PATCH) and wait for its response:
        (version, body)."""
        c = self.c
        if not c.is_connected:
            raise ConnectionLost("not connected")
        if not self.want:
            # first twin request: subscribe to the responses (connect() renews it later);
            # a desired or writable handler subscribed them already
            h = c._handlers
            if not (h.get("desired") or h.get("writable")):
                from . import clientx

                clientx.subscribe(c, clientx.filters(c, "twin"))
            self.want = True
        deadline = ticks_add(ticks_ms(), c._timeout(timeout_ms))
        req = self.start(topic, payload)
        try:
            c._s.wait(lambda: self.waiting.get(req) is not None, deadline, "%s response" % what)
        except (ConnectionLost, ProtocolError) as e:
            self.waiting.pop(req, None)
            c._lost(e)
            raise
        except BaseException:
            self.waiting.pop(req, None)
            raise
        return self.end(req, what)

    def start(self, topic, payload):
        """Publish a request (the responses are subscribed); returns its $rid. The reply
        lands in self.waiting[rid] (iothub.inbound.route); end(rid) takes it. iothub.aio
        awaits it in between."""
        self.req += 1
        req = str(self.req)
        self.waiting[req] = None
        try:
            self.c._publish(topic + req, payload)
        except ConnectionLost as e:
            self.waiting.pop(req, None)
            self.c._lost(e)
            raise
        return req

    def end(self, req, what):
        """The reply to request req: (version, body); StatusError for a status >= 400."""
        status, version, body = self.waiting.pop(req)
        if status >= 400:
            from .errstatus import StatusError

            raise StatusError(status, what, body)
        return version, body

    @staticmethod
    def parse(body):
        """The twin document of a GET response, checked."""
        doc = check(loads(body) or {}, "the twin document")
        desired = check(doc.get("desired") or {}, "the twin's desired properties")
        if "$version" in desired:
            check(desired["$version"], "the twin's desired", True)
        return doc

    def get(self, timeout_ms=None, body=None):
        """The twin document (GET it, or the body of a GET response iothub.aio awaited).
        The application read it: its desired $version counts as delivered."""
        if body is None:
            body = self.request(GET, b"", "twin document GET", timeout_ms)[1]
        doc = self.parse(body)
        v = (doc.get("desired") or {}).get("$version")
        if v is not None and (self.version is None or v > self.version):
            self.version = v
        return doc

    def update_reported(self, patch, timeout_ms=None):
        return self.request(PATCH, body(patch), "twin reported PATCH", timeout_ms)[0]

    def resync(self, timeout_ms=None, doc=None):
        # Desired patches are pushed only while connected: after every connect GET the twin
        # and deliver the desired document once if its $version moved while we were away.
        # doc: the twin iothub.aio fetched itself.
        c = self.c
        if doc is None:
            c._lc.resync_at = None
            try:
                doc = self.parse(self.request(GET, b"", "twin document GET", timeout_ms)[1])
            except ProtocolError as e:
                c._report("twin", "twin re-sync skipped: %s" % (e,))
                return
            except IoTHubError as e:
                if c.is_connected:
                    c._log_line(1, "twin re-sync failed (%s); retrying in 5 s" % (e,))
                    from .transitions import resync_done

                    resync_done(c._lc, ticks_ms(), False)
                return
        desired = doc.get("desired") or {}
        version = desired.get("$version")
        if version is None:
            return
        if c._handlers.get("writable"):
            from .pnp import writable

            writable(self, doc, version, True)  # every connect, the first one too
        if self.version is None:
            self.version = version  # first connect: the application reads the twin itself
        elif version > self.version:
            self.patch(desired, version)

    def patch(self, payload, version):
        """Deliver desired properties once per $version: a PATCH pushed by the hub (its
        payload; version from its topic, 0 if none), or the desired section of the whole
        twin after a reconnect (a dict)."""
        full = isinstance(payload, dict)
        if full:
            patch = payload
        else:
            try:
                patch = check(loads(payload) or {}, "desired properties patch")
                if not version:
                    version = check(patch.get("$version", 0), "desired properties patch", True)
            except ProtocolError as e:
                self.c._report("twin", "desired patch skipped: %s" % (e,))
                return
        if self.version is not None and version <= self.version:
            return
        self.version = version
        h = self.c._handlers
        fn = h.get("desired")
        if fn is not None:
            try:
                fn(patch, version)
            except Exception as e:
                self.c._log_line(0, "on_desired raised %r" % (e,))
        if not full and h.get("writable"):
            from .pnp import writable

            writable(self, patch, version, False)
