# One MQTT 3.1.1 session over one TLS link: CONNECT/CONNACK, packet ids, SUBSCRIBE/SUBACK,
# keepalive pings with dead-link detection (the rule is lifecycle.keepalive(); the session
# sends the PINGREQ and reads), and bounded waits. Shared by DeviceClient and
# the provisioning client; IoT Hub semantics live in those, not here.
#
# Memory: one transmit buffer (an MQTT packet that fits is written with one write, so one
# TLS record), at its full size from the first packet that needs it (tx_full); received
# bytes are read straight into the decoder's buffer.
from . import mqtt
from .clock import ticks_diff, ticks_ms
from .errors import ConnectionLost, IoTHubError, Timeout, explained
from .lifecycle import Lifecycle
from .transport import Link

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_PING = const(2)  # lifecycle's actions
_DEAD = const(3)
_CONTROL = const(8)  # PUBACK, PINGREQ, DISCONNECT: all a client without handlers writes from tx


class Session:
    def __init__(self, txbuf=1024, max_packet=32768, rxbuf=64):
        self.link = Link()
        # The transmit buffer holds the control packets' few bytes until a packet built in
        # it needs more (a QoS 0 PUBLISH, SUBSCRIBE): tx_full() makes it txbuf bytes then,
        # once. A client that sends QoS 1 telemetry only (encoded in its outbox ring) and
        # has no handlers never needs those bytes.
        self.tx = bytearray(_CONTROL)
        self.txbuf = txbuf
        # The decoder's base buffer: rxbuf bytes (64: the acknowledgements a client
        # without handlers gets); larger packets get a buffer of their size while read.
        self.decoder = mqtt.Decoder(max_packet, rxbuf)
        self._pkt = mqtt.Packet()  # refilled for every received packet (no allocation)
        # The lifecycle state of the link's owner; here for the keepalive rule (the time of
        # the last write, the unanswered PINGREQ).
        self.lc = Lifecycle(240, 30000)
        self._pid = 0
        self._subacks = {}
        self._connack = None
        # The link's owner (a client), set by it; None: packets are only acknowledged. Its
        # methods (one attribute, no bound methods stored: 128 B less on a 64-bit port):
        #   _on_publish(packet): a PUBLISH (QoS 1 is acknowledged after it returns), or one
        #     the decoder dropped (.type mqtt.DROPPED, acknowledged before)
        #   _on_puback(pid)
        #   _pid_in_use(pid) -> bool (ids of queued messages)
        self.owner = None

    def close(self, clean=False):
        if clean and self.link.is_open:
            try:
                self.write(mqtt._short(self.tx, 0xE0, 0, "DISCONNECT"))  # (rare: no encoder)
            except IoTHubError:
                pass
        self.link.close()

    def next_pid(self):
        o = self.owner
        for _ in range(65535):
            self._pid = self._pid % 65535 + 1
            pid = self._pid
            if pid not in self._subacks and not (o is not None and o._pid_in_use(pid)):
                return pid
        raise explained("reports", "failure", 4, ())  # (never in practice: not resident)

    def write(self, n, payload=None):
        """Send tx[:n], then payload: copied behind it when it fits (one write, one TLS
        record per MQTT packet), else written from the caller's buffer."""
        tx = self.tx
        link = self.link
        if payload is None:
            link.write(tx, 0, n)
        elif n + len(payload) <= len(tx):
            tx[n : n + len(payload)] = payload
            link.write(tx, 0, n + len(payload))
        else:
            link.write(tx, 0, n)
            link.write(payload)
        self.lc.last_tx = ticks_ms()

    def write_from(self, buf, off, n):
        """Send a packet encoded elsewhere (the outbox ring) with one write."""
        self.link.write(buf, off, n)
        self.lc.last_tx = ticks_ms()

    def tx_full(self):
        """The transmit buffer at its full size (txbuf bytes), made the first time."""
        if len(self.tx) < self.txbuf:
            self.tx = bytearray(self.txbuf)
        return self.tx

    def publish(self, topic, payload, qos=0, pid=0, dup=False):
        tx = self.tx_full()
        self.write(mqtt.encode_publish_header(tx, topic, len(payload), qos, pid, dup), payload)

    def wait(self, done, deadline, what):
        while not done():
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                raise Timeout("no %s from the hub in time" % what)
            self.pump(min(left, 1000))

    def pump(self, timeout_ms):
        """Send PINGREQ when due, then read for up to timeout_ms and dispatch packets."""
        lc = self.lc
        now = ticks_ms()
        a = lc.keepalive(now)
        if a == _PING:
            self.write(mqtt._short(self.tx, 0xC0, 0, "PINGREQ"))
            lc.ping_at = now
            a = lc.keepalive(now)
        if a == _DEAD:
            self.link.close()
            raise ConnectionLost(lc.why)
        timeout_ms = min(timeout_ms, lc.wait)
        dec = self.decoder
        n = self.link.read_into(dec._buf, dec._end, dec.room(), timeout_ms)
        if n:
            dec.filled(n)
            pkt = self._pkt
            # .topic/.payload of a refilled packet are read from the decoder's buffer: the
            # handlers take them (or copies) before the next feed().
            while dec.next(pkt) is not None:
                self._dispatch(pkt)

    def _dispatch(self, pkt):
        """Act on one packet. The owner's _on_publish must read .topic/.payload before
        returning."""
        t = pkt.type
        o = self.owner
        if self._connack is None and t != mqtt.CONNACK:
            raise explained("mqtterr", "error", 29, (t,))  # (texts in mqtterr)
        if t == mqtt.PUBLISH:
            if o is not None:
                o._on_publish(pkt)
            if pkt.qos == 1:  # (its packet id is never 0: the decoder refuses that)
                self.write(mqtt._short(self.tx, 0x40, pkt.pid, "PUBACK"))
        elif t == mqtt.PUBACK:
            if o is not None:
                o._on_puback(pkt.pid)
        elif t == mqtt.DROPPED:
            # Acknowledged all the same: unacknowledged, the hub would send it forever.
            if pkt.flags & 6 and pkt.pid:
                self.write(mqtt._short(self.tx, 0x40, pkt.pid, "PUBACK"))
            if o is not None:
                o._on_publish(pkt)
        elif t == mqtt.SUBACK:
            if pkt.pid in self._subacks:
                self._subacks[pkt.pid] = pkt.granted
        elif t == mqtt.PINGRESP:
            self.lc.ping_at = None
        elif t == mqtt.CONNACK:
            if self._connack is not None:
                raise explained("mqtterr", "error", 30, (t,))
            self._connack = (pkt.session_present, pkt.rc)
        elif t != mqtt.UNSUBACK:
            raise explained("mqtterr", "error", 31, (t,))
