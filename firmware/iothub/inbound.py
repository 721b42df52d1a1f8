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


from .errors import ProtocolError
from .jsonc import dumps, loads
from .pct import unquote
from .topics import quote

_TWIN_RES = const("$iothub/twin/res/")
_TWIN_DESIRED = const("$iothub/twin/PATCH/properties/desired/")
_METHOD_POST = const("$iothub/methods/POST/")


def check(v, what, version=False):
    # v if it is a JSON object (or with version: a $version, an integer in 0..2^53, JSON's
    # exact integers), else ProtocolError naming what it is.
    if version:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1 << 53:
            raise ProtocolError("%s $version is not an integer in 0..2^53: %r" % (what, v))
    elif not isinstance(v, dict):
        raise ProtocolError("%s is not a JSON object (got %s)" % (what, type(v).__name__))
    return v


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


def decode(s):
    """A topic's property bag as a dict; tolerates a leading "?". "k" -> None, "k=" -> ""."""
    out = {}
    if s[:1] == "?":
        s = s[1:]
    if not s:
        return out
    for part in s.split("&"):
        if not part:
            continue
        eq = part.find("=")
        if eq < 0:
            out[unquote(part)] = None
        else:
            out[unquote(part[:eq])] = unquote(part[eq + 1 :])
    return out


def uint(s, what):
    # Digits only: int() would also accept "+1", " 1", "1_0" or non-ASCII digits.
    if not s or len(s) > 19:
        raise ProtocolError("%s is not an integer: %r" % (what, s if s is None else s[:20]))
    for b in s.encode():
        if not 48 <= b <= 57:  # ASCII "0".."9"
            raise ProtocolError("%s is not an integer: %r" % (what, s[:20]))
    return int(s)


def parse(topic, device_id, module_id=None):
    """What a topic from the hub is, or None when it is none of these (not ours, like
    azure-sdk-for-c); ProtocolError when it is one of them but malformed:
      ("message", properties, input_name)   C2D (input_name None) or a module input
      ("method", name, rid)                 $iothub/methods/POST/{name}/?$rid={rid}
      ("twin", status, rid, version)        $iothub/twin/res/{status}/?$rid=..[&$version=..]
      ("desired", version)                  a desired PATCH (version 0 if the topic has none)
    """
    if topic.startswith(_TWIN_RES):
        rest = topic[len(_TWIN_RES) :]
        slash = rest.find("/")
        if slash < 0:
            slash = len(rest)
        status = uint(rest[:slash], "twin response status")
        props = decode(rest[slash + 1 :])
        rid = props.get("$rid")
        if not rid:
            raise ProtocolError("twin response without a $rid")
        v = props.get("$version", -1)
        return "twin", status, rid, None if v == -1 else uint(v, "twin response $version")
    if topic.startswith(_TWIN_DESIRED):
        v = decode(topic[len(_TWIN_DESIRED) :]).get("$version", -1)
        return "desired", 0 if v == -1 else uint(v, "desired properties $version")
    if topic.startswith(_METHOD_POST):
        rest = topic[len(_METHOD_POST) :]
        slash = rest.find("/")
        if slash <= 0:
            raise ProtocolError("method request topic without a method name or $rid")
        rid = decode(rest[slash + 1 :]).get("$rid")
        if not rid:
            raise ProtocolError("method request without a $rid")
        return "method", unquote(rest[:slash]), rid
    if module_id:
        prefix = "devices/%s/modules/%s/inputs/" % (device_id, module_id)
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :]
        slash = rest.find("/")
        if slash < 0:
            slash = len(rest)
        if not slash:
            raise ProtocolError("module input topic without an input name")
        return "message", decode(rest[slash + 1 :]), unquote(rest[:slash])
    prefix = "devices/%s/messages/devicebound" % device_id
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    if rest and rest[0] != "/":
        return None
    return "message", decode(rest[1:]), None


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
                c._log_line(0, "twin request %s failed with status %d" % (rid, status))
    elif kind == "desired":
        c._twin().patch(payload, r[1])
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
        c._log_line(1, "ignored a message on an unexpected topic")
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
                c._log_line(0, "on_message raised %r" % (e,))


def respond(c, name, req, r, e=None):
    """Answer method request req (its $rid): r is what the handler returned, (status, payload) or a
    payload answered with 200; e the exception it raised instead (answered with 500)."""
    if e is None:
        status = 200
        if isinstance(r, tuple) and len(r) == 2:
            status, r = r
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 65535:
            e = ValueError("method handler returned status %r" % (status,))
        else:
            try:
                body = b"" if r is None else dumps(r).encode()
            except Exception as x:
                e = x
    if e is not None:
        status = 500
        body = dumps({"error": type(e).__name__ + ": " + str(e)}).encode()
        c._log_line(0, "method %s raised %r" % (name, e))
    c._publish("$iothub/methods/res/%d/?$rid=%s" % (status, quote(req)), body)
