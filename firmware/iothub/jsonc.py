# Compact JSON for payloads on the wire: no spaces after "," and ":" (fewer bytes per message).
import json


def dumps(obj):
    try:
        return json.dumps(obj, separators=(",", ":"))
    except TypeError:  # MicroPython builds whose json.dumps has no separators argument
        return json.dumps(obj)
