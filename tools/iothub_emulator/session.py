"""One MQTT client connection on the server side, independent of what the server is (IoT Hub now, DPS
later): the read loop, CONNECT timeout, keep-alive timeout, serialized writes and the close reason.

The service object decides everything IoT Hub (or DPS) specific:
    service.on_connect(link, pkt) -> (return_code, session_present)
    service.on_packet(link, pkt)        PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE (may raise Violation)
    service.on_close(link, reason, graceful)
    service.deadline(link) -> wall-clock time (service clock) at which to close, or None
    service.event(name, event, detail), service.clock(), service.faults
"""

import socket
import threading
import time

from . import mqtt

CONNECT_TIMEOUT_S = 30.0  # MQTT 5 preview doc: CONNECT must arrive within 30 s of the handshake
KEEPALIVE_CAP_S = 1767.0  # the hub's idle timeout is capped at 1767 s (§2.3)
POLL_S = 0.25  # upper bound on one blocking read, so expiry and shutdown are noticed promptly
MAX_PACKET = 256 * 1024 + 16 * 1024  # 256 KB D2C body plus room for the topic and property bag


class Violation(Exception):
    """The client did something the server answers by closing the connection."""


class Link:
    """Server side of one client connection."""

    def __init__(self, conn, service):
        self.conn = conn
        self.service = service
        self.name = None  # identity name once CONNECT arrived (device id or "device/module")
        self.state = None  # service-specific per-connection state
        self.close_reason = None
        self.closed = False
        self.connected = False  # CONNACK 0 sent
        self.keepalive = 0
        self.last_rx = time.monotonic()
        self._send_lock = threading.Lock()
        self._pid_lock = threading.Lock()
        self._next_pid = 0
        self.in_use_pids = set()

    @property
    def info(self):
        return getattr(self.conn, "info", None)

    def next_packet_id(self):
        with self._pid_lock:
            for _ in range(65535):
                self._next_pid = self._next_pid % 65535 + 1
                if self._next_pid not in self.in_use_pids:
                    self.in_use_pids.add(self._next_pid)
                    return self._next_pid
        raise Violation("no free packet identifier (65535 messages in flight)")

    def send(self, data, force=False):
        """Write one whole packet (one sendall). Returns False if not sent (stalled or closed)."""
        if self.closed or (self.service.faults.stall and not force):
            return False
        with self._send_lock:
            try:
                self.conn.sendall(data)
                return True
            except OSError as e:
                self.kick("send failed: %s" % e)
                return False

    def kick(self, reason):
        """Close from any thread; the first reason given is the one reported."""
        if self.close_reason is None:
            self.close_reason = reason
        self.closed = True
        try:
            self.conn.abort() if hasattr(self.conn, "abort") else self.conn.close()
        except OSError:
            pass

    # ---- the read loop (runs in the endpoint's per-connection thread) -----------------------

    def run(self):
        graceful = False
        try:
            graceful = self._serve()
        except mqtt.MQTTError as e:
            self.close_reason = self.close_reason or "malformed packet: %s" % e
        except Violation as e:
            self.close_reason = self.close_reason or str(e)
        except EOFError:
            info = self.info
            why = getattr(info, "close_reason", None) or "closed by client"
            self.close_reason = self.close_reason or "%s (no DISCONNECT)" % why
        except OSError as e:
            self.close_reason = self.close_reason or "connection error: %s" % e
        finally:
            self.closed = True
            try:
                self.conn.close()
            except OSError:
                pass
            try:
                self.service.on_close(self, self.close_reason or "closed", graceful)
            except Exception as e:  # never let a bookkeeping bug kill the endpoint thread silently
                self.service.event(self.name, "error", "on_close failed: %r" % e)

    def _recv(self, timeout):
        try:
            data = self.conn.recv(65536, timeout=timeout)
        except (socket.timeout, TimeoutError):
            return None
        if not data:
            raise EOFError()
        self.last_rx = time.monotonic()
        return data

    def _serve(self):
        reader = mqtt.Reader(MAX_PACKET)
        start = time.monotonic()
        pending = []
        # 1. CONNECT, within CONNECT_TIMEOUT_S.
        while not pending:
            left = CONNECT_TIMEOUT_S - (time.monotonic() - start)
            if left <= 0 or self.closed:
                raise Violation(self.close_reason or "no CONNECT within %.0f s" % CONNECT_TIMEOUT_S)
            data = self._recv(min(left, POLL_S))
            if data:
                pending = reader.feed(data)
        first = pending.pop(0)
        if first.type != mqtt.CONNECT:
            raise Violation("first packet was %s, not CONNECT" % first.name)
        if first.unsupported:
            self.service.event(None, "connack", 1)
            self.send(mqtt.connack(False, 1))
            raise Violation("unsupported protocol %r level %d" % (first.protocol, first.level))
        self.keepalive = min(first.keepalive, KEEPALIVE_CAP_S / 1.5)
        # The send lock is held from the service's decision until CONNACK is written, so nothing the
        # service API sends meanwhile (C2D to a restored session, ...) can overtake the CONNACK, and
        # `connected` is already true when the client reads it.
        with self._send_lock:
            rc, session_present = self.service.on_connect(self, first)
            self.connected = rc == 0
            if not self.service.faults.stall:
                self.conn.sendall(mqtt.connack(session_present and rc == 0, rc))
        if rc != 0:
            raise Violation("CONNECT refused with CONNACK %d" % rc)
        self.service.after_connack(self)
        # 2. Packets until DISCONNECT, close, keep-alive timeout or service deadline.
        while True:
            for pkt in pending:
                if self.service.faults.stall:
                    continue
                if pkt.type == mqtt.DISCONNECT:
                    self.close_reason = self.close_reason or "DISCONNECT from client"
                    return True
                if pkt.type == mqtt.PINGREQ:
                    self.send(mqtt.pingresp())
                elif pkt.type == mqtt.CONNECT:
                    raise Violation("second CONNECT on one connection")  # §3.1.0
                elif pkt.type in (mqtt.PUBREC, mqtt.PUBREL, mqtt.PUBCOMP):
                    raise Violation("%s: IoT Hub does not support QoS 2" % pkt.name)
                else:
                    self.service.on_packet(self, pkt)
            pending = []
            if self.closed:
                raise Violation(self.close_reason or "closed")
            wait = POLL_S
            if self.keepalive:
                left = self.keepalive * 1.5 - (time.monotonic() - self.last_rx)
                if left <= 0:
                    raise Violation("keep-alive timeout: nothing for 1.5 x %d s" % self.keepalive)
                wait = min(wait, left)
            deadline = self.service.deadline(self)
            if deadline is not None:
                left = deadline - self.service.clock()
                if left <= 0:
                    raise Violation("SAS token expired")
                wait = min(wait, left)
            data = self._recv(max(wait, 0.01))
            if data:
                pending = reader.feed(data)
