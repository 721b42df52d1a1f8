# A tiny device-side MQTT loop for the interop test: our codec (iothub.mqtt) over a plain
# socket or a tls.SSLContext, against a real broker. Not the SDK client: just enough I/O to
# drive the codec. Every packet goes out through Seam.write() exactly once.
#
# usage: micropython mqtt_loop.py HOST PORT PREFIX [CA_DER_FILE]   (CA given -> TLS)
# Prints one JSON line: what was sent (one entry per write at the seam) and received.

import json
import select
import socket
import sys
import time

import mqtt_extra as x

import iothub.mqtt as m
import iothub.mqttconn as mc

TIMEOUT_MS = 5000


class Seam:
    """The socket seam: records each write() call, and how many socket writes it took."""

    def __init__(self, sock):
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN | select.POLLOUT)
        self.writes = []  # (bytes written in this one call, socket write calls)

    def _wait(self, event, deadline):
        self.poller.modify(self.sock, event)
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0 or not self.poller.poll(left):
            raise OSError("timed out waiting for the socket")

    def write(self, data):
        mv = memoryview(data)
        n = len(mv)
        off = 0
        calls = 0
        deadline = time.ticks_add(time.ticks_ms(), TIMEOUT_MS)
        while off < n:
            k = self.sock.write(mv[off:])
            calls += 1
            if k is None:  # would block
                self._wait(select.POLLOUT, deadline)
                continue
            off += k
        self.writes.append((bytes(mv), calls))

    def readinto(self, buf, deadline):
        while True:
            n = self.sock.readinto(buf)
            if n is not None:
                return n
            self._wait(select.POLLIN, deadline)


class Loop:
    def __init__(self, sock):
        self.seam = Seam(sock)
        self.wbuf = bytearray(32768)
        self.rbuf = bytearray(1024)
        self.dec = m.Decoder(bufsize=1024)
        self.received = []

    def send(self, n):
        self.seam.write(memoryview(self.wbuf)[:n])

    def recv(self):
        deadline = time.ticks_add(time.ticks_ms(), TIMEOUT_MS)
        while True:
            p = self.dec.next()
            if p is not None:
                self.received.append(summary(p))
                return p
            n = self.seam.readinto(self.rbuf, deadline)
            if n == 0:
                raise OSError("connection closed by the broker")
            x.feed(self.dec, memoryview(self.rbuf)[:n])

    def expect(self, want_types):
        # Collect packets until each wanted type arrived once (order between them free).
        got = {}
        pending = list(want_types)
        while pending:
            p = self.recv()
            if p.type not in pending:
                raise AssertionError("unexpected %s, waiting for %s" % (summary(p), pending))
            pending.remove(p.type)
            got.setdefault(p.type, []).append(p)
        return got


def summary(p):
    if p.type == m.PUBLISH:
        return {
            "type": "PUBLISH",
            "topic": p.topic,
            "qos": p.qos,
            "pid": p.pid,
            "retain": x.retain(p),
            "dup": x.dup(p),
            "len": len(p.payload),
            "head": p.payload[:32].decode() if p.payload[:1] != b"\x00" else "",
        }
    if p.type == m.CONNACK:
        return {"type": "CONNACK", "rc": p.rc, "sp": p.session_present}
    if p.type == m.SUBACK:
        return {"type": "SUBACK", "pid": p.pid, "granted": p.granted}
    return {"type": x.packet_name(p.type), "pid": p.pid}


def open_socket(host, port, ca_der):
    addr = socket.getaddrinfo(host, port)[0][-1]
    s = socket.socket()
    s.connect(addr)
    if ca_der is not None:
        import tls

        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(ca_der)  # DER; tls.SSLContext takes it positionally
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.setblocking(False)
    return s


def session(host, port, prefix, ca_der):
    sock = open_socket(host, port, ca_der)
    lp = Loop(sock)
    w = lp.wbuf
    # The will must NOT fire: this session ends with DISCONNECT.
    lp.send(
        x.encode_connect_will(
            w,
            prefix + "-dev",
            (prefix + "/will-clean", b"must not appear", 1, False),
            keepalive=30,
        )
    )
    ack = lp.expect([m.CONNACK])[m.CONNACK][0]
    assert ack.rc == 0, "CONNACK rc %d" % ack.rc

    lp.send(mc.encode_subscribe(w, 1, [(prefix + "/in/#", 1), (prefix + "/echo", 0)]))
    # SUBACK, then the retained message the host published before we connected.
    got = lp.expect([m.SUBACK, m.PUBLISH])
    assert got[m.SUBACK][0].granted == [1, 0], got[m.SUBACK][0].granted
    ret = got[m.PUBLISH][0]
    assert x.retain(ret) and ret.topic == prefix + "/in/retained", summary(ret)
    if ret.qos:
        lp.send(x.encode_puback(w, ret.pid))

    # QoS 0 round trip.
    lp.send(x.encode_publish(w, prefix + "/echo", b"q0 round trip"))
    p = lp.expect([m.PUBLISH])[m.PUBLISH][0]
    assert (p.topic, p.qos, p.payload) == (prefix + "/echo", 0, b"q0 round trip")

    # QoS 1 round trips: PUBACK for ours, and the broker's delivery which we PUBACK.
    for pid, topic, payload in (
        (10, prefix + "/in/q1", b"q1 round trip"),
        (11, prefix + "/in/big", b"B" * 20000),
    ):
        lp.send(x.encode_publish(w, topic, payload, qos=1, pid=pid))
        got = lp.expect([m.PUBACK, m.PUBLISH])
        assert got[m.PUBACK][0].pid == pid
        d = got[m.PUBLISH][0]
        assert (d.topic, d.qos, d.payload) == (topic, 1, payload), summary(d)
        lp.send(x.encode_puback(w, d.pid))

    # Ping.
    lp.send(x.encode_pingreq(w))
    lp.expect([m.PINGRESP])

    # Unsubscribe; a later publish is not echoed (the PINGRESP after it is the barrier).
    lp.send(x.encode_unsubscribe(w, 12, [prefix + "/echo"]))
    assert lp.expect([m.UNSUBACK])[m.UNSUBACK][0].pid == 12
    lp.send(x.encode_publish(w, prefix + "/echo", b"after unsubscribe"))
    lp.send(x.encode_pingreq(w))
    lp.expect([m.PINGRESP])

    lp.send(x.encode_disconnect(w))
    sock.close()
    return lp


def will_session(host, port, prefix, ca_der):
    # A second connection that ends without DISCONNECT: the broker publishes the will.
    sock = open_socket(host, port, ca_der)
    lp = Loop(sock)
    lp.send(
        x.encode_connect_will(
            lp.wbuf,
            prefix + "-will",
            (prefix + "/will", "device gone \u2013 abnormally", 1, False),
            keepalive=30,
        )
    )
    assert lp.expect([m.CONNACK])[m.CONNACK][0].rc == 0
    sock.close()
    return lp


def main():
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ca_der = None
    if len(sys.argv) > 4:
        with open(sys.argv[4], "rb") as f:
            ca_der = f.read()
    lp = session(host, port, prefix, ca_der)
    lw = will_session(host, port, prefix, ca_der)
    sent = [[w.hex(), calls] for w, calls in lp.seam.writes + lw.seam.writes]
    print(json.dumps({"sent": sent, "received": lp.received + lw.received}))


main()
