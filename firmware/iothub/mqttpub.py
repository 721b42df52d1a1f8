# PUBLISH packets from the hub: parsing them, and dropping those a client cannot take (larger
# than max_packet, no memory for them, a topic that is empty, not UTF-8 or holds a wildcard or
# NUL), read through without buffering. Part of iothub.mqtt's Decoder, loaded with the first
# PUBLISH the hub sends: a telemetry-only device (which receives only PUBACK and PINGRESP)
# never loads it.
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import explained
from .mqtt import DROP_TOPIC, Packet
from .pct import valid

# Messages of iothub.mqtterr (after iothub.mqtt's _E_*).
_E_NO_TOPIC_LEN = const(22)
_E_TOPIC_LEN = const(23)
_E_NO_PID = const(24)
_E_PID0 = const(25)
_E_STALE = const(11)
_PUBLISH = const(3)  # iothub.mqtt.PUBLISH


# Packet.topic and Packet.payload (iothub.mqtt.Packet), made on first access from the
# decoder's buffer for a refilled packet. Added to the class here, with the parsing: a
# telemetry-only client never loads this module, nor these.
def _topic(p):
    if p.type != _PUBLISH:  # a refilled packet keeps the last PUBLISH's fields: not its own
        return None
    if p._topic is None and p._buf is not None:
        if p._dec._gen != p._gen:  # the decoder's buffer has moved on
            raise explained("mqtterr", "error", _E_STALE, ())
        p._topic = str(memoryview(p._buf)[p._toff : p._toff + p.topic_len], "utf-8")
    return p._topic


def _payload(p):
    if p.type != _PUBLISH:
        return None
    if p._payload is None and p._buf is not None:
        if p._dec._gen != p._gen:
            raise explained("mqtterr", "error", _E_STALE, ())
        p._payload = bytes(memoryview(p._buf)[p._poff : p._poff + p.payload_len])
    return p._payload


Packet.topic = property(_topic)
Packet.payload = property(_payload)


def parse(decoder, p, into, buf, s, i, size, end, flags):
    """Fill Packet p from the PUBLISH at buf[s:end] (body from i). False when it was dropped
    (consumed and noted; the caller hands out the DROPPED packet)."""
    qos = (flags >> 1) & 3
    if size < 2:
        decoder._fail(_E_NO_TOPIC_LEN)
    tlen = (buf[i] << 8) | buf[i + 1]
    toff = i + 2
    if toff + tlen > end:
        decoder._fail(_E_TOPIC_LEN, tlen)
    poff = toff + tlen + (2 if qos else 0)
    if poff > end:
        decoder._fail(_E_NO_PID)
    if qos:
        pid = (buf[poff - 2] << 8) | buf[poff - 1]
        if not pid:
            decoder._fail(_E_PID0, qos)
        p.pid = pid
    if (
        tlen == 0
        or not valid(buf, toff, toff + tlen)
        or buf.find(b"\x00", toff, toff + tlen) >= 0
        or buf.find(b"#", toff, toff + tlen) >= 0
        or buf.find(b"+", toff, toff + tlen) >= 0
    ):
        # Well framed, but no topic a client can route: dropped, not fatal.
        decoder._consume(end)
        _dropped(decoder).append((p.pid, qos, end - s, DROP_TOPIC))
        return False
    p.topic_len = tlen
    p.payload_len = end - poff
    if into is None:
        # Own copies now: the buffer is reused by the next feed().
        mv = memoryview(buf)
        p._topic = str(mv[toff : toff + tlen], "utf-8")
        p._payload = bytes(mv[poff:end])
    else:
        # The PUBLISH fields (not preset by Packet: only a client that receives a PUBLISH
        # holds them): set for every PUBLISH, so the packet's table grows once, here.
        p._topic = p._payload = None
        p._buf = buf
        p._toff = toff
        p._poff = poff
        p._dec = decoder
        p._gen = decoder._gen
    return True


# State of the PUBLISH being read through, in one list (decoder._drop): fewer names to intern.
_POS = const(0)  # bytes of it consumed so far
_HDR = const(1)  # fixed header length: the topic length follows it
_TL = const(2)  # topic length, once seen (-1 before)
_HI = const(3)  # high byte of a 16-bit field split across chunks
_PID = const(4)
_QOS = const(5)
_WHY = const(6)


def begin_drop(decoder, h, total, flags, why):
    # Read a PUBLISH through without buffering it; keep only its packet id.
    decoder._skip = total
    decoder._drop = [0, h, -1, 0, 0, (flags >> 1) & 3, why]  # h: fixed header length
    drop_some(decoder)


def drop_some(decoder):
    d = decoder._drop
    s = decoder._scan
    p0 = d[_POS]
    take = min(decoder._end - s, decoder._skip - p0)
    for k in range(2):  # topic length (2 bytes), then the packet id behind the topic
        if k and (d[_TL] < 0 or not d[_QOS]):
            break
        at = d[_HDR] + (2 + d[_TL] if k else 0)
        for j in range(2):
            if p0 <= at + j < p0 + take:  # this byte of the packet is in this chunk
                b = decoder._buf[s + at + j - p0]
                if not j:
                    d[_HI] = b
                else:
                    d[_PID if k else _TL] = (d[_HI] << 8) | b
    rest = decoder._end - s - take
    if rest:  # bytes after the dropped packet move to where it started
        decoder._buf[s : s + rest] = bytes(memoryview(decoder._buf)[s + take : decoder._end])
    decoder._end = s + rest
    d[_POS] = p0 + take
    if d[_POS] == decoder._skip:
        decoder._skip = 0
        _dropped(decoder).append((d[_PID], d[_QOS], d[_POS], d[_WHY]))


def _dropped(decoder):
    # The decoder's list of (pid, qos, size, why) not yet handed out, made on first use.
    if decoder._dropped is None:
        decoder._dropped = []
    return decoder._dropped
