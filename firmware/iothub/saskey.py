# Shared access keys and the SAS helpers a token for IoT Hub does not need: strict base64
# decoding of a key (errors never contain the key), the string a key signs, a bare
# signature, and DPS's resource URI and group-enrollment key derivation. Part of the
# iothub.sas API (sas.decode_key etc. load this module); see sas.py for the token format.

import binascii

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError

_B64 = const(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)  # inlined: no global name


def decode_key(key_b64, what="shared access key"):
    """Strictly decode a base64 key. Errors never contain the key or any part of it."""
    if not isinstance(key_b64, str):
        raise ConfigError("%s must be a base64 string" % what)
    n = len(key_b64)
    if n == 0:
        raise ConfigError("%s is empty" % what)
    if n % 4:
        raise ConfigError(
            "%s is not valid base64: length %d is not a multiple of 4 (truncated when copied?)"
            % (what, n)
        )
    b = key_b64.encode()
    if len(b) != n:
        raise ConfigError("%s is not valid base64: it contains non-ASCII characters" % what)
    pad = 0
    for i in range(n):
        c = b[i]
        if c == 61:  # "="
            pad += 1
        elif pad or c not in _B64:
            raise ConfigError(
                "%s is not valid base64: unexpected character at position %d" % (what, i)
            )
    if pad > 2:
        raise ConfigError("%s is not valid base64: too much '=' padding" % what)
    try:
        raw = binascii.a2b_base64(b)
    except Exception:
        raise ConfigError("%s is not valid base64" % what)
    if not raw:
        raise ConfigError("%s is empty" % what)
    return raw


def string_to_sign(resource_uri, expiry):
    """quote(resource_uri) + "\\n" + expiry: the message the key signs."""
    from .sas import _check_expiry, quote

    return quote(resource_uri) + "\n" + str(_check_expiry(expiry))


def signature(key, message):
    """base64(HMAC-SHA256(key, message)); key is base64 str or raw bytes. Not URL-encoded."""
    from .sas import _key_bytes, b64encode, hmac_sha256

    return b64encode(hmac_sha256(_key_bytes(key), message))


def dps_resource_uri(id_scope, registration_id):
    """{id_scope}/registrations/{registration_id}"""
    from .sas import _need

    _need(id_scope, "the DPS ID scope")
    _need(registration_id, "registration id")
    return id_scope + "/registrations/" + registration_id


def derive_device_key(group_key_b64, registration_id):
    """DPS group enrollment: base64(HMAC-SHA256(b64decode(group key), registration id))."""
    from .sas import _need, b64encode, hmac_sha256

    _need(registration_id, "registration id")
    key = decode_key(group_key_b64, "group enrollment key")
    return b64encode(hmac_sha256(key, registration_id.encode()))
