# What the client does with what the hub sends: cloud-to-device (and module input)
# messages, direct-method requests and their responses, twin responses and desired-property
# patches (docs/protocol.md section 2), and the twin's state (the requests are in iothub.twin).
# Loaded with the first PUBLISH from the hub (a telemetry-only client never loads it); the
# topic filters its handlers subscribe to are built by iothub.clientx (connection-time code).
#
# What the hub sends is checked before it is used: a desired patch that is not a JSON
# object, or a $version that is not an integer in 0..2^53, is skipped and reported, never
# passed on.
#
# RAM: this module stays loaded while handlers are set, and every name in a loaded module
# is interned for good (docs/protocol.md section 6.3): one parse() classifies a topic and
# one decode() reads its property bag, instead of a parser per topic kind, and arguments
# reuse names other resident modules intern anyway.
import json

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ProtocolError, explained
from .jsonc import dumps, loads
from .pct import unquote

_TWIN_RES = const("$iothub/twin/res/")
_TWIN_DESIRED = const("$iothub/twin/PATCH/properties/desired/")
_METHOD_POST = const("$iothub/methods/POST/")

# Codes of the texts in iothub.inerr (loaded for one message: the texts are not resident).
_E_STATUS = const(0)
_E_TWIN_VERSION = const(1)
_E_DESIRED_VERSION = const(2)
_E_NO_RID = const(3)
_E_NO_METHOD = const(4)
_E_METHOD_RID = const(5)
_E_NO_INPUT = const(6)
_E_PATCH = const(7)  # 7..9: not a JSON object; 10, 11: not a $version
_E_PATCH_VERSION = const(10)
_L_TWIN_FAILED = const(14)
_L_ON_MESSAGE = const(15)
_L_ON_DESIRED = const(16)
_L_SKIPPED = const(18)
_L_UNEXPECTED = const(20)


def check(v, what):
    """v if it is what the code `what` checks, else ProtocolError: codes 7..9 (iothub.inerr)
    a JSON object; 10, 11 a $version, an integer in 0..2^53 (JSON's exact integers)."""
    if what < _E_PATCH_VERSION:
        if isinstance(v, dict):
            return v
    elif not isinstance(v, bool) and isinstance(v, int) and 0 <= v <= 1 << 53:
        return v
    raise explained("inerr", "error", what, v)


def twin_of(c):
    """Client c's twin state (a Twin), made on first use: by the first twin response or
    desired patch, or the first twin call (not when a handler is set: inbound then loads
    after connect() dropped its connection-time code, not on top of it)."""
    if c._tw is None:
        c._tw = Twin(c)
    return c._tw


class Twin:
    """A DeviceClient's twin: made by its first twin call or desired handler."""

    def __init__(self, client):
        self.c = client
        self.want = False  # twin responses subscribed (first request, or a desired handler)
        self.version = None  # last desired $version delivered or seen
        self.req = 0  # the last request id
        # request id -> None, then (status, version, body) when its response came (route)
        self.waiting = {}

    def patch(self, payload, version):
        """Deliver desired properties once per $version: a PATCH pushed by the hub (its
        payload; version from its topic, 0 if none), or the desired section of the whole
        twin after a reconnect (a dict, from iothub.twin.resync)."""
        full = isinstance(payload, dict)
        if full:
            patch = payload
        else:
            try:
                patch = check(loads(payload) or {}, _E_PATCH)
                if not version:
                    version = check(patch.get("$version", 0), _E_PATCH_VERSION)
            except ProtocolError as e:
                explained("inerr", "log", self.c, _L_SKIPPED, e)
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
                explained("inerr", "log", self.c, _L_ON_DESIRED, e)
        if not full and h.get("writable"):
            from .pnp import writable

            writable(self, patch, version, False)


class Message:
    """A cloud-to-device (or module input) message."""

    def __init__(self, body, properties, system_properties, input_name=None):
        self.body = body
        self.properties = properties
        self.system_properties = system_properties
        self.input_name = input_name
        self.message_id = system_properties.get("mid")
        self.correlation_id = system_properties.get("cid")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Message %d bytes, properties=%r>" % (len(self.body), self.properties)


def decode(s, raw=False):
    """A topic's property bag as a dict; tolerates a leading "?". "k" -> None, "k=" -> "".
    raw: values as they are on the wire (not percent-decoded)."""
    out = {}
    if s[:1] == "?":
        s = s[1:]
    for part in s.split("&"):
        if part:
            eq = part.find("=")
            if eq < 0:
                out[unquote(part)] = None
            else:
                v = part[eq + 1 :]
                out[unquote(part[:eq])] = v if raw else unquote(v)
    return out


def split(rest, raw=False):
    # "head/bag" -> (head, the bag decoded); without a "/": (rest, {})
    i = rest.find("/")
    if i < 0:
        return rest, {}
    return rest[:i], decode(rest[i + 1 :], raw)


def uint(s, what):
    # Digits only: int() would also accept "+1", " 1", "1_0" or non-ASCII digits.
    if s and len(s) < 20:
        for b in s.encode():
            if not 48 <= b <= 57:  # ASCII "0".."9"
                break
        else:
            return int(s)
    raise explained("inerr", "error", what, s)


def parse(topic, device_id, module_id=None):
    """What a topic from the hub is, or None when it is none of these (not ours, like
    azure-sdk-for-c); ProtocolError when it is one of them but malformed:
      ("message", properties, input_name)   C2D (input_name None) or a module input
      ("method", name, rid)                 $iothub/methods/POST/{name}/?$rid={rid}
      ("twin", status, rid, version)        $iothub/twin/res/{status}/?$rid=..[&$version=..]
      ("desired", version)                  a desired PATCH (version 0 if the topic has none)
    A method's rid is kept as it came (percent-encoded, if it was): its response echoes it,
    as azure-sdk-for-c does."""
    if topic.startswith(_TWIN_RES):
        head, bag = split(topic[len(_TWIN_RES) :])
        status = uint(head, _E_STATUS)
        rid = bag.get("$rid")
        if not rid:
            raise explained("inerr", "error", _E_NO_RID, None)
        v = bag.get("$version", -1)
        return "twin", status, rid, None if v == -1 else uint(v, _E_TWIN_VERSION)
    if topic.startswith(_TWIN_DESIRED):
        v = decode(topic[len(_TWIN_DESIRED) :]).get("$version", -1)
        return "desired", 0 if v == -1 else uint(v, _E_DESIRED_VERSION)
    if topic.startswith(_METHOD_POST):
        head, bag = split(topic[len(_METHOD_POST) :], True)
        rid = bag.get("$rid")
        if not head or not rid:
            raise explained("inerr", "error", _E_METHOD_RID if head else _E_NO_METHOD, None)
        return "method", unquote(head), rid
    if module_id:
        prefix = "devices/%s/modules/%s/inputs/" % (device_id, module_id)
    else:
        prefix = "devices/%s/messages/devicebound" % device_id
    if not topic.startswith(prefix):
        return None
    head, bag = split(topic[len(prefix) :])
    if not module_id:  # devicebound[/bag]: anything else is not ours
        return None if head else ("message", bag, None)
    if not head:
        raise explained("inerr", "error", _E_NO_INPUT, None)
    return "message", bag, unquote(head)


def route(c, pkt):
    """Deliver one PUBLISH from the hub to DeviceClient c's handlers or twin."""
    payload = pkt.payload
    r = parse(pkt.topic, c.device_id, c.module_id)
    kind = r and r[0]
    if kind == "twin":
        tw = c._tw
        if tw is not None:
            _, status, rid, version = r
            if rid in tw.waiting:
                tw.waiting[rid] = (status, version, payload)
            elif status >= 400:  # a request nobody waits for (a Plug and Play acknowledgement)
                explained("inerr", "log", c, _L_TWIN_FAILED, (rid, status))
    elif kind == "desired":
        twin_of(c).patch(payload, r[1])
    elif kind == "method":
        _, name, rid = r
        h = c._handlers
        fn = h.get("method")
        if h.get("command") is not None:  # Plug and Play: "component*command", then on_method
            from .pnp import handler

            fn = handler(h.get("command"), fn)
        if fn is None:
            respond(c, name, rid, (404, {"error": "no handler for method %s" % name}))
            return
        try:
            try:
                arg = loads(payload)
            except ProtocolError:
                arg = bytes(payload)
            r = fn(name, arg)
        except Exception as e:
            respond(c, name, rid, None, e)
            return
        if hasattr(r, "send") and hasattr(c, "_answer_later"):
            # a coroutine (an async def handler of iothub.aio): answered when it returns
            c._answer_later(name, rid, r)
            return
        respond(c, name, rid, r)
    elif kind is None:
        explained("inerr", "log", c, _L_UNEXPECTED, ())
    else:
        app = {}
        system = {}  # "$.mid" and the like, without "$."
        for k, v in r[1].items():
            if k.startswith("$."):
                system[k[2:]] = v
            else:
                app[k] = v
        fn = c._handlers.get("message")
        if fn is not None:
            try:
                fn(Message(bytes(payload), app, system, r[2]))
            except Exception as e:
                explained("inerr", "log", c, _L_ON_MESSAGE, e)


def respond(c, name, req, r, e=None):
    """Answer method request req (its $rid): r is what the handler returned, (status, payload) or a
    payload answered with 200; e the exception it raised instead (answered with 500, its
    name and text in the body, and logged: iothub.inerr)."""
    if e is None:
        status = 200
        if isinstance(r, tuple) and len(r) == 2:
            status, r = r
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 65535:
            e = explained("inerr", "bad_status", status)
        else:
            try:
                body = b"" if r is None else dumps(r).encode()
            except Exception as x:
                e = x
    if e is not None:
        status = 500
        body = explained("inerr", "failed", c, name, e)
    c._s.publish("$iothub/methods/res/%d/?$rid=%s" % (status, req), body)
