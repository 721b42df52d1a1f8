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
