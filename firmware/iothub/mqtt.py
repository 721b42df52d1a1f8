# MQTT 3.1.1 codec, client side (OASIS MQTT 3.1.1, sections 2-3). Sans-I/O, after h11 and
# mqttproto: encoders write one whole packet into a caller-supplied buffer (so the adapter
# sends it with one write, one TLS record); the Decoder is fed bytes as they arrive, in any
# split, and hands out complete packets. QoS 0 and 1 only: the hub closes the connection on
# QoS 2 (docs/protocol.md 2.4), so QoS 2 packets from a server are a protocol error here.
#
# CONNECT and SUBSCRIBE, sent only while a connection is set up, are in iothub.mqttconn.
#
# Memory: the decoder keeps one receive buffer and reuses it; a packet larger than the
# buffer grows it once to the packet's exact size (the size is known from the fixed header),
# and the buffer drops back to its base size when drained. Encoding a PUBLISH header with a
# bytes topic and decoding into a reused Packet (next(into)) do not allocate.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError, ProtocolError

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

DROPPED = const(0)  # Packet.type of a PUBLISH the decoder dropped (see Decoder)
DROP_TOO_LARGE = const(1)  # Packet.rc of a dropped PUBLISH: larger than max_packet
DROP_MEMORY = const(2)  # no memory for a buffer of its size
DROP_TOPIC = const(3)  # a topic that is not valid UTF-8, empty, or holds a wildcard or NUL

DEFAULT_MAX_PACKET = const(263168)  # 256 KiB D2C/C2D limit + 1 KiB for topic and header
_MAX_REMAINING = const(268435455)  # 4-byte remaining-length maximum

_NAMES = (
    "reserved(0)",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "reserved(15)",
)


_pubmod = None  # iothub.mqttpub, loaded with the first PUBLISH from the hub


def _pub():
    global _pubmod
    if _pubmod is None:
        from . import mqttpub

        _pubmod = mqttpub
    return _pubmod


def packet_name(ptype):
    return _NAMES[ptype & 15]


# ---- encoding ----------------------------------------------------------------------------


# Built once: a tuple written inline in isinstance() is allocated at every call.
_BYTES = (bytes, bytearray)


def _b(x, what):
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, _BYTES):
        return x
    raise ConfigError("%s must be str or bytes" % what)


def _rl_size(n):
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    if n <= _MAX_REMAINING:
        return 4
    raise ConfigError("packet too large for MQTT: remaining length %d > %d" % (n, _MAX_REMAINING))


def _put_rl(buf, i, n):
    while True:
        d = n & 0x7F
        n >>= 7
        if n:
            buf[i] = d | 0x80
            i += 1
        else:
            buf[i] = d
            return i + 1


def _put_u16(buf, i, v):
    buf[i] = v >> 8
    buf[i + 1] = v & 0xFF
    return i + 2


def _put_str(buf, i, b):
    n = len(b)
    buf[i] = n >> 8
    buf[i + 1] = n & 0xFF
    i += 2
    buf[i : i + n] = b
    return i + n


def _fits(buf, n, what):
    if n > len(buf):
        raise ConfigError("%s needs %d bytes, the buffer has %d" % (what, n, len(buf)))


def _check_pid(pid):
    if not isinstance(pid, int) or not 1 <= pid <= 65535:
        raise ConfigError("packet id must be an int in 1..65535")


def _check_qos(qos, what):
    if qos == 2:
        raise ConfigError("%s: QoS 2 is not supported (IoT Hub closes the connection)" % what)
    if qos != 0 and qos != 1:
        raise ConfigError("%s: QoS must be 0 or 1" % what)


def _check_topic_name(t):
    if not t:
        raise ConfigError("topic must not be empty")
    if t.find(b"#") >= 0 or t.find(b"+") >= 0:
        raise ConfigError("a PUBLISH topic must not contain the wildcards # or +")


def publish_size(topic_len, payload_len, qos):
    """Bytes of a whole PUBLISH with a topic of topic_len bytes."""
    rem = 2 + topic_len + (2 if qos else 0) + payload_len
    return 1 + _rl_size(rem) + rem


def encode_publish_header(buf, topic, payload_len, qos=0, pid=0, dup=False, at=0):
    """Fixed header, topic and packet id of a PUBLISH written at buf[at:], its payload
    (payload_len bytes) to follow right after. Returns the offset where the payload goes.
    With a bytes topic this does not allocate."""
    t = _b(topic, "topic")
    _check_topic_name(t)
    if len(t) > 65535:
        raise ConfigError("topic is longer than 65535 bytes")
    _check_qos(qos, "PUBLISH")
    if qos:
        _check_pid(pid)
    elif dup:
        raise ConfigError("DUP must be 0 for QoS 0 (MQTT-3.3.1-2)")
    if not isinstance(payload_len, int) or payload_len < 0:
        raise ConfigError("payload length must be a non-negative int")
    rem = 2 + len(t) + (2 if qos else 0) + payload_len
    _fits(buf, at + 1 + _rl_size(rem) + rem - payload_len, "PUBLISH")
    buf[at] = 0x30 | (0x08 if dup else 0) | (qos << 1)
    i = _put_rl(buf, at + 1, rem)
    i = _put_str(buf, i, t)
    if qos:
        i = _put_u16(buf, i, pid)
    return i


def _ack(buf, first, pid, what):
    _check_pid(pid)
    _fits(buf, 4, what)
    buf[0] = first
    buf[1] = 2
    buf[2] = pid >> 8
    buf[3] = pid & 0xFF
    return 4


def encode_puback(buf, pid):
    return _ack(buf, 0x40, pid, "PUBACK")


def _two(buf, first, what):
    _fits(buf, 2, what)
    buf[0] = first
    buf[1] = 0
    return 2


def encode_pingreq(buf):
    return _two(buf, 0xC0, "PINGREQ")


def encode_disconnect(buf):
    return _two(buf, 0xE0, "DISCONNECT")


# ---- decoding ----------------------------------------------------------------------------


class Packet:
    """A decoded packet. Fields by type:
    CONNACK .session_present .rc; PUBLISH .topic .payload .qos .pid;
    PUBACK/UNSUBACK .pid; SUBACK .pid .granted (0x80 = failure); PINGRESP nothing.

    Packets from next() own their topic (str) and payload (bytes). A Packet passed to
    next(into) is refilled without allocating; its .topic/.payload are then made on first
    access from the decoder's buffer and must be read before the next feed()."""

    # Class-level defaults: a fresh packet from next() stores only the fields its type
    # uses (each instance attribute costs heap); a reusable one presets them all, so that
    # refilling it never grows its attribute table.
    type = 0
    flags = 0
    pid = 0
    rc = 0
    session_present = False
    granted = None
    _topic = None
    _payload = None
    _buf = None
    _dec = None
    _gen = 0
    _toff = 0
    _tlen = 0
    _poff = 0
    _plen = 0

    def __init__(self, preset=True):
        if preset:
            self._clear()

    def _clear(self):
        self.type = 0
        self.flags = 0
        self.pid = 0
        self.rc = 0
        self.session_present = False
        self.granted = None
        self._topic = None
        self._payload = None
        self._buf = None
        self._dec = None
        self._gen = 0
        self._toff = 0
        self._tlen = 0
        self._poff = 0
        self._plen = 0

    @property
    def qos(self):
        return (self.flags >> 1) & 3 if self.type == PUBLISH else 0

    def _live(self):
        if self._dec is not None and self._dec._gen != self._gen:
            raise ConfigError("packet data was overwritten: read .topic/.payload before feed()")

    @property
    def topic_len(self):
        """Length of the topic in bytes."""
        return self._tlen

    @property
    def payload_len(self):
        if self._buf is None and self._payload is not None:
            return len(self._payload)
        return self._plen

    @property
    def topic(self):
        if self._topic is None and self._buf is not None:
            self._live()
            self._topic = str(memoryview(self._buf)[self._toff : self._toff + self._tlen], "utf-8")
        return self._topic

    @property
    def payload(self):
        if self._payload is None and self._buf is not None:
            self._live()
            self._payload = bytes(memoryview(self._buf)[self._poff : self._poff + self._plen])
        return self._payload

    def topic_is(self, b):
        """True if the topic equals bytes b (no allocation with next(into))."""
        return self._tlen == len(b) and self.topic_startswith(b)

    def topic_startswith(self, b):
        """True if the topic starts with bytes b (no allocation with next(into))."""
        if self._buf is None:
            return self._topic is not None and self._topic.encode().startswith(b)
        if len(b) > self._tlen:
            return False
        self._live()
        return self._buf.find(b, self._toff, self._toff + len(b)) == self._toff


class Decoder:
    """Incremental MQTT 3.1.1 decoder for packets a server sends to a client.

    feed(data) any split of the byte stream, then call next() until it returns None.
    Malformed input raises ProtocolError and stops the decoder (reset() for a new
    connection). max_packet bounds a whole packet, fixed header included; bufsize is the
    base receive buffer (feed at most that many bytes at a time to avoid growing it).

    A PUBLISH that is well framed but cannot be taken -- larger than max_packet, too large
    for the memory left, or with an undecodable topic -- does not stop the decoder: it is
    read through without being buffered and handed out as a Packet of type DROPPED with
    its .pid, .qos (in .flags), size (.payload_len) and reason (.rc, DROP_*), so the
    client can acknowledge it (the hub would redeliver it forever otherwise) and go on."""

    def __init__(self, max_packet=DEFAULT_MAX_PACKET, bufsize=1024):
        if not isinstance(max_packet, int) or max_packet < 2:
            raise ConfigError("max_packet must be an int >= 2")
        if not isinstance(bufsize, int) or bufsize < 8:
            raise ConfigError("bufsize must be an int >= 8")
        self.max_packet = max_packet
        self._base = bytearray(bufsize)
        self.reset()

    def reset(self):
        self._buf = self._base
        self._start = 0  # first byte of the oldest complete, unread packet
        self._scan = 0  # first byte of the packet being assembled
        self._end = 0  # end of buffered data
        self._need = 0  # total size of the packet being assembled, 0 until its header is known
        self._gen = 0
        self._err = None
        self._skip = 0  # size of the PUBLISH being dropped, 0 when none
        self._dropped = None  # [(pid, qos, size, why)] dropped and not yet handed out

    def _fail(self, msg):
        self._err = msg
        raise ProtocolError(msg)

    def _check(self):
        if self._err is not None:
            raise ProtocolError("MQTT decoder stopped after an earlier error: " + self._err)

    def _room(self, total):
        # Make the buffer hold `total` bytes from _start. Compact in place only when the
        # move does not overlap; otherwise (or if too small) copy into a right-sized buffer.
        buf = self._buf
        live = self._end - self._start
        if self._start + total <= len(buf):
            return
        if total <= len(buf) and live <= self._start:
            if live:
                buf[0:live] = memoryview(buf)[self._start : self._end]
        else:
            # Slack of one base buffer, so the bytes that follow a large packet fit too.
            nb = bytearray(total + len(self._base))
            if live:
                nb[0:live] = memoryview(buf)[self._start : self._end]
            self._buf = nb
        self._scan -= self._start
        self._end -= self._start
        self._start = 0

    def room(self):
        """Free bytes at ._buf[._end:], made when there are none: a link reads straight
        into the decoder's buffer (no copy, no allocation), then calls filled(n)."""
        self._check()
        free = len(self._buf) - self._end
        if not free:
            self._room(self._end - self._start + len(self._base))
            free = len(self._buf) - self._end
        return free

    def filled(self, n):
        """n bytes were written at ._buf[._end:] (at most room())."""
        if n:
            self._gen = (self._gen + 1) & 0x3FFFFFFF
            self._end += n
            self._scan_headers()

    def feed(self, data):
        """Buffer received bytes (bytes, bytearray or memoryview)."""
        self._check()
        n = len(data)
        if not n:
            return
        self._gen = (self._gen + 1) & 0x3FFFFFFF  # stays a small int: no allocation
        pos = 0
        mv = None
        while pos < n:
            # Copy what fits, then read headers: a large packet's header reserves its exact
            # size before the rest of the chunk is copied, so the buffer grows only once.
            free = len(self._buf) - self._end
            if not free:
                self._room(self._end - self._start + n - pos)
                free = len(self._buf) - self._end
            k = n - pos if n - pos <= free else free
            e = self._end
            if k == n:
                self._buf[e : e + n] = data  # the common case: no slicing, no allocation
            else:
                if mv is None:
                    mv = memoryview(data)
                self._buf[e : e + k] = mv[pos : pos + k]
            self._end = e + k
            pos += k
            self._scan_headers()

    def _scan_headers(self):
        # Walk the fixed headers of newly completed data; validate each header before the
        # packet body is waited for (size limit, type, flags).
        while True:
            if self._skip:
                _pub().drop_some(self)
                if self._skip:
                    return  # the rest of the dropped PUBLISH is still to come
            if not self._need:
                avail = self._end - self._scan
                if avail < 2:
                    return
                buf = self._buf
                s = self._scan
                rem = 0
                mul = 1
                i = s + 1
                while True:
                    if i - s > 4:
                        self._fail("malformed remaining length (more than 4 bytes)")
                    if i >= self._end:
                        return  # header not complete yet
                    d = buf[i]
                    rem += (d & 0x7F) * mul
                    mul <<= 7
                    i += 1
                    if not d & 0x80:
                        break
                total = (i - s) + rem
                self._check_header(buf[s], total)
                if buf[s] >> 4 == PUBLISH and total > self.max_packet:
                    _pub().begin_drop(self, i - s, total, buf[s], DROP_TOO_LARGE)
                    continue
                self._need = total
                if self._scan + total > len(self._buf):
                    # Reserve the whole packet now: one allocation, no regrowth per chunk.
                    try:
                        self._room(self._scan - self._start + total)
                    except MemoryError:
                        if buf[s] >> 4 != PUBLISH:
                            raise
                        self._need = 0
                        _pub().begin_drop(self, i - s, total, buf[s], DROP_MEMORY)
                        continue
            if self._end - self._scan < self._need:
                return
            self._scan += self._need
            self._need = 0

    def _check_header(self, b0, total):
        t = b0 >> 4
        f = b0 & 15
        if t == PUBLISH:
            if f & 6 == 6:
                self._fail("PUBLISH with QoS 3 (invalid)")
            if f & 6 == 4:
                self._fail("PUBLISH with QoS 2: QoS 2 is not supported by this client")
            if f & 8 and not f & 6:
                self._fail("PUBLISH with DUP set on QoS 0 (MQTT-3.3.1-2)")
        elif t in (PUBREC, PUBREL, PUBCOMP):
            self._fail("%s received: QoS 2 is not supported by this client" % packet_name(t))
        elif t in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP):
            if f:
                self._fail("%s with reserved flags 0x%x (must be 0)" % (packet_name(t), f))
        elif t in (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT):
            self._fail("%s received: a server never sends it to a client" % packet_name(t))
        else:
            self._fail("reserved packet type %d" % t)
        if total > self.max_packet and t != PUBLISH:
            self._fail(
                "%s of %d bytes exceeds the limit of %d bytes"
                % (packet_name(t), total, self.max_packet)
            )

    def pending(self):
        """True if a complete packet (or a dropped PUBLISH) is there to hand out."""
        return self._start != self._scan or bool(self._dropped)

    def next(self, into=None):
        """The next complete packet, or None. `into`: a Packet to refill (no allocation)."""
        self._check()
        if self._dropped:
            pid, qos, size, why = self._dropped.pop(0)
            p = Packet(False) if into is None else into
            if into is not None:
                p._clear()
            p.type = DROPPED
            p.flags = qos << 1
            p.pid = pid
            p.rc = why
            p._plen = size
            return p
        s = self._start
        if s == self._scan:
            return None
        buf = self._buf
        b0 = buf[s]
        i = s + 1
        rem = 0
        mul = 1
        while True:
            d = buf[i]
            rem += (d & 0x7F) * mul
            mul <<= 7
            i += 1
            if not d & 0x80:
                break
        end = i + rem
        if into is None:
            p = Packet(False)
        else:
            p = into
            p._clear()
        t = b0 >> 4
        p.type = t
        p.flags = b0 & 15
        name = _NAMES[t]
        if t == PUBLISH:
            if not _pub().parse(self, p, into, buf, s, i, rem, end, b0):
                return self.next(into)  # dropped: the DROPPED packet comes next
        elif t == PUBACK or t == UNSUBACK:
            if rem != 2:
                self._fail("%s remaining length %d, expected 2" % (name, rem))
            pid = (buf[i] << 8) | buf[i + 1]
            if not pid:
                self._fail("%s with packet id 0" % name)
            p.pid = pid
        elif t == CONNACK:
            if rem != 2:
                self._fail("CONNACK remaining length %d, expected 2" % rem)
            if buf[i] & 0xFE:
                self._fail("CONNACK acknowledge flags 0x%02x: reserved bits set" % buf[i])
            if buf[i]:
                p.session_present = True
            if buf[i + 1]:
                p.rc = buf[i + 1]
        elif t == SUBACK:
            if rem < 3:
                self._fail("SUBACK remaining length %d, expected at least 3" % rem)
            pid = (buf[i] << 8) | buf[i + 1]
            if not pid:
                self._fail("SUBACK with packet id 0")
            p.pid = pid
            g = []
            for j in range(i + 2, end):
                c = buf[j]
                if c not in (0, 1, 2, 0x80):
                    self._fail("SUBACK return code 0x%02x is invalid" % c)
                g.append(c)
            p.granted = g
        else:  # PINGRESP: the only other type _check_header lets through
            if rem:
                self._fail("PINGRESP remaining length %d, expected 0" % rem)
        self._consume(end)
        return p

    def _consume(self, end):
        self._start = end
        if end == self._end:
            # Drained: reuse the buffer from its start, and drop a grown one.
            self._start = self._scan = self._end = 0
            if self._buf is not self._base:
                self._buf = self._base
