# Device connection strings, as the Azure portal and CLI write them:
#   HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=<base64>
#   HostName=...;DeviceId=...;ModuleId=...;SharedAccessKey=...
#   HostName=...;DeviceId=...;x509=true
#   ...;GatewayHostName=my-edge-gateway     (connect here; HostName stays the hub's name)
# Field names are case-sensitive, as Azure writes them. Errors name the field but never
# echo a key value.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError
from .saskey import decode_key

_FIELDS = const(
    (
        "HostName",
        "DeviceId",
        "ModuleId",
        "SharedAccessKey",
        "SharedAccessKeyName",
        "GatewayHostName",
        "x509",
    )
)  # inlined: no global name


def _err(msg):
    return ConfigError("connection string: " + msg)


def parse_connection_string(cs):
    """Parse a device or module connection string into a dict.

    Keys present: those given among HostName, DeviceId, ModuleId, SharedAccessKey,
    SharedAccessKeyName, GatewayHostName (str), and always "x509" (bool)."""
    if not isinstance(cs, str):
        raise _err("expected a str")
    cs = cs.strip()
    if not cs:
        raise _err("it is empty")
    out = {}
    n = 0
    last = None
    for seg in cs.split(";"):
        n += 1
        seg = seg.strip()
        if not seg:
            continue  # tolerate ";;" and a trailing ";"
        eq = seg.find("=")
        if eq < 0:
            # Don't echo the segment: it may be a piece of a key.
            raise _err("segment %d has no '=' (expected Name=value)" % n)
        name = seg[:eq].strip()
        value = seg[eq + 1 :].strip()
        if not name:
            raise _err("segment %d has an empty field name" % n)
        if name not in _FIELDS:
            for f in _FIELDS:
                if f.lower() == name.lower():
                    raise _err(
                        "unknown field %s (field names are case-sensitive: did you mean "
                        "%s?)" % (name, f)
                    )
            # Not echoed: after a key, a ";" inside it makes a piece of the key look like a field.
            raise _err(
                "segment %d is not a known field%s; expected one of %s"
                % (
                    n,
                    " (a ';' inside SharedAccessKey?)" if last == "SharedAccessKey" else "",
                    ", ".join(_FIELDS),
                )
            )
        if name in out:
            raise _err("duplicate field %s" % name)
        if not value:
            raise _err("field %s is empty" % name)
        out[name] = value
        last = name

    x509 = out.get("x509")
    if x509 is None:
        out["x509"] = False
    elif x509.lower() == "true":
        out["x509"] = True
    elif x509.lower() == "false":
        out["x509"] = False
    else:
        raise _err("x509 must be true or false")

    for name in ("HostName", "DeviceId"):
        if name not in out:
            raise _err("missing %s (a required field)" % name)
    has_key = "SharedAccessKey" in out
    if out["x509"] and has_key:
        raise _err("SharedAccessKey and x509=true are mutually exclusive")
    if not out["x509"] and not has_key:
        raise _err("missing SharedAccessKey (or x509=true for certificate authentication)")
    if has_key:
        decode_key(out["SharedAccessKey"], "connection string: SharedAccessKey")
    return out
