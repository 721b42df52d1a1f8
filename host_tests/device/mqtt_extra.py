# MQTT packets the device package no longer carries (IoT Hub never needs them), written
# for the tests on top of iothub.mqtt so the codec cases and the mosquitto interop run
# keep covering them: a whole PUBLISH (payload copied, retain), UNSUBSCRIBE, CONNECT with a
# will, PUBACK, PINGREQ and DISCONNECT (their senders write these few bytes with
# iothub.mqtt._short themselves) and packet names (iothub.mqtterr
# has them for error texts). Runs on CPython and on the unix port.

import iothub.mqtt as m
import iothub.mqttconn as mc
from iothub.errors import ConfigError


def encode_disconnect(buf):
    return m._short(buf, 0xE0, 0, "DISCONNECT")


def encode_puback(buf, pid):
    m._check_pid(pid)
    return m._short(buf, 0x40, pid, "PUBACK")


def encode_pingreq(buf):
    return m._short(buf, 0xC0, 0, "PINGREQ")


def packet_name(t):
    return m._error(26, t)  # iothub.mqtterr's code for a packet type's name


def encode_publish(buf, topic, payload, qos=0, pid=0, dup=False, retain=False):
    """A whole PUBLISH in buf (payload copied). Returns the packet length."""
    if isinstance(payload, str):
        payload = payload.encode()
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ConfigError("payload must be bytes, bytearray, memoryview or str")
    n = len(payload)
    i = m.encode_publish_header(buf, topic, n, qos, pid, dup)
    if i + n > len(buf):
        raise ConfigError("PUBLISH needs %d bytes, the buffer has %d" % (i + n, len(buf)))
    buf[i : i + n] = payload
    if retain:
        buf[0] |= 1
    return i + n


def _put_str(buf, i, b):
    buf[i] = len(b) >> 8
    buf[i + 1] = len(b) & 0xFF
    buf[i + 2 : i + 2 + len(b)] = b
    return i + 2 + len(b)


def _rl(n):
    out = bytearray()
    while True:
        d = n & 0x7F
        n >>= 7
        out.append(d | 0x80 if n else d)
        if not n:
            return out


def encode_unsubscribe(buf, pid, filters):
    if not filters:
        raise ConfigError("UNSUBSCRIBE needs at least one topic filter")
    fs = [f.encode() if isinstance(f, str) else f for f in filters]
    if not all(fs):
        raise ConfigError("topic filter must not be empty")
    rem = 2 + sum(2 + len(f) for f in fs)
    rl = _rl(rem)
    buf[0] = 0xA2
    buf[1 : 1 + len(rl)] = rl
    i = 1 + len(rl)
    buf[i] = pid >> 8
    buf[i + 1] = pid & 0xFF
    i += 2
    for f in fs:
        i = _put_str(buf, i, f)
    return i


def encode_connect_will(buf, client_id, will, username=None, keepalive=240, clean_session=True):
    """CONNECT with will = (topic, payload, qos, retain), built from encode_connect's packet."""
    wt, wp, wq, wr = will
    wt = wt.encode() if isinstance(wt, str) else wt
    wp = wp.encode() if isinstance(wp, str) else wp
    tmp = bytearray(len(buf))
    n = mc.encode_connect(tmp, client_id, username, None, keepalive, clean_session)
    # fixed header | rl | 10 bytes variable header | client id | [username]
    j = 1
    while tmp[j] & 0x80:
        j += 1
    vh = j + 1  # start of the variable header
    flags_at = vh + 7
    cid_end = vh + 10 + 2 + ((tmp[vh + 10] << 8) | tmp[vh + 11])
    rem = n - vh + 4 + len(wt) + len(wp)
    rl = _rl(rem)
    buf[0] = 0x10
    buf[1 : 1 + len(rl)] = rl
    i = 1 + len(rl)
    body = bytearray(tmp[vh:cid_end])
    body[7] = tmp[flags_at] | 0x04 | (wq << 3) | (0x20 if wr else 0)
    buf[i : i + len(body)] = body
    i += len(body)
    i = _put_str(buf, i, wt)
    i = _put_str(buf, i, wp)
    rest = tmp[cid_end:n]
    buf[i : i + len(rest)] = rest
    return i + len(rest)


def dup(p):
    return p.type == m.PUBLISH and bool(p.flags & 8)


def retain(p):
    return p.type == m.PUBLISH and bool(p.flags & 1)


# Conveniences over the device decoder that the client itself does not need (the client
# reads straight into Decoder.room() and routes on Packet.topic): kept here for the tests.


def feed(dec, data):
    """Buffer received bytes (any split) with room()/filled(); a chunk that fits is copied
    without allocating."""
    n = len(data)
    pos = 0
    while pos < n:
        k = min(dec.room(), n - pos)
        e = dec._end
        dec._buf[e : e + k] = data if k == n else memoryview(data)[pos : pos + k]
        dec.filled(k)
        pos += k


def pending(dec):
    """True if a complete packet (or a dropped PUBLISH) is there to hand out."""
    return dec._start != dec._scan or bool(dec._dropped)


def topic_startswith(p, b):
    """True if the topic of Packet p starts with bytes b (no allocation with next(into))."""
    if p._buf is None:
        return p._topic is not None and p._topic.encode().startswith(b)
    if len(b) > p.topic_len:
        return False
    return p._buf.find(b, p._toff, p._toff + len(b)) == p._toff


def topic_is(p, b):
    """True if the topic of Packet p equals bytes b (no allocation with next(into))."""
    return p.topic_len == len(b) and topic_startswith(p, b)
