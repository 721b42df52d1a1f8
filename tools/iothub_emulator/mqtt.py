"""Server-side MQTT 3.1.1 codec for the emulator (decode what clients send, encode what a broker sends).

Written independently of the device package (firmware/iothub) on purpose: the emulator must catch
client codec bugs, not share them. Reference: OASIS MQTT Version 3.1.1 (29 October 2014), §2 (fixed
header, remaining length), §3 (packets), §4.7 (topic names and filters).
"""

import struct

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
}

# Packets a server accepts from a client (§3); the others are server-to-client only.
_FROM_CLIENT = {
    CONNECT,
    PUBLISH,
    PUBACK,
    PUBREC,
    PUBREL,
    PUBCOMP,
    SUBSCRIBE,
    UNSUBSCRIBE,
    PINGREQ,
    DISCONNECT,
}
# Required fixed-header flags (§2.2.2); PUBLISH flags are checked separately.
_FLAGS = {
    CONNECT: 0,
    PUBACK: 0,
    PUBREC: 0,
    PUBREL: 2,
    PUBCOMP: 0,
    SUBSCRIBE: 2,
    UNSUBSCRIBE: 2,
    PINGREQ: 0,
    DISCONNECT: 0,
}
MAX_REMAINING = 268435455  # four length bytes (§2.2.3)


class MQTTError(Exception):
    """A client sent something MQTT 3.1.1 does not allow; the server closes the connection."""


class Packet:
    """One decoded client packet. `type` is the packet type; other attributes depend on it:
    CONNECT: protocol, level, clean_session, keepalive, client_id, will (None or
    (topic, payload, qos, retain)), username (str or None), password (bytes or None);
    PUBLISH: topic, payload, qos, dup, retain, packet_id (None for QoS 0);
    PUBACK/PUBREC/PUBREL/PUBCOMP: packet_id;
    SUBSCRIBE: packet_id, topics [(filter, qos)]; UNSUBSCRIBE: packet_id, topics [filter]."""

    def __init__(self, ptype, **fields):
        self.type = ptype
        self.__dict__.update(fields)

    @property
    def name(self):
        return NAMES.get(self.type, "type %d" % self.type)

    def __repr__(self):
        fields = ", ".join(
            "%s=%r" % (k, v) for k, v in self.__dict__.items() if k not in ("type", "password")
        )
        return "<%s %s>" % (self.name, fields)


class _Cursor:
    def __init__(self, data, what):
        self.data = data
        self.pos = 0
        self.what = what

    def left(self):
        return len(self.data) - self.pos

    def take(self, n, field):
        if self.left() < n:
            raise MQTTError(
                "%s truncated: %s needs %d bytes, %d left" % (self.what, field, n, self.left())
            )
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u8(self, field):
        return self.take(1, field)[0]

    def u16(self, field):
        return struct.unpack(">H", self.take(2, field))[0]

    def blob(self, field):
        return self.take(self.u16(field + " length"), field)

    def text(self, field):
        raw = self.blob(field)
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MQTTError("%s: %s is not valid UTF-8" % (self.what, field)) from None
        if "\x00" in s:
            raise MQTTError("%s: %s contains U+0000" % (self.what, field))  # §1.5.3
        return s


def _check_topic_name(topic, what):
    if not topic:
        raise MQTTError("%s: empty topic name" % what)
    if "+" in topic or "#" in topic:
        raise MQTTError("%s: wildcard in topic name %r" % (what, topic))  # §3.3.2.1


def _check_filter(flt, what):
    if not flt:
        raise MQTTError("%s: empty topic filter" % what)
    levels = flt.split("/")
    for i, lvl in enumerate(levels):
        if "#" in lvl and (lvl != "#" or i != len(levels) - 1):
            raise MQTTError("%s: misplaced '#' in filter %r" % (what, flt))  # §4.7.1.2
        if "+" in lvl and lvl != "+":
            raise MQTTError("%s: misplaced '+' in filter %r" % (what, flt))  # §4.7.1.3


def decode_body(ptype, flags, body):
    """Decode one packet body (after the fixed header). Raises MQTTError on anything malformed."""
    if ptype not in _FROM_CLIENT:
        raise MQTTError(
            "packet type %d (%s) is not sent by clients" % (ptype, NAMES.get(ptype, "reserved"))
        )
    what = NAMES[ptype]
    if ptype != PUBLISH and flags != _FLAGS[ptype]:
        raise MQTTError(
            "%s: reserved fixed-header flags 0x%x (expected 0x%x)" % (what, flags, _FLAGS[ptype])
        )
    c = _Cursor(body, what)
    if ptype == CONNECT:
        pkt = _decode_connect(c)
    elif ptype == PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            raise MQTTError("PUBLISH: QoS 3 is invalid")
        dup = bool(flags & 8)
        if qos == 0 and dup:
            raise MQTTError("PUBLISH: DUP set on a QoS 0 message")  # §3.3.1.1
        topic = c.text("topic name")
        _check_topic_name(topic, what)
        pid = None
        if qos:
            pid = c.u16("packet identifier")
            if pid == 0:
                raise MQTTError("PUBLISH: packet identifier 0")
        payload = bytes(c.data[c.pos :])
        c.pos = len(c.data)
        pkt = Packet(
            PUBLISH,
            topic=topic,
            payload=payload,
            qos=qos,
            dup=dup,
            retain=bool(flags & 1),
            packet_id=pid,
        )
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        pkt = Packet(ptype, packet_id=c.u16("packet identifier"))
    elif ptype == SUBSCRIBE:
        pid = c.u16("packet identifier")
        topics = []
        while c.left():
            flt = c.text("topic filter")
            _check_filter(flt, what)
            q = c.u8("requested QoS")
            if q & 0xFC or q == 3:
                raise MQTTError("SUBSCRIBE: requested QoS byte 0x%02x is invalid" % q)  # §3.8.3.1
            topics.append((flt, q))
        if not topics:
            raise MQTTError("SUBSCRIBE without any topic filter")  # §3.8.3.1
        pkt = Packet(SUBSCRIBE, packet_id=pid, topics=topics)
    elif ptype == UNSUBSCRIBE:
        pid = c.u16("packet identifier")
        topics = []
        while c.left():
            flt = c.text("topic filter")
            _check_filter(flt, what)
            topics.append(flt)
        if not topics:
            raise MQTTError("UNSUBSCRIBE without any topic filter")
        pkt = Packet(UNSUBSCRIBE, packet_id=pid, topics=topics)
    else:  # PINGREQ, DISCONNECT
        pkt = Packet(ptype)
    if c.left():
        raise MQTTError("%s: %d unexpected trailing bytes" % (what, c.left()))
    return pkt


def _decode_connect(c):
    protocol = c.text("protocol name")
    level = c.u8("protocol level")
    flags = c.u8("connect flags")
    keepalive = c.u16("keep alive")
    if flags & 1:
        raise MQTTError("CONNECT: reserved flag bit 0 is set")  # §3.1.2.3
    will_flag = bool(flags & 4)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 32)
    if not will_flag and (will_qos or will_retain):
        raise MQTTError("CONNECT: will QoS/retain set without the will flag")  # §3.1.2.6
    if will_qos == 3:
        raise MQTTError("CONNECT: will QoS 3 is invalid")
    has_user = bool(flags & 128)
    has_pass = bool(flags & 64)
    if has_pass and not has_user:
        raise MQTTError("CONNECT: password flag set without the user name flag")  # §3.1.2.9
    if protocol != "MQTT" or level != 4:
        # The caller answers CONNACK 1 for these (§3.1.2.2); the rest of the body is not parsed.
        c.pos = len(c.data)
        return Packet(CONNECT, protocol=protocol, level=level, unsupported=True)
    client_id = c.text("client identifier")
    will = None
    if will_flag:
        wt = c.text("will topic")
        _check_topic_name(wt, "CONNECT will")
        will = (wt, bytes(c.blob("will message")), will_qos, will_retain)
    username = c.text("user name") if has_user else None
    password = bytes(c.blob("password")) if has_pass else None
    return Packet(
        CONNECT,
        protocol=protocol,
        level=level,
        unsupported=False,
        clean_session=bool(flags & 2),
        keepalive=keepalive,
        client_id=client_id,
        will=will,
        username=username,
        password=password,
    )


class Reader:
    """Incremental packet decoder: feed() any split of bytes, get whole packets back.

    `max_packet` bounds the remaining length; a bigger packet raises MQTTError before its body is
    buffered (the hub closes the connection on oversize messages)."""

    def __init__(self, max_packet=MAX_REMAINING):
        self.max_packet = max_packet
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            pkt = self._next()
            if pkt is None:
                return out
            out.append(pkt)

    def _next(self):
        buf = self.buf
        if len(buf) < 2:
            return None
        length = 0
        mult = 1
        i = 1
        while True:
            if i >= len(buf):
                return None
            b = buf[i]
            length += (b & 0x7F) * mult
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise MQTTError("malformed remaining length (more than four bytes)")  # §2.2.3
            mult *= 128
        if length > self.max_packet:
            raise MQTTError(
                "%s packet of %d bytes exceeds the limit of %d"
                % (NAMES.get(buf[0] >> 4, "unknown"), length, self.max_packet)
            )
        if len(buf) < i + length:
            return None
        first = buf[0]
        body = bytes(buf[i : i + length])
        del buf[: i + length]
        return decode_body(first >> 4, first & 15, body)


# ---- encoders (server to client) ------------------------------------------------------------


def _remaining(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packet(first, body):
    return bytes([first]) + _remaining(len(body)) + body


def _str(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def connack(session_present, rc):
    return _packet(CONNACK << 4, bytes([1 if session_present else 0, rc]))


def publish(topic, payload, qos=0, packet_id=None, dup=False, retain=False):
    flags = (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _str(topic)
    if qos:
        body += struct.pack(">H", packet_id)
    return _packet((PUBLISH << 4) | flags, body + bytes(payload))


def puback(packet_id):
    return _packet(PUBACK << 4, struct.pack(">H", packet_id))


def suback(packet_id, codes):
    return _packet(SUBACK << 4, struct.pack(">H", packet_id) + bytes(codes))


def unsuback(packet_id):
    return _packet(UNSUBACK << 4, struct.pack(">H", packet_id))


def pingresp():
    return bytes([PINGRESP << 4, 0])


def topic_matches(flt, topic):
    """MQTT topic filter match (§4.7); '$' topics only match filters that name the '$' level."""
    f = flt.split("/")
    t = topic.split("/")
    if t[0].startswith("$") and f[0] in ("+", "#"):
        return False  # §4.7.2
    for i, lvl in enumerate(f):
        if lvl == "#":
            return True
        if i >= len(t):
            return False
        if lvl != "+" and lvl != t[i]:
            return False
    return len(f) == len(t)
