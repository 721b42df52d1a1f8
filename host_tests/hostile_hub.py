"""A hostile IoT Hub for the tests: a TLS + MQTT 3.1.1 server on 127.0.0.1 that misbehaves.

Real TLS (CPython `ssl`, the test PKI's ECC hub certificate), a small MQTT server behind
it, and a `Behaviour` that decides what the hub does with each connection. The base
`Behaviour` is a well-behaved hub (CONNACK 0, SUBACK with one code per filter, PUBACK for
telemetry, PINGRESP, twin GET/PATCH answers, one desired patch after each subscription);
a scenario subclasses it and overrides the step it wants to break.

    hub = HostileHub(pki, SlowHandshake()).start()
    ... the device connects to 127.0.0.1:hub.port ...
    hub.heal()  # from now on every connection is well-behaved; open ones are closed
    hub.telemetry_payloads(), hub.device_pubacks, hub.events ...; hub.stop()

The behaviour is chosen when a connection is accepted and kept for its lifetime, so
`heal()` closes every open connection: the device reconnects to the well-behaved hub.
Every connection runs in its own thread; all writes to a connection happen in that thread.
"""

import socket
import ssl
import threading
import time

# MQTT packet types (upper nibble of the first byte)
CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

ECC_SUITES = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
HANDSHAKE_TIMEOUT = 10.0
IDLE_TICK = 0.2  # seconds between Behaviour.on_idle calls while a connection is quiet

# The well-behaved hub's twin: GET answers version 2, and after each subscription to the
# desired topic it pushes patch version 3 (a device must deliver it exactly once).
TWIN_DOC = b'{"desired":{"$version":2,"x":2},"reported":{"$version":1}}'
DESIRED_PATCH_VERSION = 3
DESIRED_PATCH = b'{"x":3,"$version":3}'


# ---- encoding -----------------------------------------------------------------------------


def remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def packet(first_byte, body=b""):
    return bytes([first_byte]) + remaining_length(len(body)) + body


def mqtt_str(s):
    if isinstance(s, str):
        s = s.encode()
    return len(s).to_bytes(2, "big") + s


def connack(rc=0, session_present=0):
    return packet(0x20, bytes([session_present, rc]))


def publish(topic, payload=b"", qos=0, pid=1, dup=False, flags=None):
    """A PUBLISH from the hub. `flags` overrides the low nibble (QoS 3, ...)."""
    if flags is None:
        flags = (qos << 1) | (0x08 if dup else 0)
    body = mqtt_str(topic)
    if (flags >> 1) & 3:
        body += pid.to_bytes(2, "big")
    return packet(0x30 | flags, body + payload)


def puback(pid):
    return packet(0x40, pid.to_bytes(2, "big"))


def suback(pid, codes):
    return packet(0x90, pid.to_bytes(2, "big") + bytes(codes))


PINGRESP_PKT = packet(0xD0)


def c2d_topic(device_id, props=""):
    return "devices/%s/messages/devicebound/%s" % (device_id, props)


# ---- one connection -----------------------------------------------------------------------


class Conn:
    """The plaintext side of one connection (TLS, or the raw socket for raw behaviours)."""

    def __init__(self, hub, sock, raw):
        self.hub = hub
        self.sock = sock
        self.raw = raw
        self.buf = bytearray()
        self.closed = False
        self.device_id = None
        self.subscribed = []
        self.state = {}  # per-connection scratch for behaviours

    def send(self, data):
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.close()
            return False

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return None
        except OSError:
            data = b""
        if not data:
            self.close()
            return b""
        self.buf += data
        return data

    def read_packet(self, timeout=IDLE_TICK):
        """(type, flags, body), None when nothing complete arrived in time, or raises EOFError."""
        end = time.monotonic() + timeout
        while True:
            pkt = self._parse()
            if pkt is not None:
                return pkt
            if self.closed:
                raise EOFError
            left = end - time.monotonic()
            if left <= 0:
                return None
            if self._fill(left) == b"":
                raise EOFError

    def _parse(self):
        b = self.buf
        if len(b) < 2:
            return None
        n, mult, i = 0, 1, 1
        while True:
            if i >= len(b):
                return None
            n += (b[i] & 0x7F) * mult
            mult *= 128
            i += 1
            if not b[i - 1] & 0x80:
                break
            if i > 4:
                raise EOFError  # a malformed packet from the device: drop the link
        if len(b) < i + n:
            return None
        first = b[0]
        body = bytes(b[i : i + n])
        del b[: i + n]
        return first >> 4, first & 0x0F, body


# ---- behaviours ---------------------------------------------------------------------------


class Behaviour:
    """A well-behaved hub. Scenarios override one or more steps to misbehave."""

    name = "well-behaved"

    def raw(self, hub, sock):
        """Called with the accepted TCP socket before TLS. Return True when handled."""
        return False

    def on_connect(self, hub, c, body):
        """CONNECT received. Return False to end the connection."""
        return c.send(connack(0))

    def after_connack(self, hub, c):
        pass

    def on_idle(self, hub, c):
        pass

    def on_subscribe(self, hub, c, pid, filters):
        c.send(suback(pid, [1] * len(filters)))
        if any(f.startswith("$iothub/twin/PATCH/properties/desired") for f in filters):
            self.push_desired(hub, c)

    def push_desired(self, hub, c):
        topic = "$iothub/twin/PATCH/properties/desired/?$version=%d" % DESIRED_PATCH_VERSION
        c.send(publish(topic, DESIRED_PATCH))

    def on_telemetry(self, hub, c, topic, payload, qos, pid):
        hub.record_telemetry(payload)
        if qos:
            self.ack_telemetry(hub, c, pid)

    def ack_telemetry(self, hub, c, pid):
        c.send(puback(pid))

    def twin_get_body(self, hub, c):
        return 200, TWIN_DOC

    def on_twin_get(self, hub, c, rid):
        status, body = self.twin_get_body(hub, c)
        if status is not None:
            c.send(publish("$iothub/twin/res/%d/?$rid=%s" % (status, rid), body))

    def on_twin_patch(self, hub, c, rid, payload):
        c.send(publish("$iothub/twin/res/204/?$rid=%s&$version=5" % rid))

    def on_pingreq(self, hub, c):
        c.send(PINGRESP_PKT)

    def on_puback(self, hub, c, pid):
        hub.device_pubacks.append(pid)


class HostileHub:
    def __init__(self, pki, behaviour=None, device_id="hostile-dev"):
        self.behaviour = behaviour or Behaviour()
        self.normal = Behaviour()
        self.device_id = device_id
        self.hostname = pki.hub_hostname
        self.root_der = pki.root_der("ecc")
        chain, key = pki.server_credentials("ecc")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ECC_SUITES)
        ctx.load_cert_chain(chain, key)
        self.ctx = ctx
        self.healed = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.conns = set()
        self.threads = []
        self.telemetry = []  # (phase, payload bytes); phase "hostile" or "healed"
        self.device_pubacks = []  # packet ids the device acknowledged (its PUBACKs)
        self.events = []  # (monotonic time, phase, what, detail)
        self.changed = threading.Condition(self.lock)
        self._lsock = None
        self._inner = None  # a plain TLS listener behind the raw port (proxy behaviours)
        self.port = None

    # -- lifecycle --
    def start(self):
        self._lsock = self._listen()
        self.port = self._lsock.getsockname()[1]
        self._spawn(self._accept_loop, self._lsock, self._handle)
        return self

    def _listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        return s

    def adopt(self, sock):
        """Track a raw socket a behaviour handles itself: heal() and stop() close it."""
        c = Conn(self, sock, sock)
        with self.lock:
            self.conns.add(c)
        return c

    def inner_port(self):
        """Port of a second, well-behaved TLS listener (the target of a relaying proxy)."""
        with self.lock:
            if self._inner is None:
                self._inner = self._listen()
                self._spawn(self._accept_loop, self._inner, self._handle_inner)
            return self._inner.getsockname()[1]

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def stop(self):
        self.stopped.set()
        for s in (self._lsock, self._inner):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.close_all()

    def heal(self):
        """Behave from now on; close what is open so the device reconnects."""
        self.healed.set()
        self.event("heal")
        self.close_all()

    def close_all(self):
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()

    @property
    def phase(self):
        return "healed" if self.healed.is_set() else "hostile"

    # -- records --
    def event(self, what, detail=None):
        with self.changed:
            self.events.append((time.monotonic(), self.phase, what, detail))
            self.changed.notify_all()

    def record_telemetry(self, payload):
        with self.changed:
            self.telemetry.append((self.phase, bytes(payload)))
            self.changed.notify_all()

    def telemetry_payloads(self, phase=None):
        with self.lock:
            return [p for ph, p in self.telemetry if phase is None or ph == phase]

    def count(self, what, phase=None):
        with self.lock:
            return sum(1 for e in self.events if e[2] == what and (phase is None or e[1] == phase))

    def wait_for(self, predicate, timeout):
        """Wait until predicate() (called with the lock held) is true; returns it."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    # -- connections --
    def _accept_loop(self, lsock, handler):
        while not self.stopped.is_set():
            try:
                sock, _ = lsock.accept()
            except OSError:
                return
            self._spawn(handler, sock)

    def _handle(self, sock):
        b = self.normal if self.healed.is_set() else self.behaviour
        self.event("accept", b.name)
        try:
            if b.raw(self, sock):
                return
        except OSError:
            pass
        finally:
            if self.stopped.is_set():
                sock.close()
        self._serve_tls(sock, b)

    def _handle_inner(self, sock):
        self._serve_tls(sock, self.normal)

    def _serve_tls(self, sock, b):
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.ctx.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError) as e:
            self.event("handshake failed", str(e))
            sock.close()
            return
        c = Conn(self, tls, sock)
        with self.lock:
            self.conns.add(c)
        if self.stopped.is_set() or (b is not self.normal and self.healed.is_set()):
            c.close()  # healed (or stopped) during the handshake: heal() missed this one
        try:
            self._mqtt(c, b)
        except EOFError:
            pass
        except OSError as e:
            self.event("error", str(e))
        finally:
            c.close()
            with self.lock:
                self.conns.discard(c)
            self.event("closed")

    def _mqtt(self, c, b):
        end = time.monotonic() + HANDSHAKE_TIMEOUT
        pkt = None
        while pkt is None:
            if time.monotonic() > end:
                return
            pkt = c.read_packet()
        t, _, body = pkt
        if t != CONNECT:
            self.event("first packet not CONNECT", t)
            return
        c.device_id = self.device_id
        self.event("connect")
        if b.on_connect(self, c, body) is False:
            return
        b.after_connack(self, c)
        while not c.closed:
            pkt = c.read_packet()
            if pkt is None:
                b.on_idle(self, c)
                continue
            self._dispatch(c, b, *pkt)

    def _dispatch(self, c, b, t, flags, body):
        if t == PUBLISH:
            qos = (flags >> 1) & 3
            n = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + n].decode("utf-8", "replace")
            i = 2 + n
            pid = 0
            if qos:
                pid = int.from_bytes(body[i : i + 2], "big")
                i += 2
            payload = body[i:]
            if topic.startswith("$iothub/twin/GET/"):
                b.on_twin_get(self, c, _rid(topic))
            elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
                b.on_twin_patch(self, c, _rid(topic), payload)
            elif topic.startswith("$iothub/methods/res/"):
                self.event("method response", topic)
            elif "/messages/events/" in topic or topic.endswith("/messages/events"):
                b.on_telemetry(self, c, topic, payload, qos, pid)
            else:
                self.event("unexpected publish", topic)
        elif t == PUBACK:
            b.on_puback(self, c, int.from_bytes(body[:2], "big"))
            self.event("puback", int.from_bytes(body[:2], "big"))
        elif t == SUBSCRIBE:
            pid = int.from_bytes(body[:2], "big")
            filters = []
            i = 2
            while i < len(body):
                n = int.from_bytes(body[i : i + 2], "big")
                filters.append(body[i + 2 : i + 2 + n].decode())
                i += 3 + n
            c.subscribed += filters
            self.event("subscribe", filters)
            b.on_subscribe(self, c, pid, filters)
        elif t == UNSUBSCRIBE:
            c.send(packet(0xB0, body[:2]))
        elif t == PINGREQ:
            b.on_pingreq(self, c)
        elif t == DISCONNECT:
            self.event("disconnect")
            c.close()


def _rid(topic):
    q = topic.split("?", 1)[1] if "?" in topic else ""
    for part in q.split("&"):
        if part.startswith("$rid="):
            return part[5:]
    return "0"


def relay(src, dst, delay=0.0, stop=None):
    """Copy src to dst until either closes; with delay, one byte every `delay` s."""
    try:
        while stop is None or not stop.is_set():
            data = src.recv(1 if delay else 65536)
            if not data:
                break
            if delay and stop is not None and stop.wait(delay):
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
