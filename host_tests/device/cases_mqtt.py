# MQTT 3.1.1 codec cases: run on CPython and on the unix port (coretest.py).
# Exact bytes per OASIS MQTT 3.1.1 sections 2-3. Every decoder case is fed whole, byte by
# byte, in pseudo-random splits, and followed by trailing bytes (h11's habit).

import binascii

import mqtt_extra as x
from coretest import Rng, eq, has, raises

import iothub.mqtt as m
import iothub.mqttconn as mc
from iothub.errors import ConfigError, ProtocolError


def H(s):
    return binascii.unhexlify(s.replace(" ", ""))


def hx(b):
    return binascii.hexlify(b).decode()


def enc(fn, *args, **kw):
    buf = bytearray(512)
    n = fn(buf, *args, **kw)
    return hx(buf[:n])


# ---- encoders ----------------------------------------------------------------------------

ENCODE = [
    # (name, function, args, kwargs, expected hex)
    (
        "connect user+password",
        mc.encode_connect,
        ("dev1", "u", "p"),
        {},
        "10 16 0004 4d515454 04 c0 00f0 0004 64657631 0001 75 0001 70",
    ),
    (
        "connect clean, keepalive 60, no credentials",
        mc.encode_connect,
        ("c",),
        {"keepalive": 60, "clean_session": True},
        "10 0d 0004 4d515454 04 02 003c 0001 63",
    ),
    ("publish qos0", x.encode_publish, ("a/b", b"hi"), {}, "30 07 0003 612f62 6869"),
    (
        "publish qos1 dup retain",
        x.encode_publish,
        ("a/b", b"hi"),
        {"qos": 1, "pid": 0x1234, "dup": True, "retain": True},
        "3b 09 0003 612f62 1234 6869",
    ),
    ("publish empty payload", x.encode_publish, (b"t", b""), {}, "30 03 0001 74"),
    ("publish str payload", x.encode_publish, ("t", "\u00e9"), {}, "30 05 0001 74 c3a9"),
    ("publish utf-8 topic", x.encode_publish, ("\u00fc", b"x"), {}, "30 05 0002 c3bc 78"),
    (
        "publish header only",
        m.encode_publish_header,
        ("a/b", 300),
        {"qos": 1, "pid": 1},
        "32 b3 02 0003 612f62 0001",
    ),
    ("puback", x.encode_puback, (7,), {}, "40 02 0007"),
    (
        "subscribe two filters",
        mc.encode_subscribe,
        (1, [("a/#", 1), ("b", 0)]),
        {},
        "82 0c 0001 0003 612f23 01 0001 62 00",
    ),
    ("pingreq", x.encode_pingreq, (), {}, "c0 00"),
    ("disconnect", x.encode_disconnect, (), {}, "e0 00"),
]


def test_encoders_exact_bytes():
    for name, fn, args, kw, want in ENCODE:
        eq(enc(fn, *args, **kw), want.replace(" ", ""), name)


def test_remaining_length_boundaries():
    # Remaining length is encoded 7 bits per byte, least significant first (MQTT 2.2.3).
    for rem, want in (
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16383, "ff7f"),
        (16384, "808001"),
        (2097151, "ffff7f"),
        (2097152, "80808001"),
        (268435455, "ffffff7f"),
    ):
        b = bytearray(5)
        n = m._put_rl(b, 0, rem)
        eq(hx(b[:n]), want, "remaining length %d" % rem)
        eq(m._rl_size(rem), n, "size of %d" % rem)
    has(raises(ConfigError, m._rl_size, 268435456), "too large")
    # Through the public encoder: payloads around the 1/2-byte boundary.
    for plen, head in ((124, "307f"), (125, "308001")):
        buf = bytearray(200)
        n = x.encode_publish(buf, "t", bytes(plen))
        eq(hx(buf[: len(head) // 2]), head, "payload %d" % plen)
        eq(n, plen + 3 + len(head) // 2, "length for payload %d" % plen)


def test_encoder_errors():
    small = bytearray(8)
    has(raises(ConfigError, x.encode_publish, small, "a/b", b"123456"), "needs 13 bytes")
    has(raises(ConfigError, m.encode_publish_header, small[:6], "a/b", 0), "needs 7 bytes")
    eq(m.encode_publish_header(small, "a/b", 1000), 8, "header only needs to fit")
    has(raises(ConfigError, mc.encode_connect, small, "client"), "CONNECT needs")
    has(raises(ConfigError, x.encode_pingreq, bytearray(1)), "PINGREQ needs 2")
    b = bytearray(64)
    has(raises(ConfigError, x.encode_publish, b, "t", b"", qos=2, pid=1), "QoS 2 is not supported")
    has(raises(ConfigError, x.encode_publish, b, "t", b"", qos=3, pid=1), "QoS must be 0 or 1")
    has(raises(ConfigError, x.encode_publish, b, "t", b"", qos=1), "packet id")
    has(raises(ConfigError, x.encode_publish, b, "t", b"", qos=1, pid=65536), "packet id")
    has(raises(ConfigError, x.encode_publish, b, "t", b"", dup=True), "DUP")
    has(raises(ConfigError, x.encode_publish, b, "", b""), "empty")
    has(raises(ConfigError, x.encode_publish, b, "a/#", b""), "wildcard")
    has(raises(ConfigError, x.encode_publish, b, "a/+/b", b""), "wildcard")
    has(raises(ConfigError, x.encode_publish, b, 5, b""), "topic must be")
    has(raises(ConfigError, x.encode_publish, b, "t", 5), "payload must be")
    has(raises(ConfigError, m.encode_publish_header, b, "t", -1), "payload length")
    has(raises(ConfigError, mc.encode_connect, b, "c", None, "pw"), "needs a username")
    has(raises(ConfigError, mc.encode_connect, b, ""), "clean_session")
    has(raises(ConfigError, mc.encode_connect, b, "c", keepalive=65536), "keepalive")
    has(raises(ConfigError, mc.encode_connect, bytearray(70000), "c", "u" * 65536), "65535")
    has(raises(ConfigError, mc.encode_subscribe, b, 1, []), "at least one")
    has(raises(ConfigError, mc.encode_subscribe, b, 1, [("a", 2)]), "QoS 2")
    has(raises(ConfigError, mc.encode_subscribe, b, 1, ["a"]), "(filter, qos)")
    has(raises(ConfigError, mc.encode_subscribe, b, 0, [("a", 0)]), "packet id")
    has(raises(ConfigError, x.encode_puback, b, 0), "packet id")
    # An empty client id is fine with a clean session.
    eq(enc(mc.encode_connect, "", clean_session=True), "100c00044d51545404020" + "0f00000")


def test_encode_whole_packet_into_exact_buffer():
    # The buffer may be exactly the packet size; the encoder never writes past it.
    for size in (9, 10, 30):
        buf = bytearray(size)
        n = x.encode_publish(buf, "a/b", b"hi")
        eq(n, 9)
        eq(hx(buf[:9]), "30070003612f626869")
        eq(len(buf), size, "buffer size unchanged")


# ---- decoder -----------------------------------------------------------------------------


def summary(p):
    t = p.type
    if t == m.PUBLISH:
        return ["PUBLISH", p.topic, hx(p.payload), p.qos, p.pid, x.dup(p), x.retain(p)]
    if t == m.CONNACK:
        return ["CONNACK", p.session_present, p.rc]
    if t == m.SUBACK:
        return ["SUBACK", p.pid, p.granted]
    if t in (m.PUBACK, m.UNSUBACK):
        return [x.packet_name(t), p.pid]
    if t == m.DROPPED:
        return ["DROPPED", p.rc, p.pid, (p.flags >> 1) & 3, p.payload_len]
    return [x.packet_name(t)]


DECODE = [
    # (name, hex, summary)
    ("connack", "20020000", ["CONNACK", False, 0]),
    ("connack session present", "20020100", ["CONNACK", True, 0]),
    ("connack refused 5", "20020005", ["CONNACK", False, 5]),
    ("publish qos0", "3007 0003 612f62 6869", ["PUBLISH", "a/b", "6869", 0, 0, False, False]),
    (
        "publish qos1 dup retain",
        "3b09 0003 612f62 1234 6869",
        ["PUBLISH", "a/b", "6869", 1, 0x1234, True, True],
    ),
    ("publish empty payload", "3003 0001 74", ["PUBLISH", "t", "", 0, 0, False, False]),
    ("publish qos1 empty payload", "3205 0001 74 0001", ["PUBLISH", "t", "", 1, 1, False, False]),
    (
        "publish utf-8 topic",
        "3009 0006 c3bc2fe282ac 00",
        ["PUBLISH", "\u00fc/\u20ac", "00", 0, 0, False, False],
    ),
    (
        "publish iothub method",
        "3022 001e 24696f746875622f6d6574686f64732f504f53542f6d2f3f247269643d31 7b7d",
        ["PUBLISH", "$iothub/methods/POST/m/?$rid=1", "7b7d", 0, 0, False, False],
    ),
    ("puback", "40020007", ["PUBACK", 7]),
    ("unsuback", "b0020009", ["UNSUBACK", 9]),
    ("suback", "9005 0001 01 00 80", ["SUBACK", 1, [1, 0, 128]]),
    ("suback qos2 granted", "9003 ffff 02", ["SUBACK", 65535, [2]]),
    ("pingresp", "d000", ["PINGRESP"]),
    (
        "publish 2-byte remaining length",
        "30 8001 0001 74" + "ab" * 125,
        ["PUBLISH", "t", "ab" * 125, 0, 0, False, False],
    ),
]


def drain(dec, out):
    while True:
        p = dec.next()
        if p is None:
            return out
        out.append(summary(p))


def decode_chunks(chunks, **kw):
    dec = m.Decoder(**kw)
    out = []
    for c in chunks:
        x.feed(dec, c)
        drain(dec, out)
    return out


def splits(data, rng):
    chunks = []
    i = 0
    while i < len(data):
        k = 1 + rng.below(7)
        chunks.append(data[i : i + k])
        i += k
    return chunks


def test_decode_table_whole_bytewise_splits():
    rng = Rng(311)
    for name, h, want in DECODE:
        data = H(h)
        eq(decode_chunks([data]), [want], name + " whole")
        eq(decode_chunks([data[i : i + 1] for i in range(len(data))]), [want], name + " bytewise")
        eq(decode_chunks(splits(data, rng)), [want], name + " split")
        eq(decode_chunks([memoryview(data), bytearray()]), [want], name + " memoryview")
        eq(decode_chunks([data], bufsize=8), [want], name + " small buffer")


def test_decode_with_trailing_bytes():
    # A packet followed by the first bytes of the next: the first comes out, the rest waits.
    follow = H("3b09 0003 612f62 1234 6869")
    for name, h, want in DECODE:
        data = H(h)
        for cut in (1, 2, 5):
            dec = m.Decoder()
            x.feed(dec, data + follow[:cut])
            eq(summary(dec.next()), want, "%s + %d trailing" % (name, cut))
            eq(dec.next(), None, "%s: partial packet must wait" % name)
            eq(x.pending(dec), False, name)
            x.feed(dec, follow[cut:])
            eq(summary(dec.next())[0], "PUBLISH", name + " then the next packet")
            eq(dec.next(), None, name)


def test_decode_stream_of_all_packets():
    data = b"".join(H(h) for _, h, _ in DECODE)
    want = [w for _, _, w in DECODE]
    eq(decode_chunks([data]), want, "all in one feed")
    eq(decode_chunks([data[i : i + 1] for i in range(len(data))]), want, "all bytewise")
    rng = Rng(7)
    for bufsize in (8, 64, 1024):
        eq(decode_chunks(splits(data, rng), bufsize=bufsize), want, "splits, bufsize %d" % bufsize)
    return len(data)


BAD = [
    # (name, hex, error substring, decoder kwargs)
    ("remaining length 5 bytes", "30 ffffffff7f", "malformed remaining length", {}),
    ("remaining length 5 bytes, zero", "d0 8080808000", "malformed remaining length", {}),
    (
        "packet above limit (not a PUBLISH: those are dropped, see below)",
        "90 8101 0001" + "00" * 127,
        "of 132 bytes exceeds the limit of 100",
        {"max_packet": 100},
    ),
    (
        "limit counts the header",
        "9063 0001" + "00" * 97,
        "101 bytes exceeds the limit of 100",
        {"max_packet": 100},
    ),
    ("huge announce", "90 ffffff7f", "268435460 bytes exceeds the limit of 263168", {}),
    ("CONNECT from server", "1000", "never sends", {}),
    ("SUBSCRIBE from server", "8205 0001 0001 61", "SUBSCRIBE received", {}),
    ("UNSUBSCRIBE from server", "a200", "never sends", {}),
    ("PINGREQ from server", "c000", "PINGREQ received", {}),
    ("DISCONNECT from server", "e000", "DISCONNECT received", {}),
    ("PUBREC", "50020001", "QoS 2 is not supported", {}),
    ("PUBREL", "62020001", "PUBREL received: QoS 2", {}),
    ("PUBCOMP", "70020001", "QoS 2 is not supported", {}),
    ("PUBLISH QoS 2", "3407 0001 74 0001 00", "QoS 2 is not supported", {}),
    ("PUBLISH QoS 3", "3605 0001 74 0001", "QoS 3", {}),
    ("PUBLISH DUP on QoS 0", "3803 0001 74", "DUP", {}),
    ("reserved type 0", "0000", "reserved packet type 0", {}),
    ("reserved type 15", "f000", "reserved packet type 15", {}),
    ("PUBACK flags", "41020001", "reserved flags", {}),
    ("CONNACK flags", "28020000", "CONNACK with reserved flags", {}),
    ("SUBACK flags", "9203000100", "reserved flags", {}),
    ("PINGRESP flags", "d100", "reserved flags", {}),
    ("CONNACK too long", "2003000000", "remaining length 3, expected 2", {}),
    ("CONNACK truncated", "200100", "remaining length 1, expected 2", {}),
    ("CONNACK reserved ack bits", "20020200", "reserved bits", {}),
    ("PUBACK truncated", "400100", "PUBACK remaining length 1", {}),
    ("PUBACK too long", "4003000100", "expected 2", {}),
    ("PUBACK packet id 0", "40020000", "packet id 0", {}),
    ("UNSUBACK truncated", "b000", "UNSUBACK remaining length 0", {}),
    ("SUBACK truncated", "90020001", "at least 3", {}),
    ("SUBACK bad return code", "9003000103", "return code 0x03", {}),
    ("SUBACK packet id 0", "9003000000", "packet id 0", {}),
    ("PINGRESP with body", "d00100", "PINGRESP remaining length 1", {}),
    ("PUBLISH no topic length", "300100", "no room for the topic length", {}),
    ("PUBLISH empty", "3000", "no room for the topic length", {}),
    ("PUBLISH topic beyond packet", "3004 0009 6162", "topic length 9 exceeds", {}),
    ("PUBLISH QoS 1 without packet id", "3205 0003 612f62", "packet id", {}),
    ("PUBLISH QoS 1 packet id 0", "3207 0003 612f62 0000", "packet id 0", {}),
]


def test_malformed_input_is_a_clear_protocol_error():
    for name, h, sub, kw in BAD:
        data = H(h)
        for mode in ("whole", "bytewise", "after a good packet"):
            if mode == "whole":
                chunks = [data]
            elif mode == "bytewise":
                chunks = [data[i : i + 1] for i in range(len(data))]
            else:
                chunks = [H("d000") + data]
            msg = raises(ProtocolError, decode_chunks, chunks, **kw)
            has(msg, sub, "%s (%s)" % (name, mode))


def test_decoder_stops_after_an_error_until_reset():
    dec = m.Decoder()
    raises(ProtocolError, x.feed, dec, H("e000"))
    has(raises(ProtocolError, x.feed, dec, H("d000")), "stopped after an earlier error")
    has(raises(ProtocolError, dec.next), "DISCONNECT received")
    dec.reset()
    x.feed(dec, H("d000"))
    eq(summary(dec.next()), ["PINGRESP"])


# PUBLISHes that are well framed but have no topic a client can route: dropped (a DROPPED
# packet with the reason and the packet id to acknowledge), and decoding goes on.
UNROUTABLE = [
    ("zero-length topic", "3002 0000", 0),
    ("topic not UTF-8", "3004 0002 c328", 0),
    ("topic overlong UTF-8", "3004 0002 c0af", 0),
    ("topic surrogate", "3005 0003 eda080", 0),
    ("topic truncated UTF-8", "3005 0003 61e282", 0),
    ("topic wildcard #", "3005 0003 612f23", 0),
    ("topic wildcard +", "3005 0003 2b2f61", 0),
    ("topic NUL", "3005 0003 610062", 0),
    ("QoS 1, topic not UTF-8, payload", "3209 0002 c328 0107 6869 21", 0x107),
]


def test_unroutable_publish_is_dropped_not_fatal():
    for name, h, pid in UNROUTABLE:
        data = H(h) + H("d000")
        qos = 1 if pid else 0
        want = [["DROPPED", m.DROP_TOPIC, pid, qos, len(H(h))], ["PINGRESP"]]
        eq(decode_chunks([data]), want, name)
        eq(decode_chunks([data[i : i + 1] for i in range(len(data))]), want, name + " bytewise")


def test_oversize_publish_is_read_through_not_buffered():
    # The header alone announces 1 MB: nothing is allocated for it, the decoder goes on.
    dec = m.Decoder(max_packet=4096, bufsize=64)
    x.feed(dec, H("30 80804000"))
    eq(len(dec._buf), 64, "buffer not grown")
    eq(dec.next(), None, "nothing to hand out yet")
    # A 5000-byte QoS 1 PUBLISH over max_packet, in 100-byte chunks, then a PINGRESP: the
    # buffer never grows and the packet id comes out to be acknowledged.
    payload = bytes(range(256)) * 20
    buf = bytearray(6000)
    n = x.encode_publish(buf, "big/topic", payload, qos=1, pid=0x1234)
    data = bytes(buf[:n]) + H("d000")
    for step in (100, 1, 7, 64):
        dec = m.Decoder(max_packet=4096, bufsize=64)
        out = []
        for i in range(0, len(data), step):
            x.feed(dec, data[i : i + step])
            eq(len(dec._buf), 64, "buffer not grown (step %d)" % step)
            drain(dec, out)
        # rc 1: larger than max_packet
        eq(out, [["DROPPED", 1, 0x1234, 1, n], ["PINGRESP"]], "step %d" % step)


def test_oversize_non_publish_is_a_protocol_error():
    dec = m.Decoder(max_packet=16, bufsize=64)
    sub = "90 14 0001" + "00" * 18
    has(raises(ProtocolError, x.feed, dec, H(sub)), "SUBACK of 22 bytes exceeds the limit of 16")


def test_large_packet_grows_buffer_once_then_shrinks():
    payload = bytes(range(256)) * 20  # 5120 bytes
    buf = bytearray(6000)
    n = x.encode_publish(buf, "big/topic", payload, qos=1, pid=9)
    data = bytes(buf[:n]) + H("d000")
    dec = m.Decoder(bufsize=64)
    seen = [dec._buf]
    out = []
    for i in range(0, len(data), 100):
        x.feed(dec, data[i : i + 100])
        if seen[-1] is not dec._buf:
            seen.append(dec._buf)
        drain(dec, out)
    eq(len(out), 2)
    eq(out[0][1:3], ["big/topic", hx(payload)])
    eq(out[1], ["PINGRESP"])
    eq(len(seen), 2, "one growth for the large packet")
    eq(len(seen[1]), n + 64, "grown to the packet size plus one base buffer")
    eq(len(dec._buf), 64, "back to the base buffer when drained")
    return [n, len(seen[1])]


ROUNDTRIP = [
    ("t", b"", 0, 0, False, False),
    ("a/b/c", b"x", 1, 1, False, True),
    ("devices/d/messages/devicebound/%24.to=%2Fx&a=b", b"{}" * 60, 1, 65535, True, False),
    ("\u4e2d/\U0001f600", bytes(range(256)), 0, 0, False, True),
    ("t", b"z" * 20000, 1, 300, False, False),
]


def test_publish_roundtrip_through_decoder():
    rng = Rng(99)
    for topic, payload, qos, pid, dup, retain in ROUNDTRIP:
        buf = bytearray(len(payload) + 128)
        n = x.encode_publish(buf, topic, payload, qos=qos, pid=pid, dup=dup, retain=retain)
        data = bytes(buf[:n])
        want = ["PUBLISH", topic, hx(payload), qos, pid, dup, retain]
        eq(decode_chunks([data]), [want], topic)
        eq(decode_chunks(splits(data, rng), bufsize=32), [want], topic + " split")
        # header + payload written separately gives the same bytes
        h = bytearray(64)
        k = m.encode_publish_header(h, topic, len(payload), qos, pid, dup)
        h[0] |= 1 if retain else 0
        eq(bytes(h[:k]) + payload, data, topic + " header+payload")
        # and at an offset, as the client encodes into its outbox ring
        k2 = m.encode_publish_header(h, topic, len(payload), qos, pid, dup, 7)
        eq(k2 - 7, k, topic + " header length at an offset")
        eq(m.publish_size(len(topic.encode()), len(payload), qos), n, topic + " publish_size")


def test_next_into_reuses_packet_and_guards_stale_data():
    dec = m.Decoder()
    p = m.Packet()
    x.feed(dec, H("3209 0003 612f62 0005 6869"))
    q = dec.next(p)
    eq(q is p, True, "same object")
    eq([p.type, p.qos, p.pid, p.topic_len, p.payload_len], [m.PUBLISH, 1, 5, 3, 2])
    eq(x.topic_is(p, b"a/b"), True)
    eq(x.topic_is(p, b"a/"), False)
    eq(x.topic_startswith(p, b"a/"), True)
    eq(x.topic_startswith(p, b"b"), False)
    eq(x.topic_startswith(p, b"a/bc"), False)
    eq(p.topic, "a/b")
    eq(p.payload, b"hi")
    x.feed(dec, H("3007 0003 782f79 6869"))
    eq(dec.next(p) is p, True)
    x.feed(dec, H("d000"))  # overwrites the buffer region the lazy packet points to
    has(raises(ConfigError, lambda: p.topic), "overwritten")
    eq(summary(dec.next(p)), ["PINGRESP"])
    eq([p.pid, p.payload_len, p.topic, p.payload], [0, 0, None, None], "fields cleared")
    # Packets from next() own their data: still readable after later feeds.
    x.feed(dec, H("3007 0003 612f62 6869"))
    own = dec.next()
    x.feed(dec, H("3007 0003 782f79 7a7a"))
    dec.next()
    eq([own.topic, own.payload], ["a/b", b"hi"])


def test_decoder_arguments():
    has(raises(ConfigError, m.Decoder, 1), "max_packet")
    has(raises(ConfigError, m.Decoder, 100, 4), "bufsize")
    dec = m.Decoder()
    x.feed(dec, b"")
    eq(dec.next(), None)
    eq(x.pending(dec), False)
