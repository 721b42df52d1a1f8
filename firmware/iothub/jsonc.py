# Compact JSON for payloads on the wire: no spaces after "," and ":" (fewer bytes per message).
import json

from .errors import explained


def dumps(x):
    try:
        return json.dumps(x, separators=(",", ":"))
    except TypeError:  # MicroPython builds whose json.dumps has no separators argument
        return json.dumps(x)


def body(payload, ct, ce):
    """A telemetry payload that is not bytes-like, as bytes: (payload, content type,
    encoding); dict and list travel as JSON. Here, not in the resident clientbase: a device
    that sends bytes never loads it, one that sends str or JSON keeps it after the first."""
    if isinstance(payload, str):
        return payload.encode(), ct, ce
    if isinstance(payload, (dict, list)):
        return (
            dumps(payload).encode(),
            "application/json" if ct is None else ct,
            "utf-8" if ce is None else ce,
        )
    raise explained("reports", "error", 3, ())


def loads(payload):
    """JSON from the hub; None for an empty payload; ProtocolError when it is not JSON."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        raise explained("inerr", "error", 12, None)  # (the text is not resident)
