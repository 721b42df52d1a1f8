# IoT Hub MQTT names a telemetry-only device needs: the telemetry topic and its property
# bag, percent-encoded (docs/protocol.md section 2). The client id, the user name and the
# property-bag encoder on its own run once per client or only in tools: they are in
# iothub.topicsx, found through this module's __getattr__ (same names as ever), so that a
# device sending telemetry with properties keeps only this module. What the hub sends
# (C2D, methods, twin) is parsed by iothub.inbound, loaded only when a handler or twin
# call needs it. Builders return str. No `re`: plain str methods.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError

# Bytes that quote(s, safe="") leaves alone: RFC 3986 unreserved characters.
_UNRESERVED = const(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_HEX = const(b"0123456789ABCDEF")


def _as_bytes(s):
    if isinstance(s, str):
        return s.encode()
    if isinstance(s, (bytes, bytearray)):
        return s
    raise ConfigError("expected str or bytes, got %s" % type(s).__name__)


def quote(s):
    """Percent-encode everything but A-Z a-z 0-9 - _ . ~ (UTF-8, uppercase hex, space -> %20).

    Same result as CPython's urllib.parse.quote(s, safe="")."""
    b = _as_bytes(s)
    out = None
    for i in range(len(b)):
        c = b[i]
        if c in _UNRESERVED:
            if out is not None:
                out.append(c)
            continue
        if out is None:
            out = bytearray(b[:i])
        out.append(37)  # "%"
        out.append(_HEX[c >> 4])
        out.append(_HEX[c & 15])
    if out is None:
        return s if isinstance(s, str) else bytes(b).decode()
    return out.decode()


# System properties a device may set on telemetry, with the literal "$.x" keys the python
# SDK sends (quote() would turn "$" into "%24"; the hub decodes both).
_SYSTEM_PROPS = (
    ("message_id", "$.mid"),
    ("correlation_id", "$.cid"),
    ("user_id", "$.uid"),
    ("content_type", "$.ct"),
    ("content_encoding", "$.ce"),
)


def _id(value, what):
    # Device and module ids are used raw in topics and user names (the hub never decodes
    # them); the characters that would break a topic are refused.
    if not isinstance(value, str) or not value:
        raise ConfigError("%s must be a non-empty str" % what)
    for c in ("/", "#", "+"):
        if c in value:
            raise ConfigError("%s must not contain %r" % (what, c))
    return value


# ---- property bags ----------------------------------------------------------------------


def _items(props, sort):
    if props is None:
        return ()
    if isinstance(props, dict):
        items = list(props.items())
    elif isinstance(props, (list, tuple)):
        items = list(props)
    else:
        raise ConfigError("properties must be a dict or a list of (name, value) pairs")
    for it in items:
        if not isinstance(it, (list, tuple)) or len(it) != 2:
            raise ConfigError("properties must be a dict or a list of (name, value) pairs")
        if not isinstance(it[0], str) or not it[0]:
            raise ConfigError("property names must be non-empty str")
    if sort:
        items.sort(key=lambda p: p[0])
    return items


def _append(parts, name, value):
    # name=value (percent-encoded) to the list of parts; a None value gives the name alone.
    name = quote(name)
    if value is None:
        parts.append(name)
        return
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("property values must be str, int, float or None")
        value = str(value)
    parts.append(name + "=" + quote(value))


# ---- telemetry ---------------------------------------------------------------------------


def telemetry_topic(
    device_id,
    module_id=None,
    properties=None,
    message_id=None,
    correlation_id=None,
    user_id=None,
    content_type=None,
    content_encoding=None,
):
    """devices/{d}[/modules/{m}]/messages/events/{bag}: system properties first ($.mid $.cid
    $.uid $.ct $.ce), then the custom properties sorted by name."""
    system = (message_id, correlation_id, user_id, content_type, content_encoding)
    parts = []
    for i in range(len(_SYSTEM_PROPS)):
        v = system[i]
        if v is not None:
            if not isinstance(v, str):
                raise ConfigError("%s must be a str" % _SYSTEM_PROPS[i][0])
            parts.append(_SYSTEM_PROPS[i][1] + "=" + quote(v))
    for name, value in _items(properties, True):
        _append(parts, name, value)
    t = "devices/" + _id(device_id, "device id")
    if module_id is not None:
        t += "/modules/" + _id(module_id, "module id")
    return t + "/messages/events/" + "&".join(parts)


def __getattr__(name):
    # client_id, username, encode_property_bag, API_VERSION (iothub.topicsx, cold)
    from . import topicsx

    try:
        return getattr(topicsx, name)
    except AttributeError:
        raise AttributeError(name)
