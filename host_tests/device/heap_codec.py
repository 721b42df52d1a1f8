# Heap discipline of the MQTT codec on the unix port (after MicroPython's
# tests/micropython/heapalloc_*.py): the hot path runs under micropython.heap_lock(), where
# any allocation raises MemoryError. Prints one JSON line with the findings.

import gc
import json

import micropython
import mqtt_extra as x

import iothub.mqtt as m

TOPIC = b"devices/dev1/messages/events/$.ct=application%2Fjson&$.ce=utf-8"
C2D_PREFIX = b"devices/dev1/messages/devicebound/"


def hot_path(n):
    buf = bytearray(512)
    payload = b'{"temperature":21.5,"humidity":40,"seq":123456789}'
    dec = m.Decoder(bufsize=256)
    pkt = m.Packet()
    tmp = bytearray(128)
    k = x.encode_publish(tmp, C2D_PREFIX + b"a=1", b'{"cmd":"on"}', qos=1, pid=7)
    inbound = bytes(tmp[:k])  # a small C2D PUBLISH as the hub would send it
    puback = b"\x40\x02\x00\x01"
    pingresp = b"\xd0\x00"
    step = "start"
    ok = h = w = 0
    x.feed(dec, inbound)  # the first PUBLISH loads the UTF-8 check once (lazily imported)
    dec.next(pkt)
    gc.collect()
    micropython.heap_lock()
    try:
        for i in range(1, n + 1):
            pid = i & 0xFFFF or 1
            step = "encode_publish_header"
            h = m.encode_publish_header(buf, TOPIC, len(payload), 1, pid)
            step = "PUBLISH encoded at an offset, payload copied (the client's send path)"
            w = m.encode_publish_header(buf, TOPIC, len(payload), 1, pid, False, 64)
            buf[w : w + len(payload)] = payload
            w += len(payload) - 64  # the packet's length
            step = "read straight into the decoder (room/filled)"
            room = dec.room()
            dec._buf[dec._end : dec._end + len(puback)] = puback
            dec.filled(len(puback))
            if room < len(puback) or dec.next(pkt).pid != 1:
                break
            step = "feed PUBLISH"
            x.feed(dec, inbound)
            step = "next(into) PUBLISH"
            p = dec.next(pkt)
            step = "inspect PUBLISH"
            if p.qos != 1 or p.pid != 7 or not x.topic_startswith(p, C2D_PREFIX):
                break
            if p.payload_len != 12 or x.topic_is(p, TOPIC):
                break
            step = "encode_puback"
            x.encode_puback(buf, p.pid)
            step = "feed+next PUBACK"
            x.feed(dec, puback)
            if dec.next(pkt).pid != 1 or dec.next(pkt) is not None:
                break
            step = "pingreq/pingresp"
            x.encode_pingreq(buf)
            x.feed(dec, pingresp)
            if dec.next(pkt).type != m.PINGRESP:
                break
            ok += 1
        step = "done"
    except MemoryError:
        pass
    finally:
        micropython.heap_unlock()
    return ok, step, h, w


def alloc_bytes(fn, n=20):
    # Bytes allocated per call (GC disabled so nothing is freed in between).
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        fn()
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) // n


def main(n=2000):
    ok, step, h, w = hot_path(n)
    dec = m.Decoder(bufsize=256)
    tmp = bytearray(128)
    k = x.encode_publish(tmp, C2D_PREFIX + b"a=1", b'{"cmd":"on"}', qos=1, pid=7)
    inbound = bytes(tmp[:k])
    buf = bytearray(512)
    pkt = m.Packet()

    def eager():
        x.feed(dec, inbound)
        dec.next()

    def lazy_then_materialise():
        x.feed(dec, inbound)
        p = dec.next(pkt)
        p.topic  # noqa: B018
        p.payload  # noqa: B018

    def str_topic():
        m.encode_publish_header(buf, TOPIC.decode(), 50, 1, 1)

    print(
        json.dumps(
            {
                "iterations": n,
                "module_file": getattr(m, "__file__", ""),
                "locked_ok": ok,
                "stopped_at": step,
                "header_len": h,
                "packet_len": w,
                "inbound_len": len(inbound),
                "bytes_per_eager_decode": alloc_bytes(eager),
                "bytes_per_lazy_materialise": alloc_bytes(lazy_then_materialise),
                "bytes_per_header_with_str_topic": alloc_bytes(str_topic),
            }
        )
    )
