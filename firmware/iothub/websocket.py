# MQTT over WebSockets: the I/O side of wsproto. upgrade() runs the opening handshake on a
# fresh non-blocking TLS socket and returns a WebSocket: an object with the TLS socket's
# write/readinto/close/cipher, so transport.Link drives it exactly as it drives the socket.
# Loaded only when transport="websockets".
#
# Waiting: select.poll on the raw TCP socket under the TLS one (the kernel wakes it when bytes
# arrive; a TLS socket on the unix port is polled every 1 ms). Plaintext mbedTLS or this
# object already holds is not visible there, so readinto() returns only after the TLS socket
# said "nothing more" or after it filled the caller's whole buffer: a poll on the raw socket
# after a short read is then accurate.
#
# Memory: one transmit buffer (HEADROOM + the session's txbuf) preallocated per connection:
# a packet is masked into it behind its frame header and written with one write, so one MQTT
# packet is one frame and one TLS record; offsets, not slices, so a send allocates nothing but
# (every 64th frame) a fresh 256-byte draw from os.urandom for the masking keys. One receive
# chunk.
try:
    from os import urandom
except ImportError:  # pragma: no cover - every supported port has os.urandom
    urandom = None

import select

from . import wsproto as ws
from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import ConnectionLost, ProtocolError, Timeout

PATH = "/$iothub/websocket"  # IoT Hub and DPS serve MQTT over WebSockets here, port 443
PROTOCOL = "mqtt"
_MAX_HEAD = 2048  # longest 101 answer accepted
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_AGAIN = (11, 35, 110, 116, -26880, -26752)  # EAGAIN, ETIMEDOUT, mbedTLS WANT_READ/WRITE


def _random(n):
    if urandom is not None:
        return urandom(n)
    import random

    return bytes(random.getrandbits(8) for _ in range(n))


def _wait(poll, raw, event, deadline, what):
    left = ticks_diff(deadline, ticks_ms())
    if left <= 0:
        raise Timeout("no %s within the connect timeout" % what)
    poll.modify(raw, event)
    poll.poll(min(left, 100))


def upgrade(sock, raw, host, deadline, txbuf=1024, max_message=32768, path=PATH, send=None):
    """Send the Upgrade request for wss://host/path over the non-blocking TLS socket `sock`
    (on the TCP socket `raw`), check the 101 answer; waits until the ticks_ms deadline at
    most. Returns a WebSocket. send(req): how the request is written (transport.Link's
    write, which also completes the TLS handshake), else written here."""
    poll = select.poll()
    poll.register(raw, _POLLIN)
    key = ws.make_key(_random(16))
    req = ws.upgrade_request(host, path, key, PROTOCOL)
    done = 0
    if send is not None:
        send(req)
        done = len(req)
    while done < len(req):
        try:
            n = sock.write(req, done, len(req) - done)
        except OSError as e:
            raise ConnectionLost("WebSocket upgrade: write failed: %s" % (e,))
        if n:
            done += n
        else:
            _wait(poll, raw, _POLLOUT, deadline, "room to send the WebSocket upgrade")
    head = bytearray(_MAX_HEAD)
    got = 0
    while True:
        try:
            n = sock.readinto(memoryview(head)[got:])
        except OSError as e:
            if (e.args[0] if e.args else None) not in _AGAIN:
                raise ConnectionLost("WebSocket upgrade: read failed: %s" % (e,))
            n = None
        if n == 0:
            raise ConnectionLost(
                "the server closed the connection instead of answering the upgrade"
            )
        if n is None:
            _wait(poll, raw, _POLLIN, deadline, "answer to the WebSocket upgrade")
            continue
        got += n
        end = bytes(head[:got]).find(b"\r\n\r\n")
        if end >= 0:
            break
        if got == _MAX_HEAD:
            raise ProtocolError("the answer to the WebSocket upgrade is over %d bytes" % _MAX_HEAD)
    ws.check_upgrade(memoryview(head)[: end + 4], key, PROTOCOL)
    w = WebSocket(sock, poll, raw, txbuf, max_message)
    extra = got - end - 4
    if extra:  # frames the server sent right behind its answer
        w._rx[:extra] = head[end + 4 : got]
        w._end = extra
    return w


class WebSocket:
    """A WebSocket client stream over a TLS socket, with the socket's interface:
    write(buf[, off, n]) sends the bytes as one binary frame and returns their count;
    readinto(buf[, n]) returns payload bytes of data frames, None when nothing is available
    yet, 0 at end of stream; pings are answered, a close frame raises ConnectionLost with its
    code and reason. poll: a select.poll with `raw` registered, for waits on a full socket."""

    def __init__(self, sock, poll, raw=None, txbuf=1024, max_message=32768, rxchunk=512):
        self.sock = sock
        self._poll = poll
        self._raw = raw
        self._eof = False
        self._tx = bytearray(ws.HEADROOM + (txbuf + 3 & ~3))
        self._key = bytearray(4)
        self._pool = b""
        self._pi = 0
        self._rx = bytearray(rxchunk)
        self._pos = self._end = 0
        self.dec = ws.Decoder(max_message)
        self.write_timeout_ms = 10000
        self.frames_out = 0
        self.close_code = None
        self.close_reason = None
        self._peer_closed = None  # the ConnectionLost text once the server sent a close frame

    def _next_key(self):
        pi = self._pi
        if pi + 4 > len(self._pool):
            self._pool = _random(256)
            pi = 0
        k = self._key
        p = self._pool
        k[0] = p[pi]
        k[1] = p[pi + 1]
        k[2] = p[pi + 2]
        k[3] = p[pi + 3]
        self._pi = pi + 4

    def _send(self, buf, off, total):
        # write(buf, off, len): the stream protocol's offset form, so no slice is allocated
        sock = self.sock
        done = 0
        deadline = None
        while done < total:
            n = sock.write(buf, off + done, total - done)
            if n:
                done += n
                continue
            if deadline is None:
                deadline = ticks_add(ticks_ms(), self.write_timeout_ms)
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise OSError(110, "WebSocket write stalled")  # Link: ConnectionLost, closed
            self._poll.modify(self._raw, _POLLOUT)
            self._poll.poll(min(left, 100))

    def _frame(self, opcode, data, n):
        # Header and masked payload in one buffer, one write; larger payloads in chunks.
        self._next_key()
        key = self._key
        tx = self._tx
        h = ws.HEADROOM
        start = ws.encode_header(tx, h, opcode, n, key)
        room = len(tx) - h
        if n <= room:
            ws.mask(tx, h, data, 0, n, key)
            self._send(tx, start, h + n - start)
        else:
            off = 0
            while off < n:
                k = min(room, n - off)  # room is a multiple of 4: the key phase stays 0
                ws.mask(tx, h, data, off, k, key)
                s = start if off == 0 else h
                self._send(tx, s, h + k - s)
                off += k
        self.frames_out += 1

    def write(self, buf, off=0, n=-1):
        if n < 0:
            n = len(buf) - off
        if off:
            buf = memoryview(buf)[off : off + n]  # rare: the rest of a split write
        self._frame(ws.OP_BINARY, buf, n)
        return n

    def readinto(self, buf, n=-1):
        """Payload bytes into buf[:n]: as many as are available without waiting."""
        dec = self.dec
        rx = self._rx
        limit = len(buf) if n < 0 else n
        got = 0
        if self._peer_closed is not None:
            raise ConnectionLost(self._peer_closed)
        while got < limit:
            if self._pos >= self._end:
                if self._eof:
                    return got
                try:
                    k = self.sock.readinto(rx)
                except OSError as e:
                    if got and (e.args[0] if e.args else None) in _AGAIN:
                        return got
                    raise
                if k is None:
                    return got or None  # None: nothing yet (the caller polls)
                if k == 0:
                    self._eof = True
                    return got  # 0: end of stream (after what was already here)
                self._pos = 0
                self._end = k
            ev = dec.next(rx, self._pos, self._end, limit - got)
            self._pos = dec.pos
            if ev == ws.DATA:
                k = dec.end - dec.start
                ws.copy(buf, got, rx, dec.start, k)
                got += k
            elif ev == ws.PING:
                self._frame(ws.OP_PONG, dec.control, dec.n)
            elif ev == ws.CLOSE:
                self.close_code = dec.close_code
                self.close_reason = reason = dec.close_reason
                self._peer_closed = "WebSocket closed by the server: code %d%s" % (
                    dec.close_code,
                    " (%s)" % reason[:80] if reason else "",
                )
                try:  # echo the close (RFC 6455 section 5.5.1), best effort
                    self._frame(ws.OP_CLOSE, dec.control, 2 if dec.n >= 2 else 0)
                except OSError:
                    pass
                if got:
                    return got  # the data before the close frame first; raised next time
                raise ConnectionLost(self._peer_closed)
        return got

    def cipher(self):
        return self.sock.cipher()

    def close(self):
        sock = self.sock
        if self.close_code is None:
            self.close_code = 1000
            try:  # a normal closure (1000), best effort: the link is going away anyway
                self._frame(ws.OP_CLOSE, b"\x03\xe8", 2)
            except OSError:
                pass
        sock.close()
