# WebSocket client protocol (iothub.wsproto) and the HTTP CONNECT helpers (iothub.proxy):
# cases run unchanged on CPython and on the unix port (corerun). Server frames are built here
# by hand, byte by byte from RFC 6455 section 5.2, not with the code under test.

from coretest import Rng, check, eq, has, raises

from iothub import proxy, wsproto
from iothub.errors import ConfigError, ProtocolError, ProxyError


def srv(op, payload=b"", fin=True, rsv=0, masked=False):
    """A server frame (unmasked unless masked=True)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | op
    m = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126, n >> 8, n & 255])
    else:
        head = bytes([b0, m | 127]) + bytes((n >> (56 - 8 * i)) & 255 for i in range(8))
    return head + (b"\x00\x00\x00\x00" if masked else b"") + payload


def drain(dec, data, splits, limit=65536):
    """Feed data in pieces (split sizes cycle through `splits`); returns (stream, events)
    where stream is the concatenated DATA payload and events lists the control events."""
    stream = bytearray()
    events = []
    i = 0
    k = 0
    while i < len(data):
        step = splits[k % len(splits)]
        k += 1
        chunk = data[i : i + step]
        i += step
        pos = 0
        while True:
            ev = dec.next(chunk, pos, len(chunk), limit)
            check(dec.pos >= pos, "decoder went backwards")
            pos = dec.pos
            if ev == wsproto.DATA:
                check(0 < dec.end - dec.start <= limit, "DATA within the limit")
                stream += chunk[dec.start : dec.end]
            elif ev == wsproto.PING:
                events.append(["ping", list(dec.control[: dec.n])])
            elif ev == wsproto.PONG:
                events.append(["pong", dec.n])
            elif ev == wsproto.CLOSE:
                events.append(["close", dec.close_code, dec.close_reason])
            else:
                check(pos == len(chunk), "NONE only when all input is consumed")
                break
    return bytes(stream), events


# An MQTT stream spread over frames: a PUBLISH split across a binary frame and two
# continuations with a ping between them, an empty frame, a 300-byte frame (16-bit length),
# a pong, then a close with a reason.
PUBLISH = b"\x30\x0e\x00\x03a/b" + b"hello, hub"
BIG = bytes(range(256)) + bytes(44)
STREAM = (
    srv(2, PUBLISH[:3], fin=False)
    + srv(9, b"are you there")
    + srv(0, PUBLISH[3:9], fin=False)
    + srv(0, PUBLISH[9:])
    + srv(2, b"")
    + srv(2, BIG)
    + srv(10, b"x")
    + srv(8, b"\x03\xe8bye")
)
WANT_EVENTS = [["ping", list(b"are you there")], ["pong", 1], ["close", 1000, "bye"]]


def test_accept_key_rfc6455_example():
    eq(wsproto.accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "accept")
    eq(len(wsproto.make_key(bytes(16))), 24, "key length")


def test_upgrade_request():
    req = wsproto.upgrade_request("h.azure-devices.net", "/$iothub/websocket", b"a2V5", "mqtt")
    lines = req.decode().split("\r\n")
    eq(lines[0], "GET /$iothub/websocket HTTP/1.1", "request line")
    for h in (
        "Host: h.azure-devices.net",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: a2V5",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: mqtt",
    ):
        check(h in lines, "missing " + h)
    check(req.endswith(b"\r\n\r\n"), "ends with a blank line")


KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
GOOD = (
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
)


def test_check_upgrade_accepts_a_good_answer():
    wsproto.check_upgrade(GOOD.encode(), KEY, "mqtt")
    # header names and the protocol token are case-insensitive; extra headers are fine
    wsproto.check_upgrade(
        GOOD.replace("Sec-WebSocket-Protocol: mqtt", "sec-websocket-protocol: MQTT")
        .replace("Upgrade: websocket", "UPGRADE: WebSocket")
        .replace("\r\n\r\n", "\r\nServer: x\r\n\r\n")
        .encode(),
        KEY,
        "mqtt",
    )


BAD_ANSWERS = (
    (GOOD.replace("101 Switching Protocols", "200 OK"), "HTTP 200"),
    (GOOD.replace("101 Switching Protocols", "403 Forbidden"), "HTTP 403"),
    (GOOD.replace("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "AAAALMBiTxaQ9kYGzzhZRbK+xOo="), "Accept"),
    (GOOD.replace("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", ""), "Accept"),
    (GOOD.replace("mqtt", "amqp"), "'amqp'"),
    (GOOD.replace("Sec-WebSocket-Protocol: mqtt\r\n", ""), "no subprotocol"),
    (GOOD.replace("Upgrade: websocket\r\n", ""), "Upgrade: websocket"),
    (GOOD.replace("Connection: Upgrade", "Connection: keep-alive"), "Connection: Upgrade"),
    (GOOD.replace("\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"), "ext"),
    ("SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
    (GOOD.replace("Upgrade: websocket", "Upgrade websocket"), "malformed"),
)


def test_check_upgrade_refuses_bad_answers():
    out = []
    for text, needle in BAD_ANSWERS:
        msg = raises(ProtocolError, wsproto.check_upgrade, text.encode(), KEY, "mqtt")
        has(msg, needle, text[:40])
        out.append(msg)
    return len(out)


def test_encode_header_lengths():
    out = []
    key = b"\x01\x02\x03\x04"
    for n, want in (
        (0, b"\x82\x80"),
        (125, b"\x82\xfd"),
        (126, b"\x82\xfe\x00\x7e"),
        (65535, b"\x82\xfe\xff\xff"),
        (65536, b"\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00"),
    ):
        buf = bytearray(16)
        start = wsproto.encode_header(buf, 16, 2, n, key)
        eq(bytes(buf[start:16]), want + key, "header for %d" % n)
        out.append(16 - start)
    return out


def test_mask_fast_equals_portable():
    rng = Rng(7)
    key = bytearray(b"\xa5\x5a\x0f\xf0")
    src = rng.bytes(300)
    for n in (0, 1, 3, 4, 5, 63, 64, 257):
        for so in (0, 1, 2, 3):
            for do in (0, 1, 4):
                a = bytearray(300)
                b = bytearray(300)
                wsproto.mask(a, do, src, so, n, key)
                wsproto.mask_py(b, do, src, so, n, key)
                eq(a, b, "mask n=%d so=%d do=%d" % (n, so, do))
    twice = bytearray(64)
    wsproto.mask(twice, 0, src, 0, 64, key)
    wsproto.mask(twice, 0, twice, 0, 64, key)
    eq(bytes(twice), src[:64], "masking twice restores the data")


def test_decoder_stream_whole():
    dec = wsproto.Decoder(32768)
    stream, events = drain(dec, STREAM, [len(STREAM)])
    eq(stream, PUBLISH + BIG, "payload stream")
    eq(events, WANT_EVENTS, "events")


def test_decoder_stream_every_split_and_limit():
    n = 0
    for step in range(1, 24):
        for limit in (1, 7, 512):
            dec = wsproto.Decoder(32768)
            stream, events = drain(dec, STREAM, [step], limit)
            eq(stream, PUBLISH + BIG, "stream, split %d limit %d" % (step, limit))
            eq(events, WANT_EVENTS, "events, split %d limit %d" % (step, limit))
            n += 1
    rng = Rng(42)
    for _ in range(200):
        splits = [1 + rng.below(40) for _ in range(8)]
        stream, events = drain(wsproto.Decoder(32768), STREAM, splits, 1 + rng.below(600))
        eq((stream, events), (PUBLISH + BIG, WANT_EVENTS), "random split %r" % splits)
        n += 1
    return n


def test_decoder_64bit_length_and_close_without_code():
    payload = bytes(70000)
    data = bytes([0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]) + payload + srv(8)
    stream, events = drain(wsproto.Decoder(70000), data, [4096])
    eq(len(stream), 70000, "64-bit length frame")
    eq(events, [["close", 1005, ""]], "close without a status code")


BAD_FRAMES = (
    (srv(1, b"text"), "text frame"),
    (srv(2, b"x", masked=True), "masked"),
    (srv(2, b"x", rsv=0x40), "reserved bits"),
    (srv(3, b"x"), "reserved opcode 3"),
    (srv(11), "reserved opcode 11"),
    (srv(0, b"x"), "continuation"),
    (srv(2, b"a", fin=False) + srv(2, b"b"), "before the previous one ended"),
    (srv(9, b"p", fin=False), "control frame"),
    (bytes([0x89, 126, 0, 126]) + bytes(126), "control frame"),
    (srv(8, b"\x03"), "1-byte"),
    (srv(8, b"\x03\xe8\xff\xfe"), "UTF-8"),
    (srv(2, bytes(101)), "larger than max_packet"),
    (srv(2, bytes(60), fin=False) + srv(0, bytes(41)), "larger than max_packet"),
    (bytes([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]), "top bit"),
)


def test_decoder_refuses_what_a_client_must_refuse():
    for data, needle in BAD_FRAMES:
        for step in (1, len(data)):
            dec = wsproto.Decoder(100)
            msg = raises(ProtocolError, drain, dec, data, [step])
            has(msg, needle, "frame %r" % data[:12])
    # a message exactly at the limit is fine, in one frame or fragmented
    eq(drain(wsproto.Decoder(100), srv(2, bytes(100)), [9])[0], bytes(100), "at the limit")
    frag = srv(2, bytes(60), fin=False) + srv(9, b"") + srv(0, bytes(40))
    eq(drain(wsproto.Decoder(100), frag, [5])[0], bytes(100), "fragmented at the limit")


def test_decoder_fuzz():
    # Mutated frame streams in random splits: the decoder returns events or raises
    # ProtocolError, never anything else; the counts are compared across runtimes.
    rng = Rng(2026)
    ok = bad = 0
    for _ in range(400):
        data = bytearray(STREAM)
        for _ in range(1 + rng.below(4)):
            i = rng.below(len(data))
            data[i] = rng.u32() & 0xFF if rng.below(2) else data[i] ^ (1 << rng.below(8))
        splits = [1 + rng.below(30) for _ in range(5)]
        try:
            drain(wsproto.Decoder(1024), bytes(data), splits, 1 + rng.below(300))
            ok += 1
        except ProtocolError:
            bad += 1
    check(ok and bad, "the fuzz reached both outcomes")
    return [ok, bad]


# ---- HTTP CONNECT proxy -------------------------------------------------------------------


def test_proxy_check_and_request():
    eq(proxy.check(("proxy.lan", 3128)), ("proxy.lan", 3128, None), "no credentials")
    host, port, auth = proxy.check(("p", 8080, "alice", "s3cret"))
    eq(auth, b"Basic YWxpY2U6czNjcmV0", "RFC 7617 basic credentials")
    req = proxy.connect_request("h.azure-devices.net", 443, auth)
    eq(
        req,
        b"CONNECT h.azure-devices.net:443 HTTP/1.1\r\nHost: h.azure-devices.net:443\r\n"
        b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n",
        "CONNECT request",
    )
    for bad in (
        "p:3128",
        ("p",),
        ("p", "3128"),
        ("p", 0),
        ("", 80),
        ("p", 80, "u"),
        ("p", 80, "a:b", "pw"),
    ):
        msg = raises(ConfigError, proxy.check, bad)
        has(msg, "proxy", repr(bad))
    msg = raises(ConfigError, proxy.check, ("p", 80, "alice", 12345))
    check("12345" not in msg, "the password is not echoed")


def test_proxy_replies():
    proxy.check_reply(b"HTTP/1.1 200 Connection established\r\n\r\n", "p:1")
    proxy.check_reply(b"HTTP/1.0 200 OK\r\nProxy-agent: x\r\n\r\n", "p:1")
    out = []
    for head, status, needle in (
        (b"HTTP/1.0 407 Proxy Authentication Required\r\n\r\n", 407, "credentials"),
        (b"HTTP/1.1 401 Unauthorized\r\n\r\n", 401, "credentials"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", 403, "refused"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", 502, "502"),
        (b"HTTP/1.1 500 Unable to connect\r\n\r\n", 500, "expected 200"),
        (b"\x16\x03\x01\x00\x05hello\r\n\r\n", 0, "not answer CONNECT with HTTP"),
    ):
        try:
            proxy.check_reply(head, "p:1")
        except ProxyError as e:
            eq(e.status, status, "status of %r" % head[:20])
            has(str(e), needle, "message")
            has(str(e), "p:1", "names the proxy")
            out.append(e.status)
            continue
        raise AssertionError("no ProxyError for %r" % head[:20])
    return out
