# WebSocket (RFC 6455) client protocol for MQTT over WebSockets: the opening handshake
# (request built here, the server's 101 answer checked here), client frame headers, masking,
# and an incremental decoder for server frames. Sans-I/O: no socket, no clock; the adapter
# (websocket.py) does the I/O. Loaded only when transport="websockets".
#
# MQTT over WebSockets (MQTT 3.1.1 section 6): binary frames only; an MQTT packet may span
# frames and a frame may hold several packets, so data frames are a byte stream for the MQTT
# decoder. A data message (a frame and its continuations) is bounded by max_message.
import binascii
import hashlib

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ProtocolError

OP_CONT = const(0)
OP_TEXT = const(1)
OP_BINARY = const(2)
OP_CLOSE = const(8)
OP_PING = const(9)
OP_PONG = const(10)

# Decoder events
NONE = const(0)  # all input consumed, no complete event
DATA = const(1)  # data[start:end] is payload of a binary message
PING = const(2)  # control[:n] is the ping payload (answer with a pong carrying it)
PONG = const(3)
CLOSE = const(4)  # close_code / close_reason set

HEADROOM = const(16)  # room before the payload in a transmit buffer: the longest client header
# is 14 bytes; 16 keeps the payload 4-byte aligned for the word-wide masking loop.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def accept_key(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (both base64, as bytes)."""
    return binascii.b2a_base64(hashlib.sha1(key + _GUID).digest()).strip()


def make_key(random16):
    """Sec-WebSocket-Key: 16 random bytes, base64."""
    return binascii.b2a_base64(random16).strip()


def upgrade_request(host, path, key, protocol="mqtt"):
    """The HTTP/1.1 Upgrade request (RFC 6455 section 4.1), as bytes."""
    return (
        "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: %s\r\n\r\n" % (path, host, key.decode(), protocol)
    ).encode()


def parse_head(head):
    """(status, reason, {lower-case name: value}) of an HTTP/1.1 response head (bytes up to
    and including the blank line). Raises ProtocolError when it is not HTTP."""
    try:
        text = bytes(head).decode()
    except UnicodeError:
        raise ProtocolError("the answer to the upgrade request is not HTTP (not text)")
    lines = text.split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2 or not first[0].startswith("HTTP/1.") or not first[1].isdigit():
        raise ProtocolError("the answer to the upgrade request is not HTTP: %r" % lines[0][:40])
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        i = line.find(":")
        if i <= 0:
            raise ProtocolError("malformed HTTP header line %r" % line[:40])
        name = line[:i].strip().lower()
        value = line[i + 1 :].strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return int(first[1]), first[2] if len(first) > 2 else "", headers


def check_upgrade(head, key, protocol="mqtt"):
    """Verify the server's answer to upgrade_request(..., key, protocol). Raises ProtocolError
    naming what is wrong."""
    status, reason, h = parse_head(head)
    if status != 101:
        raise ProtocolError(
            "WebSocket upgrade refused: HTTP %d %s (expected 101 Switching Protocols)"
            % (status, reason)
        )
    if h.get("upgrade", "").lower() != "websocket":
        raise ProtocolError("101 answer without 'Upgrade: websocket'")
    if "upgrade" not in [t.strip() for t in h.get("connection", "").lower().split(",")]:
        raise ProtocolError("101 answer without 'Connection: Upgrade'")
    if h.get("sec-websocket-accept", "").encode() != accept_key(key):
        raise ProtocolError("wrong Sec-WebSocket-Accept in the 101 answer")
    got = h.get("sec-websocket-protocol")
    if got is None or got.lower() != protocol.lower():
        raise ProtocolError(
            "the server chose subprotocol %r, expected %r" % (got, protocol)
            if got is not None
            else "the 101 answer names no subprotocol (expected %r)" % protocol
        )
    if h.get("sec-websocket-extensions"):
        raise ProtocolError("the server chose an extension the client did not offer")


def encode_header(buf, end, opcode, length, key):
    """Write a final client frame header ending at buf[end] (mask bit set, masking key last).
    Returns the index where it starts: the frame is buf[start:end] + masked payload."""
    if length < 126:
        start = end - 6
        buf[start + 1] = 0x80 | length
    elif length < 65536:
        start = end - 8
        buf[start + 1] = 0xFE
        buf[start + 2] = length >> 8
        buf[start + 3] = length & 0xFF
    else:
        start = end - 14
        buf[start + 1] = 0xFF
        for i in range(8):
            buf[start + 2 + i] = (length >> (56 - 8 * i)) & 0xFF
    buf[start] = 0x80 | opcode
    buf[end - 4 : end] = key
    return start


def mask_py(dst, doff, src, soff, n, key):
    """dst[doff + i] = src[soff + i] ^ key[i % 4] for i < n (portable; the reference for the
    fast one). Offsets instead of slices: a send allocates no memoryview for masking."""
    k0, k1, k2, k3 = key[0], key[1], key[2], key[3]
    i = 0
    n4 = n & ~3
    while i < n4:
        dst[doff + i] = src[soff + i] ^ k0
        dst[doff + i + 1] = src[soff + i + 1] ^ k1
        dst[doff + i + 2] = src[soff + i + 2] ^ k2
        dst[doff + i + 3] = src[soff + i + 3] ^ k3
        i += 4
    while i < n:
        dst[doff + i] = src[soff + i] ^ key[i & 3]
        i += 1


# The fast loop is compiled at first use from source: an .mpy of a viper function is tied to
# one architecture (mpy-cross -march), the source is not. Ports without the viper emitter
# (or CPython) keep mask_py.
_VIPER = """
@micropython.viper
def mask(dst, doff: int, src, soff: int, n: int, key):
    da = uint(ptr8(dst)) + uint(doff)
    sa = uint(ptr8(src)) + uint(soff)
    d = ptr8(da)
    s = ptr8(sa)
    k = ptr8(key)
    i = 0
    if (int(da | sa) & 3) == 0:
        d32 = ptr32(da)
        s32 = ptr32(sa)
        kw = k[0] | (k[1] << 8) | (k[2] << 16) | (k[3] << 24)
        w = n >> 2
        while i < w:
            d32[i] = s32[i] ^ kw
            i += 1
        i = w << 2
    while i < n:
        d[i] = s[i] ^ k[i & 3]
        i += 1
"""


def _fast_mask():
    try:
        import micropython

        g = {"micropython": micropython}
        exec(_VIPER, g)
        f = g["mask"]
        probe = bytearray(10)
        f(probe, 1, bytearray(range(10)), 1, 9, b"\xff\x00\xff\x00")
        if probe == b"\x00\xfe\x02\xfc\x04\xfa\x06\xf8\x08\xf6":
            return f
    except Exception:  # no viper emitter on this port (or CPython): keep the portable loop
        pass
    return None


mask = _fast_mask() or mask_py
_ZERO = b"\x00\x00\x00\x00"


def copy(dst, doff, src, soff, n):
    """dst[doff:doff + n] = src[soff:soff + n] without allocating when the fast loop exists
    (masking with a zero key copies); slices otherwise."""
    if mask is mask_py:
        memoryview(dst)[doff : doff + n] = memoryview(src)[soff : soff + n]
    else:
        mask(dst, doff, src, soff, n, _ZERO)


class Decoder:
    """Incremental decoder for frames from the server, fed in any split.

    ev = dec.next(data, pos, end, limit): consumes data[pos:end] up to one event and sets
    dec.pos to where it stopped. DATA: data[dec.start:dec.end] is payload (at most `limit`
    bytes). PING/PONG: dec.control[:dec.n]. CLOSE: dec.close_code, dec.close_reason.
    Raises ProtocolError on a frame a client must refuse (RFC 6455 sections 5.1-5.5)."""

    def __init__(self, max_message):
        self.max_message = max_message
        self._hdr = bytearray(10)
        self.control = bytearray(125)
        self.reset()

    def reset(self):
        self._hn = 0  # header bytes collected
        self._need = 2  # header bytes needed
        self._left = -1  # payload bytes left in the current frame; -1: in the header
        self._op = 0
        self._fin = True
        self._in_msg = False  # a data message started and not finished (FIN not seen)
        self._msg = 0  # bytes of the current data message so far
        self.n = 0
        self.pos = self.start = self.end = 0
        self.close_code = None
        self.close_reason = ""

    def next(self, data, pos, end, limit=65536):
        while pos < end:
            left = self._left
            if left < 0:  # header
                hdr = self._hdr
                while pos < end and self._hn < self._need:
                    hdr[self._hn] = data[pos]
                    self._hn += 1
                    pos += 1
                    if self._hn == 2:
                        self._need = self._first_two()
                if self._hn < self._need:
                    break
                ev = self._start_frame()
                if ev != NONE:
                    self.pos = pos
                    return ev
                continue
            if self._op == OP_CONT:  # data (the first frame of a message is relabelled)
                k = end - pos
                if k > left:
                    k = left
                if k > limit:
                    k = limit
                self.start = pos
                pos += k
                self.end = pos
                self._left = left - k
                if self._left == 0:
                    self._frame_done()
                self.pos = pos
                return DATA
            ctrl = self.control
            while pos < end and left:
                ctrl[self.n] = data[pos]
                self.n += 1
                pos += 1
                left -= 1
            self._left = left
            if left == 0:
                ev = self._control_done()
                self.pos = pos
                return ev
        self.pos = pos
        return NONE

    def _first_two(self):
        b0 = self._hdr[0]
        b1 = self._hdr[1]
        if b0 & 0x70:
            raise ProtocolError("WebSocket frame with reserved bits set (no extension agreed)")
        op = b0 & 0x0F
        if op == OP_TEXT:
            raise ProtocolError("WebSocket text frame: MQTT over WebSockets uses binary frames")
        if op not in (OP_CONT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            raise ProtocolError("WebSocket frame with reserved opcode %d" % op)
        if b1 & 0x80:
            raise ProtocolError("masked WebSocket frame from the server (servers must not mask)")
        n7 = b1 & 0x7F
        if op >= OP_CLOSE and (n7 > 125 or not b0 & 0x80):
            raise ProtocolError("fragmented or oversized WebSocket control frame")
        return 2 + (2 if n7 == 126 else 8 if n7 == 127 else 0)

    def _start_frame(self):
        hdr = self._hdr
        op = hdr[0] & 0x0F
        fin = bool(hdr[0] & 0x80)
        n = hdr[1] & 0x7F
        if n == 126:
            n = (hdr[2] << 8) | hdr[3]
        elif n == 127:
            if hdr[2] & 0x80:
                raise ProtocolError("WebSocket frame length with the top bit set")
            n = 0
            for i in range(2, 10):
                n = (n << 8) | hdr[i]
                if n > self.max_message:
                    break
        self._hn = 0
        self._need = 2
        if op >= OP_CLOSE:
            self._op = op
            self.n = 0
            self._left = n
            return self._control_done() if n == 0 else NONE
        if op == OP_BINARY:
            if self._in_msg:
                raise ProtocolError("new WebSocket message before the previous one ended")
            self._msg = 0
        elif not self._in_msg:
            raise ProtocolError("WebSocket continuation frame with no message to continue")
        self._msg += n
        if self._msg > self.max_message:
            raise ProtocolError(
                "WebSocket message larger than max_packet (%d bytes)" % self.max_message
            )
        self._op = OP_CONT
        self._in_msg = not fin
        self._left = n
        if n == 0:
            self._frame_done()
        return NONE

    def _frame_done(self):
        self._left = -1

    def _control_done(self):
        self._left = -1
        op = self._op
        if op == OP_PING:
            return PING
        if op == OP_PONG:
            return PONG
        n = self.n
        c = self.control
        if n == 0:
            self.close_code = 1005  # no status code present
            self.close_reason = ""
        elif n == 1:
            raise ProtocolError("WebSocket close frame with a 1-byte payload")
        else:
            self.close_code = (c[0] << 8) | c[1]
            try:
                self.close_reason = bytes(c[2:n]).decode()
            except UnicodeError:
                raise ProtocolError("WebSocket close reason is not UTF-8")
        return CLOSE
