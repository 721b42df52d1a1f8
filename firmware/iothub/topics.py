# IoT Hub MQTT names: client id, user name, topics and property bags (docs/protocol.md
# section 2). Builders return str; parsers return a small result, or None when the topic
# is not theirs ("not mine", like azure-sdk-for-c), and raise ProtocolError when the topic
# is theirs but malformed. No `re`: plain str methods.

from .errors import ConfigError, ProtocolError
from .sas import quote, unquote

API_VERSION = "2021-04-12"

TWIN_RES_SUB = "$iothub/twin/res/#"
TWIN_DESIRED_SUB = "$iothub/twin/PATCH/properties/desired/#"
METHODS_SUB = "$iothub/methods/POST/#"

_TWIN_RES = "$iothub/twin/res/"
_TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/"
_METHOD_POST = "$iothub/methods/POST/"

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
    for c in "/#+":
        if c in value:
            raise ConfigError("%s must not contain %r" % (what, c))
    return value


def client_id(device_id, module_id=None):
    """MQTT client id: {device_id} or {device_id}/{module_id}."""
    if module_id is None:
        return _id(device_id, "device id")
    return _id(device_id, "device id") + "/" + _id(module_id, "module id")


def username(hostname, device_id, module_id=None, model_id=None):
    """{host}/{device}[/{module}]/?api-version=2021-04-12[&model-id={quote(model)}]"""
    if not isinstance(hostname, str) or not hostname:
        raise ConfigError("hostname must be a non-empty str")
    u = hostname + "/" + client_id(device_id, module_id) + "/?api-version=" + API_VERSION
    if model_id is not None:
        if not isinstance(model_id, str) or not model_id:
            raise ConfigError("model id must be a non-empty str")
        u += "&model-id=" + quote(model_id)
    return u


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
        items.sort(key=lambda kv: kv[0])
    return items


def _value(v):
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError("property values must be str, int, float or None")
    return quote(str(v))


def _append(parts, enc_name, value):
    if value is None:
        parts.append(enc_name)
    else:
        parts.append(enc_name + "=" + _value(value))


def encode_property_bag(props):
    """ "k=v&k2=v2" with names and values percent-encoded; a None value gives "k", "" gives "k=".

    A dict is encoded sorted by name (MicroPython dicts have no fixed order); a list of pairs
    keeps its order."""
    parts = []
    for name, value in _items(props, isinstance(props, dict)):
        _append(parts, quote(name), value)
    return "&".join(parts)


def decode_property_bag(s):
    """Inverse of encode_property_bag; tolerates a leading "?". "k" -> None, "k=" -> ""."""
    out = {}
    if s.startswith("?"):
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


# ---- telemetry ---------------------------------------------------------------------------


def _events_prefix(device_id, module_id):
    if module_id is None:
        return "devices/" + _id(device_id, "device id") + "/messages/events/"
    return (
        "devices/"
        + _id(device_id, "device id")
        + "/modules/"
        + _id(module_id, "module id")
        + "/messages/events/"
    )


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
        _append(parts, quote(name), value)
    return _events_prefix(device_id, module_id) + "&".join(parts)


# ---- cloud-to-device and module inputs ---------------------------------------------------


def c2d_subscribe_topic(device_id):
    return "devices/" + _id(device_id, "device id") + "/messages/devicebound/#"


def parse_c2d_topic(topic, device_id):
    """Decoded properties of a C2D topic for this device ({} when none), or None if not one."""
    prefix = "devices/" + device_id + "/messages/devicebound"
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    if not rest:
        return {}
    if rest[0] != "/":
        return None
    return decode_property_bag(rest[1:])


def module_inputs_subscribe_topic(device_id, module_id):
    return (
        "devices/"
        + _id(device_id, "device id")
        + "/modules/"
        + _id(module_id, "module id")
        + "/inputs/#"
    )


def parse_module_input_topic(topic, device_id, module_id):
    """(input_name, properties) for devices/{d}/modules/{m}/inputs/{input}/{bag}, else None."""
    prefix = "devices/" + device_id + "/modules/" + module_id + "/inputs/"
    if not topic.startswith(prefix):
        return None
    rest = topic[len(prefix) :]
    slash = rest.find("/")
    if slash < 0:
        name, bag = rest, ""
    else:
        name, bag = rest[:slash], rest[slash + 1 :]
    if not name:
        raise ProtocolError("module input topic without an input name")
    return unquote(name), decode_property_bag(bag)


# ---- twin --------------------------------------------------------------------------------


def _rid(rid):
    if isinstance(rid, int) and not isinstance(rid, bool):
        return str(rid)
    if isinstance(rid, str) and rid:
        return quote(rid)
    raise ConfigError("request id must be an int or a non-empty str")


def twin_get_topic(rid):
    return "$iothub/twin/GET/?$rid=" + _rid(rid)


def twin_reported_topic(rid):
    return "$iothub/twin/PATCH/properties/reported/?$rid=" + _rid(rid)


def _int(s, what):
    # Digits only: int() would also accept "+1", " 1", "1_0" or non-ASCII digits.
    if not s or len(s) > 19:
        raise ProtocolError("%s is not an integer: %r" % (what, s if s is None else s[:20]))
    for c in s:
        if c not in "0123456789":
            raise ProtocolError("%s is not an integer: %r" % (what, s[:20]))
    return int(s)


def parse_twin_response(topic):
    """(status, rid, version or None) for $iothub/twin/res/{status}/?$rid=..[&$version=..]."""
    if not topic.startswith(_TWIN_RES):
        return None
    rest = topic[len(_TWIN_RES) :]
    slash = rest.find("/")
    if slash < 0:
        status_s, bag = rest, ""
    else:
        status_s, bag = rest[:slash], rest[slash + 1 :]
    status = _int(status_s, "twin response status")
    props = decode_property_bag(bag)
    rid = props.get("$rid")
    if not rid:
        raise ProtocolError("twin response without a $rid")
    version = None
    if "$version" in props:
        version = _int(props["$version"], "twin response $version")
    return status, rid, version


def parse_desired_topic(topic):
    """Version of a desired-properties PATCH (0 if the topic has none), or None if not one."""
    if not topic.startswith(_TWIN_DESIRED):
        return None
    props = decode_property_bag(topic[len(_TWIN_DESIRED) :])
    if "$version" not in props:
        return 0
    return _int(props["$version"], "desired properties $version")


# ---- direct methods ----------------------------------------------------------------------


def parse_method_topic(topic):
    """(method name, rid) for $iothub/methods/POST/{name}/?$rid={rid}, or None."""
    if not topic.startswith(_METHOD_POST):
        return None
    rest = topic[len(_METHOD_POST) :]
    slash = rest.find("/")
    if slash <= 0:
        raise ProtocolError("method request topic without a method name or $rid")
    name = unquote(rest[:slash])
    rid = decode_property_bag(rest[slash + 1 :]).get("$rid")
    if not rid:
        raise ProtocolError("method request without a $rid")
    return name, rid


def method_response_topic(status, rid):
    """$iothub/methods/res/{status}/?$rid={rid}"""
    if not isinstance(status, int) or isinstance(status, bool) or not 0 <= status <= 65535:
        raise ConfigError("method status must be an int in 0..65535")
    return "$iothub/methods/res/%d/?$rid=%s" % (status, _rid(rid))
