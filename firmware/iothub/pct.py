# Percent-decoding of text received from the hub (topic property bags, method names).
# Encoding (quote) lives in iothub.topics, which every client loads; this half loads only
# with what parses the hub's topics (routes, DPS).
from .errors import ProtocolError


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    c |= 32  # case-insensitive
    if 97 <= c <= 102:
        return c - 87
    return -1


def unquote(s):
    """Decode %XX escapes (hex case-insensitive). "+" stays "+"; a "%" not followed by two
    hex digits is kept as is (like urllib.parse.unquote). Text received from the hub:
    escapes that decode to invalid UTF-8 raise ProtocolError (urllib would substitute U+FFFD)."""
    if "%" not in s:
        return s
    b = s.encode()
    n = len(b)
    out = bytearray()
    i = 0
    while i < n:
        c = b[i]
        if c == 37 and i + 2 < n:
            hi = _hexval(b[i + 1])
            lo = _hexval(b[i + 2])
            if hi >= 0 and lo >= 0:
                out.append(hi * 16 + lo)
                i += 3
                continue
        out.append(c)
        i += 1
    from .utf8 import valid

    if not valid(out):
        raise ProtocolError("percent-encoded text does not decode to valid UTF-8")
    return out.decode()
