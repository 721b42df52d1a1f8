# Text received from the hub: percent-decoding (topic property bags, method names) and
# strict UTF-8 validation (topics of PUBLISH packets, decoded escapes). Encoding (quote)
# lives in iothub.topics, which a send with properties loads; this module loads only with what
# parses the hub's packets and topics (mqttpub, inbound, DPS).
from .errors import explained


# Strict UTF-8 validation without allocating. MicroPython's bytes.decode() accepts
# overlong forms, surrogates and code points above U+10FFFF; MQTT (MQTT-1.5.3-1) and
# CPython do not. Rules: RFC 3629 section 4.
def valid(b, i=0, end=-1):
    """True if b[i:end] is well-formed UTF-8 (end=-1: to the end of b)."""
    if end < 0:
        end = len(b)
    while i < end:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        if 0xC2 <= c <= 0xDF:
            k = 1
        elif 0xE0 <= c <= 0xEF:
            k = 2
        elif 0xF0 <= c <= 0xF4:
            k = 3
        else:
            return False
        if i + k >= end:
            return False
        c1 = b[i + 1]
        if (
            (c == 0xE0 and c1 < 0xA0)  # overlong 3-byte form
            or (c == 0xED and c1 > 0x9F)  # UTF-16 surrogates
            or (c == 0xF0 and c1 < 0x90)  # overlong 4-byte form
            or (c == 0xF4 and c1 > 0x8F)  # above U+10FFFF
        ):
            return False
        for j in range(i + 1, i + k + 1):
            if b[j] & 0xC0 != 0x80:
                return False
        i += k + 1
    return True


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
    if not valid(out):
        raise explained("inerr", "error", 13, None)  # (the text is not resident)
    return out.decode()
