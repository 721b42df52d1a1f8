# MQTT 3.1.1 codec, client side (OASIS MQTT 3.1.1, sections 2-3). Sans-I/O, after h11 and
# mqttproto: encoders write one whole packet into a caller-supplied buffer (so the adapter
# sends it with one write, one TLS record); the Decoder is fed bytes as they arrive, in any
# split, and hands out complete packets. QoS 0 and 1 only: the hub closes the connection on
# QoS 2 (docs/protocol.md 2.4), so QoS 2 packets from a server are a protocol error here.
#
# CONNECT and SUBSCRIBE, sent only while a connection is set up, are in iothub.mqttconn;
# parsing a PUBLISH from the hub is in iothub.mqttpub (loaded with the first one).
#
# RAM: this module stays loaded while a client runs, so it holds the checks but not the
# words: each error is a number (_E_*), explained by iothub.mqtterr, which is loaded for
# that one message (with packet names and CONNACK reasons) and dropped again.
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


from .errors import explained

# Packet types a client receives (Packet.type), and DROPPED: a PUBLISH the decoder read
# through without taking it (see Decoder).
DROPPED = const(0)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
UNSUBACK = const(11)
PINGRESP = const(13)
# Packet.rc of a DROPPED packet: why it was dropped (1: larger than max_packet, 2: no
# memory for it, 3: its topic).
_DROP_TOO_LARGE = const(1)  # larger than max_packet
_DROP_MEMORY = const(2)  # no memory for a buffer of its size
DROP_TOPIC = const(3)  # a topic that is not valid UTF-8, empty, or holds a wildcard or NUL

_DEFAULT_MAX_PACKET = const(263168)  # 256 KiB D2C/C2D limit + 1 KiB for topic and header
_MAX_REMAINING = const(268435455)  # 4-byte remaining-length maximum
# Bit t set: packet type t may come from a server with flags 0 (CONNACK, PUBACK, SUBACK,
# UNSUBACK, PINGRESP); PUBLISH is checked on its own.
_FROM_SERVER = const(0x2A14)

# Messages (texts in iothub.mqtterr, same order). ConfigError:
_E_TYPE = const(0)
_E_TOO_LARGE = const(1)
_E_FITS = const(2)
_E_PID = const(3)
_E_QOS2 = const(4)
_E_QOS = const(5)
_E_EMPTY = const(6)
_E_WILDCARD = const(7)
_E_LONG = const(8)
_E_DUP = const(9)
_E_PLEN = const(10)
_E_STALE = const(11)
_E_MAX_PACKET = const(12)
_E_BUFSIZE = const(13)
# ProtocolError:
_E_STOPPED = const(14)
_E_RL = const(15)
_E_ACK_LEN = const(16)
_E_PID0 = const(17)
_E_CONNACK_FLAGS = const(18)
_E_SUBACK_LEN = const(19)
_E_SUBACK_CODE = const(20)
_E_PINGRESP_LEN = const(21)
# (22-25: PUBLISH messages, iothub.mqttpub) Requests that are not a message:
_E_NAME = const(26)
_E_HEADER = const(28)
del const  # (every use is above and inlined: one global less in a resident module)


def _error(code, *args):
    return explained("mqtterr", "error", code, args)


_pubmod = None  # iothub.mqttpub, loaded with the first PUBLISH from the hub


def _pub():
    global _pubmod
    if _pubmod is None:  # an import statement allocates even for a loaded module
        from . import mqttpub

        _pubmod = mqttpub
    return _pubmod


# ---- encoding ----------------------------------------------------------------------------


def _b(x, what):
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, bytes) or isinstance(x, bytearray):
        return x
    raise _error(_E_TYPE, what)


def _rl_size(n):
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    if n <= _MAX_REMAINING:
        return 4
    raise _error(_E_TOO_LARGE, n, _MAX_REMAINING)


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
        raise _error(_E_FITS, what, n, len(buf))


def _check_pid(pid):
    if not isinstance(pid, int) or not 1 <= pid <= 65535:
        raise _error(_E_PID)


def _check_qos(qos, what):
    if qos != 0 and qos != 1:
        raise _error(_E_QOS2 if qos == 2 else _E_QOS, what)


def publish_size(topic_len, payload_len, qos):
    """Bytes of a whole PUBLISH with a topic of topic_len bytes."""
    rem = 2 + topic_len + (2 if qos else 0) + payload_len
    return 1 + _rl_size(rem) + rem


def encode_publish_header(buf, topic, payload_len, qos=0, pid=0, dup=False, at=0):
    """Fixed header, topic and packet id of a PUBLISH written at buf[at:], its payload
    (payload_len bytes) to follow right after. Returns the offset where the payload goes.
    With a bytes topic this does not allocate."""
    t = _b(topic, "topic")
    if not t:
        raise _error(_E_EMPTY)
    if t.find(b"#") >= 0 or t.find(b"+") >= 0:
        raise _error(_E_WILDCARD)
    if len(t) > 65535:
        raise _error(_E_LONG)
    _check_qos(qos, "PUBLISH")
    if qos:
        _check_pid(pid)
    elif dup:
        raise _error(_E_DUP)
    if not isinstance(payload_len, int) or payload_len < 0:
        raise _error(_E_PLEN)
    rem = 2 + len(t) + (2 if qos else 0) + payload_len
    _fits(buf, at + 1 + _rl_size(rem) + rem - payload_len, "PUBLISH")
    buf[at] = 0x30 | (0x08 if dup else 0) | (qos << 1)
    i = _put_str(buf, _put_rl(buf, at + 1, rem), t)
    if qos:
        i = _put_u16(buf, i, pid)
    return i


def _short(buf, first, pid, what):
    # A packet of 2 bytes, or 4 with a packet id (pid > 0).
    n = 4 if pid else 2
    _fits(buf, n, what)
    buf[0] = first
    buf[1] = n - 2
    if pid:
        _put_u16(buf, 2, pid)
    return n


# PUBACK (0x40, with the packet id), PINGREQ (0xC0) and DISCONNECT (0xE0) are written with
# _short() by their senders (iothub.session, iothub.aio, iothub.aprov): a function each cost
# about 120 B of RAM in this resident module. The tests' mqtt_extra has the encoders.


# ---- decoding ----------------------------------------------------------------------------


class Packet:
    """A decoded packet. Fields by type:
    CONNACK .session_present .rc; PUBLISH .topic .payload .qos .pid .topic_len
    .payload_len; PUBACK/UNSUBACK .pid; SUBACK .pid .granted (0x80 = failure); PINGRESP
    nothing; DROPPED .pid .rc (DROP_*) .payload_len (the size of the whole packet), its
    QoS in .flags.

    Packets from next() own their topic (str) and payload (bytes). A Packet passed to
    next(into) is refilled without allocating (its fields are preset, so refilling does not
    grow its attribute table); its .topic/.payload are then made on first access from the
    decoder's buffer and must be read before the next bytes are filled in. Those two
    properties, and the fields of a PUBLISH they read, are added by iothub.mqttpub, which
    parses every PUBLISH (and is loaded with the first one): a client that never receives
    one never holds them (8 fields a packet, not 16: 160 B less on a 64-bit port)."""

    def __init__(self):
        self.type = 0
        self.flags = 0
        self.qos = 0
        self.pid = 0
        self.rc = 0
        self.session_present = False
        self.granted = None
        self.payload_len = 0  # (a DROPPED packet's size too: preset, as the drop needs it)


class Decoder:
    """Incremental MQTT 3.1.1 decoder for packets a server sends to a client.

    Read any split of the byte stream into room() and call filled(n), then call next()
    until it returns None. Malformed input raises ProtocolError and
    stops the decoder (reset() for a new connection). max_packet bounds a whole packet,
    fixed header included; bufsize is the base receive buffer.

    A PUBLISH that is well framed but cannot be taken -- larger than max_packet, too large
    for the memory left, or with an undecodable topic -- does not stop the decoder: it is
    read through without being buffered and handed out as a Packet of type DROPPED with
    its .pid, .qos (in .flags), size (.payload_len) and reason (.rc, DROP_*), so the
    client can acknowledge it (the hub would redeliver it forever otherwise) and go on."""

    def __init__(self, max_packet=_DEFAULT_MAX_PACKET, bufsize=1024):
        if not isinstance(max_packet, int) or max_packet < 2:
            raise _error(_E_MAX_PACKET)
        if not isinstance(bufsize, int) or bufsize < 8:
            raise _error(_E_BUFSIZE)
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

    def _fail(self, code, *args):
        e = _error(code, *args)
        self._err = e.args[0]
        raise e

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
        if self._err is not None:
            raise _error(_E_STOPPED, self._err)
        free = len(self._buf) - self._end
        if not free:
            # What is left (between reads, at most the start of a fixed header: a packet
            # whose header is known has its room already) moves to the front when it can:
            # no allocation; a larger buffer only when it cannot.
            self._room(self._end - self._start + 1)
            free = len(self._buf) - self._end
        return free

    def filled(self, n):
        """n bytes were written at ._buf[._end:] (at most room())."""
        if n:
            self._gen = (self._gen + 1) & 0x3FFFFFFF  # stays a small int: no allocation
            self._end += n
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
                buf = self._buf
                s = self._scan
                rem = 0
                mul = 1
                i = s + 1
                while True:
                    if i - s > 4:
                        self._fail(_E_RL)
                    if i >= self._end:
                        return  # header not complete yet
                    d = buf[i]
                    rem += (d & 0x7F) * mul
                    mul <<= 7
                    i += 1
                    if not d & 0x80:
                        break
                total = (i - s) + rem
                b0 = buf[s]
                t = b0 >> 4
                f = b0 & 15
                if t == PUBLISH:
                    # QoS 0 or 1; DUP only with QoS 1 (MQTT-3.3.1-2)
                    ok = f & 6 < 4 and (f & 10) != 8
                else:
                    ok = (_FROM_SERVER >> t) & 1 and not f and total <= self.max_packet
                if not ok:
                    e = _error(_E_HEADER, b0, total, self.max_packet)
                    self._err = e.args[0]
                    raise e
                if t == PUBLISH and total > self.max_packet:
                    _pub().begin_drop(self, i - s, total, b0, _DROP_TOO_LARGE)
                    continue
                self._need = total
                if s + total > len(buf):
                    # Reserve the whole packet now: one allocation, no regrowth per chunk.
                    try:
                        self._room(s - self._start + total)
                    except MemoryError:
                        if t != PUBLISH:
                            raise
                        self._need = 0
                        _pub().begin_drop(self, i - s, total, b0, _DROP_MEMORY)
                        continue
            if self._end - self._scan < self._need:
                return
            self._scan += self._need
            self._need = 0

    def next(self, into=None):
        """The next complete packet, or None. `into`: a Packet to refill (no allocation)."""
        if self._err is not None:
            raise _error(_E_STOPPED, self._err)
        s = self._start
        if s == self._scan and not self._dropped:
            return None
        if into is None:
            p = Packet()
        else:
            p = into
            p.__init__()  # every field back to its preset
        if self._dropped:
            p.pid, qos, p.payload_len, p.rc = self._dropped.pop(0)
            p.flags = qos << 1
            return p  # type DROPPED
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
        t = b0 >> 4
        p.type = t
        p.flags = b0 & 15
        if t == PUBLISH:
            if not _pub().parse(self, p, into, buf, s, i, rem, end, b0):
                return self.next(into)  # dropped: the DROPPED packet comes next
            p.qos = (b0 >> 1) & 3
        elif t == PINGRESP:
            if rem:
                self._fail(_E_PINGRESP_LEN, rem)
        elif t == SUBACK and rem < 3:
            self._fail(_E_SUBACK_LEN, rem)
        elif t != SUBACK and rem != 2:  # PUBACK, UNSUBACK, CONNACK
            self._fail(_E_ACK_LEN, _error(_E_NAME, t), rem)
        elif t == CONNACK:
            if buf[i] & 0xFE:
                self._fail(_E_CONNACK_FLAGS, buf[i])
            if buf[i]:
                p.session_present = True
            if buf[i + 1]:
                p.rc = buf[i + 1]
        else:  # PUBACK, UNSUBACK, SUBACK: a packet id
            pid = (buf[i] << 8) | buf[i + 1]
            if not pid:
                self._fail(_E_PID0, _error(_E_NAME, t))
            p.pid = pid
            if t == SUBACK:
                g = []
                for j in range(i + 2, end):
                    c = buf[j]
                    if c > 2 and c != 0x80:  # 0, 1, 2 or 0x80 (failure)
                        self._fail(_E_SUBACK_CODE, c)
                    g.append(c)
                p.granted = g
        self._consume(end)
        return p

    def _consume(self, end):
        self._start = end
        if end == self._end:
            # Drained: reuse the buffer from its start, and drop a grown one.
            self._start = self._scan = self._end = 0
            if self._buf is not self._base:
                self._buf = self._base
