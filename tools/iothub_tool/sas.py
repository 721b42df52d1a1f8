"""SAS tokens and keys on the host (docs/protocol.md 3.1, 4.2). Independent of the device
package and of the emulator's verifier, so each checks the others."""

import base64
import binascii
import hashlib
import hmac
import time
from urllib.parse import quote

CS_FIELDS = (
    "HostName",
    "DeviceId",
    "ModuleId",
    "SharedAccessKey",
    "SharedAccessKeyName",
    "GatewayHostName",
    "x509",
)


class ToolError(ValueError):
    """Bad input to the tool. Messages never contain key material."""


def decode_key(key, what="key"):
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ToolError("%s is not valid base64" % what) from None
    if not raw:
        raise ToolError("%s is empty" % what)
    return raw


def resource_uri(host, device_id, module_id=None):
    uri = "%s/devices/%s" % (host, device_id)
    if module_id:
        uri += "/modules/" + module_id
    return uri


def sas_token(uri, key, expiry, key_name=None):
    """SharedAccessSignature sr={quote(uri)}&sig={quote(b64(HMAC-SHA256(key, quote(uri)+'\\n'+se)))}&se={se}[&skn=]"""
    sr = quote(uri, safe="")
    msg = (sr + "\n" + str(int(expiry))).encode("utf-8")
    sig = base64.b64encode(hmac.new(decode_key(key), msg, hashlib.sha256).digest()).decode()
    token = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, quote(sig, safe=""), int(expiry))
    if key_name:
        token += "&skn=" + quote(key_name, safe="")
    return token


def derive_device_key(group_key, registration_id):
    """DPS group enrollment: b64(HMAC-SHA256(b64decode(group key), registration id))."""
    mac = hmac.new(
        decode_key(group_key, "group key"), registration_id.encode("utf-8"), hashlib.sha256
    )
    return base64.b64encode(mac.digest()).decode()


def parse_connection_string(cs):
    """'HostName=...;DeviceId=...;SharedAccessKey=...' -> dict. Raises ToolError naming the problem."""
    out = {}
    for part in cs.strip().split(";"):
        if not part:
            continue
        k, eq, v = part.partition("=")
        if not eq:
            raise ToolError("connection string field %r has no '='" % k[:20])
        if k not in CS_FIELDS:
            raise ToolError(
                "unknown connection string field %r (known: %s)" % (k[:20], ", ".join(CS_FIELDS))
            )
        if k in out:
            raise ToolError("duplicate connection string field %r" % k)
        out[k] = v
    for k in ("HostName", "DeviceId"):
        if not out.get(k):
            raise ToolError("connection string lacks %s" % k)
    return out


def token_from_args(host, device_id, key, module_id=None, ttl=3600, key_name=None, now=None):
    if ttl <= 0:
        raise ToolError("--ttl must be positive seconds")
    expiry = int(now if now is not None else time.time()) + int(ttl)
    return sas_token(resource_uri(host, device_id, module_id), key, expiry, key_name)
