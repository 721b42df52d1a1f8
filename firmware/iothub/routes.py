# Topics of what the hub sends and of the requests answered on them: C2D and module
# inputs, direct methods, twin GET/PATCH and desired patches (docs/protocol.md section
# 2). Parsers return a small result, or None when the topic is not theirs ("not mine",
# like azure-sdk-for-c), and raise ProtocolError when it is theirs but malformed.
# Loaded only with a handler or a twin call (a telemetry-only client never needs it).

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError, ProtocolError
from .pct import unquote
from .topics import _id, quote

TWIN_RES_SUB = "$iothub/twin/res/#"
TWIN_DESIRED_SUB = "$iothub/twin/PATCH/properties/desired/#"
METHODS_SUB = "$iothub/methods/POST/#"

_TWIN_RES = const("$iothub/twin/res/")
_TWIN_DESIRED = const("$iothub/twin/PATCH/properties/desired/")
_METHOD_POST = const("$iothub/methods/POST/")


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
        + "/inputs/"
        + "#"
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
        if not "0" <= c <= "9":
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
