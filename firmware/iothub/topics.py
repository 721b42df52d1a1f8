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


from .errors import explained

# Bytes that quote(s, safe="") leaves alone: RFC 3986 unreserved characters.
_UNRESERVED = const(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
_HEX = const(b"0123456789ABCDEF")

# Codes of the ConfigError texts in iothub.topicserr (loaded for one message: not resident).
_C_TYPE = const(0)
_C_DEVICE = const(1)  # 1, 2: device id, module id
_C_PROPS = const(3)
_C_NAME = const(4)
_C_VALUE = const(5)
_C_SYSTEM = const(6)  # 6..10: message_id .. content_encoding


def _as_bytes(s):
    if isinstance(s, str):
        return s.encode()
    if isinstance(s, (bytes, bytearray)):
        return s
    raise explained("topicserr", "config", _C_TYPE, s)


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


def _id(value, what):
    # Device and module ids are used raw in topics and user names (the hub never decodes
    # them); the characters that would break a topic are refused. what: _C_DEVICE + 0 or 1.
    if not isinstance(value, str) or not value or "/" in value or "#" in value or "+" in value:
        raise explained("topicserr", "config", what, value)
    return value


def _bag(parts, props, sort):
    # props (a dict, or a list of (name, value) pairs; None: none) appended to parts as
    # name=value, percent-encoded (a None value gives the name alone); sort: by name.
    if props is None:
        return parts
    if isinstance(props, dict):
        props = props.items()
    elif not isinstance(props, (list, tuple)):
        raise explained("topicserr", "config", _C_PROPS, None)
    items = []
    for it in props:
        if not isinstance(it, (list, tuple)) or len(it) != 2:
            raise explained("topicserr", "config", _C_PROPS, None)
        name, value = it
        if not isinstance(name, str) or not name:
            raise explained("topicserr", "config", _C_NAME, None)
        if value is not None and not isinstance(value, str):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise explained("topicserr", "config", _C_VALUE, None)
            value = str(value)
        items.append((name, value))
    if sort:
        items.sort(key=lambda p: p[0])
    for name, value in items:
        parts.append(quote(name) if value is None else quote(name) + "=" + quote(value))
    return parts


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
    $.uid $.ct $.ce, with these literal keys as the python SDK sends them: quote() would
    turn "$" into "%24"; the hub decodes both), then the custom properties sorted by name."""
    parts = []
    i = 0
    for v in (message_id, correlation_id, user_id, content_type, content_encoding):
        if v is not None:
            if not isinstance(v, str):
                raise explained("topicserr", "config", _C_SYSTEM + i, None)
            parts.append(("$.mid=", "$.cid=", "$.uid=", "$.ct=", "$.ce=")[i] + quote(v))
        i += 1
    t = "devices/" + _id(device_id, _C_DEVICE)
    if module_id is not None:
        t += "/modules/" + _id(module_id, _C_DEVICE + 1)
    return t + "/messages/events/" + "&".join(_bag(parts, properties, True))


def __getattr__(name):
    # client_id, username, encode_property_bag, API_VERSION (iothub.topicsx, cold)
    from . import topicsx

    try:
        return getattr(topicsx, name)
    except AttributeError:
        raise AttributeError(name)
