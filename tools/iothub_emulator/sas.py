"""SAS token verification as the hub does it (docs/protocol.md 3.2).

The SDKs disagree on how they encode `sr` (uppercase `%2F`, lowercase `%2f`, raw `/` in Java) and on
field order, and the real service accepts them all. So: parse the `k=v` fields in any order, compute
HMAC-SHA256(key, sr_as_sent + "\\n" + se_as_sent), compare it with the URL-decoded `sig`, then check the
URL-decoded `sr` against the identity's resource (host case-insensitively, path by whole segment) and
reject tokens whose `se` is not in the future.
"""

import base64
import binascii
import hashlib
import hmac
from urllib.parse import unquote

PREFIX = "SharedAccessSignature "
FIELDS = ("sr", "sig", "se", "skn")


class SASError(Exception):
    """The token is malformed, wrongly signed, expired or for another resource. The message never
    contains the signature or the key."""


def parse(token):
    """Split a token into {field: value as sent}. Raises SASError when malformed."""
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise SASError("not a SharedAccessSignature token")
    fields = {}
    for part in token[len(PREFIX) :].split("&"):
        name, eq, value = part.partition("=")
        if not eq:
            raise SASError("token field %r has no '='" % name[:16])
        if name not in FIELDS:
            raise SASError("unknown token field %r" % name[:16])
        if name in fields:
            raise SASError("duplicate token field %r" % name)
        fields[name] = value
    for name in ("sr", "sig", "se"):
        if not fields.get(name):
            raise SASError("token lacks %r" % name)
    return fields


def decode_key(key_b64):
    try:
        key = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SASError("registered key is not valid base64") from None
    if not key:
        raise SASError("registered key is empty")
    return key


def signature_ok(fields, key_b64):
    msg = (fields["sr"] + "\n" + fields["se"]).encode("utf-8")
    want = hmac.new(decode_key(key_b64), msg, hashlib.sha256).digest()
    try:
        got = base64.b64decode(unquote(fields["sig"]), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(want, got)


def resource_segments(fields):
    """Decoded `sr` as [host, seg, seg, ...] (trailing '/' ignored; host lower-cased)."""
    sr = unquote(fields["sr"]).rstrip("/")
    segs = sr.split("/")
    segs[0] = segs[0].lower()
    return segs


def expiry(fields):
    se = fields["se"]
    if not se.isdigit():
        raise SASError("token 'se' is not a decimal number of seconds")
    return int(se)


def verify(token, key_b64, host, path, now, exact=True):
    """Verify `token` for resource `host`/`path` (path: list of segments, e.g. ["devices", "d1"]).

    exact=True: the token's resource must be exactly the identity's (device or module registry key).
    exact=False: any whole-segment prefix of it is enough (shared access policy tokens).
    Returns the parsed fields (with "expiry" as int). Raises SASError naming the problem."""
    fields = parse(token)
    se = expiry(fields)
    if not signature_ok(fields, key_b64):
        raise SASError("signature does not match (wrong key, or sr/se altered)")
    segs = resource_segments(fields)
    if segs[0] != host.lower():
        raise SASError("token resource host %r is not this hub %r" % (segs[0], host))
    want = list(path)
    got = segs[1:]
    if got != want[: len(got)] or (exact and len(got) != len(want)):
        raise SASError(
            "token resource %r does not cover %r" % ("/".join(segs), "/".join([host] + want))
        )
    if se <= now:
        raise SASError("token expired at se=%d (now %d)" % (se, int(now)))
    fields = dict(fields)
    fields["expiry"] = se
    return fields
