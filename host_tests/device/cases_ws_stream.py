# iothub.websocket.WebSocket at its socket seam (a tiny fake TLS socket), on CPython and on the
# unix port: what readinto() returns for frames in any split, pings answered with pongs, a close
# frame after data, end of stream; what write() puts on the socket (one write per frame, masked).

from cases_ws import srv
from coretest import Rng, check, eq, raises

from iothub import websocket, wsproto
from iothub.errors import ConnectionLost


class FakeSock:
    """readinto() hands out `stream` in pieces of the given sizes, then None (EAGAIN) or b""
    (end of stream); write(buf, off, n) records each write."""

    def __init__(self, stream=b"", sizes=(4096,), eof=False):
        self.stream = stream
        self.sizes = sizes
        self.pos = 0
        self.k = 0
        self.eof = eof
        self.writes = []

    def readinto(self, buf):
        left = len(self.stream) - self.pos
        if left <= 0:
            return 0 if self.eof else None
        n = min(left, len(buf), self.sizes[self.k % len(self.sizes)])
        self.k += 1
        buf[:n] = self.stream[self.pos : self.pos + n]
        self.pos += n
        return n

    def write(self, buf, off, n):
        self.writes.append(bytes(buf[off : off + n]))
        return n


def client_frame(data):
    """(fin, opcode, unmasked payload) of one masked client frame."""
    b0, b1 = data[0], data[1]
    check(b1 & 0x80, "client frames are masked")
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        n = (data[2] << 8) | data[3]
        pos = 4
    key = data[pos : pos + 4]
    out = bytearray(n)
    wsproto.mask_py(out, 0, data, pos + 4, n, key)
    return [bool(b0 & 0x80), b0 & 0x0F, bytes(out)]


def test_readinto_collects_what_is_there_then_none():
    data = srv(2, b"abc") + srv(2, b"defg", fin=False) + srv(0, b"h") + srv(10, b"")
    w = websocket.WebSocket(FakeSock(data, (3,)), None)
    buf = bytearray(64)
    n = w.readinto(buf)
    eq(bytes(buf[:n]), b"abcdefgh", "all data frames in one call")
    eq(w.readinto(buf), None, "then nothing (the caller polls)")
    w = websocket.WebSocket(FakeSock(data), None)
    got = []
    while True:
        n = w.readinto(buf, 3)
        if not n:
            break
        got.append(bytes(buf[:n]))
    eq(got, [b"abc", b"def", b"gh"], "at most n bytes per call")


def test_readinto_any_split_answers_pings():
    payload = bytes(range(200))
    data = srv(2, payload[:90], fin=False) + srv(9, b"ping!") + srv(0, payload[90:])
    rng = Rng(5)
    for _ in range(50):
        sizes = [1 + rng.below(20) for _ in range(6)]
        sock = FakeSock(data, sizes)
        w = websocket.WebSocket(sock, None)
        buf = bytearray(256)
        out = bytearray()
        for _ in range(400):
            n = w.readinto(buf, 1 + rng.below(64))
            if n is None:
                break
            out += buf[:n]
        eq(bytes(out), payload, "payload with sizes %r" % sizes)
        eq([client_frame(f) for f in sock.writes], [[True, 10, b"ping!"]], "one pong")


def test_close_frame_after_data_and_end_of_stream():
    data = srv(2, b"last words") + srv(8, b"\x0f\xa0maintenance")
    sock = FakeSock(data)
    w = websocket.WebSocket(sock, None)
    buf = bytearray(64)
    n = w.readinto(buf)
    eq(bytes(buf[:n]), b"last words", "data before the close frame")
    msg = raises(ConnectionLost, w.readinto, buf)
    eq(msg, "WebSocket closed by the server: code 4000 (maintenance)", "close")
    eq([client_frame(f) for f in sock.writes], [[True, 8, b"\x0f\xa0"]], "close echoed")
    w = websocket.WebSocket(FakeSock(srv(2, b"x"), eof=True), None)
    eq(w.readinto(buf), 1, "data, then")
    eq(w.readinto(buf), 0, "end of stream")


def test_write_one_frame_per_packet_and_chunks_for_big_ones():
    sock = FakeSock()
    w = websocket.WebSocket(sock, None, None, 64)
    eq(w.write(b"\x30\x05\x00\x01ahi"), 7, "count")
    eq(w.write(b"xxPUBACK", 2, 6), 6, "offset form")
    big = bytes(range(256)) * 2
    eq(w.write(big), 512, "big")
    eq(len(sock.writes), 2 + (512 + 63) // 64, "one write per small frame, big in chunks")
    eq(client_frame(sock.writes[0]), [True, 2, b"\x30\x05\x00\x01ahi"], "frame 1")
    eq(client_frame(sock.writes[1]), [True, 2, b"PUBACK"], "frame 2")
    eq(client_frame(b"".join(sock.writes[2:])), [True, 2, big], "the big frame, reassembled")
    keys = [bytes(f[2:6]) for f in sock.writes[:2]]
    check(keys[0] != keys[1], "a fresh masking key per frame")
