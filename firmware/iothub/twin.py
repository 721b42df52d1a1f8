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
from . import routes
from .clock import ticks_add, ticks_ms
from .errors import ConfigError, ConnectionLost, IoTHubError, ProtocolError
from .jsonc import dumps, loads

_MAX_VERSION = 1 << 53  # JSON's exact integers


def _checked(v, what, version=False):
    # v if it is a JSON object (or with version: a $version, an integer in 0..2^53), else
    # ProtocolError naming what it is.
    if version:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= _MAX_VERSION:
            raise ProtocolError("%s $version is not an integer in 0..2^53: %r" % (what, v))
    elif not isinstance(v, dict):
        raise ProtocolError("%s is not a JSON object (got %s)" % (what, type(v).__name__))
    return v


def reported_body(patch):
    if not isinstance(patch, dict):
        raise ConfigError("reported properties must be a dict")
    return dumps(patch).encode()


class Twin:
    def __init__(self, client):
        self.c = client
        self.want = False  # twin responses subscribed (first request, or a desired handler)
        self.version = None  # last desired $version delivered or seen
        self.rid = 0
        self.replies = {}

    def request(self, topic, payload, what, timeout_ms):
        """Publish a twin request and wait for its response: (version, body)."""
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
        rid = self.start(topic, payload)
        try:
            c._s.wait(lambda: self.replies.get(rid) is not None, deadline, what + " response")
        except (ConnectionLost, ProtocolError) as e:
            self.replies.pop(rid, None)
            c._lost(e)
            raise
        except BaseException:
            self.replies.pop(rid, None)
            raise
        return self.finish(rid, what)

    def start(self, topic, payload):
        """Publish a request (the responses are subscribed); returns its $rid. The reply
        lands in self.replies[rid] (on_response); finish(rid) takes it. iothub.aio awaits
        it in between."""
        self.rid += 1
        rid = str(self.rid)
        self.replies[rid] = None
        try:
            self.c._publish(topic(rid), payload)
        except ConnectionLost as e:
            self.replies.pop(rid, None)
            self.c._lost(e)
            raise
        return rid

    def finish(self, rid, what):
        """The reply to request rid: (version, body); StatusError for a status >= 400."""
        status, version, body = self.replies.pop(rid)
        if status >= 400:
            from .errstatus import StatusError

            raise StatusError(status, what, body)
        return version, body

    def on_response(self, rid, status, version, payload):
        if rid in self.replies:
            self.replies[rid] = (status, version, payload)
        elif status >= 400:  # a request nobody waits for (a Plug and Play acknowledgement)
            self.c._log_line(0, "twin request %s failed with status %d" % (rid, status))

    def fetch(self, timeout_ms=None):
        _, body = self.request(routes.twin_get_topic, b"", "twin GET", timeout_ms)
        return self.parse(body)

    @staticmethod
    def parse(body):
        """The twin document of a GET response, checked."""
        doc = _checked(loads(body) or {}, "the twin document")
        desired = _checked(doc.get("desired") or {}, "the twin's desired properties")
        if "$version" in desired:
            _checked(desired["$version"], "the twin's desired", True)
        return doc

    def get(self, timeout_ms=None):
        return self.seen(self.fetch(timeout_ms))

    def seen(self, doc):
        """The application read the twin: its desired $version counts as delivered."""
        v = (doc.get("desired") or {}).get("$version")
        if v is not None and (self.version is None or v > self.version):
            self.version = v
        return doc

    def update_reported(self, patch, timeout_ms=None):
        version, _ = self.request(
            routes.twin_reported_topic, reported_body(patch), "twin reported PATCH", timeout_ms
        )
        return version

    def resync(self, timeout_ms=None):
        # Desired patches are pushed only while connected: after every connect GET the twin
        # and deliver the desired document once if its $version moved while we were away.
        c = self.c
        c._lc.resync_at = None
        try:
            doc = self.fetch(timeout_ms)
        except ProtocolError as e:
            c._report("twin", "twin re-sync skipped: %s" % (e,))
            return
        except IoTHubError as e:
            if c.is_connected:
                c._log_line(1, "twin re-sync failed (%s); retrying in 5 s" % (e,))
                from .transitions import resync_done

                resync_done(c._lc, ticks_ms(), False)
            return
        self.resynced(doc)

    def resynced(self, doc):
        """The twin fetched after a connect: deliver its desired section if it moved."""
        c = self.c
        desired = doc.get("desired") or {}
        version = desired.get("$version")
        if version is None:
            return
        if c._handlers.get("writable"):
            from .pnp import acknowledge_twin

            acknowledge_twin(self, doc, version, True)  # every connect, the first one too
        if self.version is None:
            self.version = version  # first connect: the application reads the twin itself
        elif version > self.version:
            self.deliver(desired, version, True)

    def on_patch(self, payload, version):
        """A desired-properties PATCH pushed by the hub (version from its topic, 0 if none)."""
        try:
            patch = _checked(loads(payload) or {}, "desired properties patch")
            if not version:
                version = _checked(patch.get("$version", 0), "desired properties patch", True)
        except ProtocolError as e:
            self.c._report("twin", "desired patch skipped: %s" % (e,))
            return
        self.deliver(patch, version)

    def deliver(self, patch, version, full=False):
        # full: the desired section of the whole twin (after a reconnect), else a patch
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
            from .pnp import acknowledge_twin

            acknowledge_twin(self, patch, version, False)
