# Shared access signatures (SAS) for IoT Hub and DPS, plus the percent-encoding and
# HMAC-SHA256 they need. Pure: no clock, no I/O; the caller passes the expiry time.
#
# Token format (docs/protocol.md section 3):
#   SharedAccessSignature sr={quote(uri)}&sig={quote(b64(hmac(key, quote(uri) + "\n" + se)))}&se={se}[&skn={name}]
# The URL-encoded resource URI is what gets signed (azure-iot-sdk-python sastoken.py,
# azure-sdk-for-c az_iot_hub_client_sas.c). HMAC after RFC 2104, written on hashlib.sha256
# because MicroPython has no hmac module.
#
# What a connect needs to sign its token is here; decoding a key strictly, the DPS helpers,
# string_to_sign() and signature() are in iothub.saskey, reached through this module as
# well (sas.decode_key(...) loads it): a device signing its token never loads them.

import binascii
import hashlib

from .errors import ConfigError
from .topics import _as_bytes, quote  # noqa: F401 - quote is part of this API


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) of bytes `msg` under bytes `key`."""
    key = _as_bytes(key)
    msg = _as_bytes(msg)
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    ipad = bytearray(64)
    opad = bytearray(64)
    for i in range(64):
        k = key[i] if i < len(key) else 0
        ipad[i] = k ^ 0x36
        opad[i] = k ^ 0x5C
    inner = hashlib.sha256(ipad)
    inner.update(msg)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def b64encode(data):
    """Standard base64 (with padding) as str, no newline."""
    return binascii.b2a_base64(data).decode().strip()


def _key_bytes(key):
    if isinstance(key, str):
        from .saskey import decode_key

        return decode_key(key)
    if isinstance(key, (bytes, bytearray)):
        if not key:
            raise ConfigError("shared access key is empty")
        return key
    raise ConfigError("key must be a base64 str or raw bytes")


def _check_expiry(expiry):
    # time.time() is a float on the unix port and an int on boards: take both (whole
    # seconds, rounded down). The epoch must be 1970's whatever the port: on esp32 time.time()
    # counts from 2000, so pass iothub.clock.unix_time() + ttl, not time.time() + ttl.
    if isinstance(expiry, float) and 0 <= expiry < 1e18:  # not NaN, inf or negative
        expiry = int(expiry)
    if not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < 0:
        raise ConfigError(
            "SAS expiry must be a non-negative number of seconds since 1970-01-01, e.g. "
            "iothub.clock.unix_time() + 3600 (got %s)" % type(expiry).__name__
        )
    return expiry


def token_from_signature(encoded_uri, sig_b64, expiry, key_name=None):
    """Assemble a token from an already URL-encoded URI and a base64 signature made elsewhere
    (e.g. by a secure element)."""
    tok = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (
        encoded_uri,
        quote(sig_b64),
        _check_expiry(expiry),
    )
    if key_name:
        tok = "%s&skn=%s" % (tok, quote(key_name))
    return tok


def sas_token(resource_uri, key, expiry, key_name=None):
    """SAS token for `resource_uri` valid until `expiry` (Unix seconds: an int, or a float
    such as time.time() + 3600 on the unix port, rounded down; iothub.clock.unix_time() + ttl
    works on every port).

    key: base64 str (as in a connection string) or raw bytes. key_name: policy name (skn),
    omitted for device and module keys."""
    if not isinstance(resource_uri, str) or not resource_uri:
        raise ConfigError("SAS resource URI must be a non-empty str")
    sr = quote(resource_uri)
    msg = sr + "\n" + str(_check_expiry(expiry))
    sig = b64encode(hmac_sha256(_key_bytes(key), msg))
    return token_from_signature(sr, sig, expiry, key_name)


def _need(value, what):
    if not isinstance(value, str) or not value:
        raise ConfigError("%s must be a non-empty str" % what)


def device_resource_uri(hostname, device_id, module_id=None):
    """{hostname}/devices/{device_id}[/modules/{module_id}]"""
    _need(hostname, "hostname")
    _need(device_id, "device id")
    uri = "%s/devices/%s" % (hostname, device_id)
    if module_id is not None:
        _need(module_id, "module id")
        uri += "/modules/" + module_id
    return uri


def __getattr__(name):
    # decode_key, string_to_sign, signature, dps_resource_uri, derive_device_key from
    # iothub.saskey; unquote from iothub.pct (a token is made without either)
    if name == "unquote":
        from .pct import unquote

        return unquote
    from . import saskey

    return getattr(saskey, name)
