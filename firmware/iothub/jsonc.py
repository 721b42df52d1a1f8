# Compact JSON for payloads on the wire: no spaces after "," and ":" (fewer bytes per message).
import json

from .errors import explained


def dumps(x):
    try:
        return json.dumps(x, separators=(",", ":"))
    except TypeError:  # MicroPython builds whose json.dumps has no separators argument
        return json.dumps(x)


def loads(payload):
    """JSON from the hub; None for an empty payload; ProtocolError when it is not JSON."""
    if not payload:
        return None
    try:
        return json.loads(payload)
    except ValueError:
        raise explained("inerr", "error", 12, None)  # (the text is not resident)
