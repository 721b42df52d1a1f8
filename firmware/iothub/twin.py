# Device twin requests: GET and reported PATCH correlated by $rid with bounded waits, and the
# re-sync after every connect, which delivers the desired properties once if their $version
# moved while the device was away (patches pushed while offline are missed). The twin's
# state and the delivery of desired patches are iothub.inbound.Twin (resident while a
# desired handler is set); these functions are connection-time code: loaded for a request
# or a re-sync and dropped again after each re-sync (the next connect, or the application's
# next twin call, loads them again). A telemetry-only client never loads this module. With
# an on_writable handler (IoT Plug and Play) writable properties are acknowledged through
# iothub/pnp.py after every connect.
#
# What the hub sends is checked before it is used: a twin document that is not a JSON
# object, or a desired $version that is not an integer in 0..2^53, is refused with
# ProtocolError (get_twin) or skipped and reported (re-sync), never passed on.
from .clock import ticks_add, ticks_ms
from .errors import ConnectionLost, IoTHubError, ProtocolError, explained, unload
from .inbound import check
from .jsonc import dumps, loads

# Request topics, completed by the request id (a decimal number: nothing to quote).
GET = "$iothub/twin/GET/?$rid="
PATCH = "$iothub/twin/PATCH/properties/reported/?$rid="


def body(patch):
    """The body of a reported PATCH."""
    if not isinstance(patch, dict):
        raise explained(
            "topicserr", "config", 11, None
        )  # (iothub.topicserr: the text is not resident)
    return dumps(patch).encode()


def request(twin, topic, payload, what, timeout_ms):
    """Publish a request of twin (an iothub.inbound.Twin; topic: GET or PATCH) and wait for its response:
    (version, body)."""
    c = twin.c
    if not c.is_connected:
        raise ConnectionLost("not connected")
    if not twin.want:
        # first twin request: subscribe to the responses (connect() renews it later);
        # a desired or writable handler subscribed them already
        h = c._handlers
        if not (h.get("desired") or h.get("writable")):
            from . import clientx

            clientx.subscribe(c, clientx.filters(c, "twin"))
        twin.want = True
    deadline = ticks_add(ticks_ms(), c._timeout(timeout_ms))
    req = start(twin, topic, payload)
    try:
        c._s.wait(lambda: twin.waiting.get(req) is not None, deadline, what + " response")
    except BaseException as e:
        twin.waiting.pop(req, None)
        if isinstance(e, (ConnectionLost, ProtocolError)):
            c._lost(e)
        raise
    return end(twin, req, what)


def start(twin, topic, payload):
    """Publish a request (the responses are subscribed); returns its $rid. The reply lands
    in twin.waiting[rid] (iothub.inbound.route); end(twin, rid) takes it. iothub.aio awaits it
    in between."""
    twin.req += 1
    req = str(twin.req)
    twin.waiting[req] = None
    try:
        twin.c._s.publish(topic + req, payload)
    except ConnectionLost as e:
        twin.waiting.pop(req, None)
        twin.c._lost(e)
        raise
    return req


def end(twin, req, what):
    """The reply to request req: (version, body); StatusError for a status >= 400."""
    status, version, body = twin.waiting.pop(req)
    if status >= 400:
        from .errstatus import StatusError

        raise StatusError(status, what, body)
    return version, body


def parse(body):
    """The twin document of a GET response, checked."""
    doc = check(loads(body) or {}, 8)  # (codes of iothub.inerr's texts)
    desired = check(doc.get("desired") or {}, 9)
    if "$version" in desired:
        check(desired["$version"], 11)
    return doc


def get(twin, timeout_ms=None, body=None):
    """The twin document (GET it, or the body of a GET response iothub.aio awaited). The
    application read it: its desired $version counts as delivered."""
    if body is None:
        body = request(twin, GET, b"", "twin document GET", timeout_ms)[1]
    doc = parse(body)
    v = (doc.get("desired") or {}).get("$version")
    if v is not None and (twin.version is None or v > twin.version):
        twin.version = v
    return doc


def update_reported(twin, patch, timeout_ms=None):
    return request(twin, PATCH, body(patch), "twin reported PATCH", timeout_ms)[0]


def app(c, get_twin):
    """DeviceClient c's get_twin(timeout_ms=None) or update_reported(patch, timeout_ms=None)
    (ClientBase.__getattr__, by way of iothub.clientrare, which is dropped first): this
    module goes again when the call returns."""
    fn = get if get_twin else update_reported

    from .inbound import twin_of

    def call(*args, **kw):
        try:
            return fn(twin_of(c), *args, **kw)
        finally:
            unload("twin")

    return call


def resync(twin, timeout_ms=None, doc=None):
    """After a connect: GET the twin (doc: the one iothub.aio fetched itself) and deliver
    its desired section if it moved; then this module is dropped until it is needed again."""
    c = twin.c
    try:
        if doc is None:
            c._lc.resync_at = None
            try:
                doc = parse(request(twin, GET, b"", "twin document GET", timeout_ms)[1])
            except ProtocolError as e:
                explained("inerr", "log", c, 19, e)
                return
            except IoTHubError as e:
                if c.is_connected:
                    explained("inerr", "log", c, 21, e)
                    from .transitions import resync_done

                    resync_done(c._lc, ticks_ms(), False)
                return
        desired = doc.get("desired") or {}
        version = desired.get("$version")
        if version is None:
            return
        if c._handlers.get("writable"):
            from .pnp import writable

            writable(twin, doc, version, True)  # every connect, the first one too
        if twin.version is None:
            twin.version = version  # first connect: the application reads the twin itself
        elif version > twin.version:
            twin.patch(desired, version)
    finally:
        # Connection-time code: the module goes (freed at the next collection once the
        # caller returns); the Twin's state stays in iothub.inbound.
        unload("twin")
