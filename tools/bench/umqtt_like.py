# Baseline for tools/bench/bench_ram.py: a minimal MQTT 3.1.1 client that works the way
# micropython-lib's umqtt.simple works -- same constructor, blocking reads, one write per
# field -- written here from the MQTT 3.1.1 packet layout (OASIS spec, section 3), not
# copied. It is what a device gets from "umqtt.simple plus a TLS context", the yardstick the
# iothub client's RAM and CPU figures are compared with; deliberately not optimised beyond
# what umqtt.simple does. MicroPython only (stream write(buf, n)).
#
#   c = MQTTClient(client_id, server, port, user, password, keepalive=240, ssl=ctx)
#   c.connect()
#   c.publish(topic, msg, qos=1)   # returns once the PUBACK for it is in
#   c.disconnect()
import socket
import struct

# TCP_NODELAY where the socket module has it, so that the five small writes of a PUBLISH are
# not held back by Nagle's algorithm. The unix port's socket module lacks both names; the bench
# (device_ram_bench.py) sets them to Linux's numbers there.
TCP_NODELAY = getattr(socket, "TCP_NODELAY", None)
IPPROTO_TCP = getattr(socket, "IPPROTO_TCP", None)


class MQTTException(Exception):
    pass


class MQTTClient:
    def __init__(
        self,
        client_id,
        server,
        port=0,
        user=None,
        password=None,
        keepalive=0,
        ssl=None,
        ssl_params={},  # noqa: B006 - umqtt.simple's signature; never modified
    ):
        self.client_id = client_id
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = user
        self.pswd = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = ssl_params
        self.sock = None
        self.pid = 0
        self.cb = None

    def set_callback(self, f):
        self.cb = f

    # ---- wire helpers -------------------------------------------------------------------

    def _write_str(self, s):
        # An MQTT string: two-byte big-endian length, then the bytes (two writes).
        self.sock.write(struct.pack("!H", len(s)))
        self.sock.write(s)

    def _read_len(self):
        # Remaining length: 7 bits per byte, least significant first, bit 7 = more follows.
        n = 0
        shift = 0
        while True:
            b = self.sock.read(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    # ---- packets ------------------------------------------------------------------------

    def connect(self, clean_session=True, timeout=None):
        raw = socket.socket()
        if TCP_NODELAY is not None and IPPROTO_TCP is not None:
            raw.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        raw.settimeout(timeout)
        raw.connect(socket.getaddrinfo(self.server, self.port)[0][-1])
        if self.ssl:
            params = {"server_hostname": self.server}
            params.update(self.ssl_params)
            raw = self.ssl.wrap_socket(raw, **params)
        self.sock = raw

        # Variable header: protocol name "MQTT", level 4, connect flags, keep alive.
        flags = 0x02 if clean_session else 0
        size = 10 + 2 + len(self.client_id)
        if self.user is not None:
            flags |= 0x80
            size += 2 + len(self.user)
            if self.pswd is not None:
                flags |= 0x40
                size += 2 + len(self.pswd)
        hdr = bytearray(5)
        self.sock.write(hdr, self._fixed_header(hdr, 0x10, size))
        self.sock.write(
            b"\x00\x04MQTT\x04" + bytes((flags, self.keepalive >> 8, self.keepalive & 0xFF))
        )
        self._write_str(self.client_id)
        if self.user is not None:
            self._write_str(self.user)
            if self.pswd is not None:
                self._write_str(self.pswd)
        ack = self.sock.read(4)
        if len(ack) != 4 or ack[0] != 0x20 or ack[1] != 0x02:
            raise MQTTException("bad CONNACK %r" % (ack,))
        if ack[3]:
            raise MQTTException(ack[3])
        return ack[2] & 1  # session present

    @staticmethod
    def _fixed_header(hdr, first, size):
        # Packet type and flags, then the remaining length (1..4 bytes) into hdr (5 bytes);
        # returns how many bytes it took.
        hdr[0] = first
        i = 1
        while size > 0x7F:
            hdr[i] = (size & 0x7F) | 0x80
            size >>= 7
            i += 1
        hdr[i] = size
        return i + 1

    def publish(self, topic, msg, retain=False, qos=0):
        size = 2 + len(topic) + len(msg)
        if qos:
            size += 2
        # Five writes for QoS 1: fixed header, topic length, topic, packet id, payload.
        # (stream write(buf, n): the first n bytes; the header buffer then carries the id)
        hdr = bytearray(5)
        self.sock.write(hdr, self._fixed_header(hdr, 0x30 | qos << 1 | retain, size))
        self._write_str(topic)
        if qos:
            self.pid = self.pid % 0xFFFF + 1
            pid = self.pid
            hdr[0] = pid >> 8
            hdr[1] = pid & 0xFF
            self.sock.write(hdr, 2)
        self.sock.write(msg)
        if qos == 1:
            while True:
                if self.wait_msg() == 0x40:
                    n = self.sock.read(1)[0]
                    got = self.sock.read(2)
                    if n != 2:
                        raise MQTTException("bad PUBACK length %d" % n)
                    if got[0] << 8 | got[1] == pid:
                        return

    def wait_msg(self):
        # Read one packet. PUBLISH goes to the callback (acknowledged when QoS 1); for a
        # PUBACK the type byte is returned with the rest left unread for the caller.
        op = self.sock.read(1)
        if not op:
            raise OSError(-1)  # closed by the server
        op = op[0]
        if op == 0xD0:  # PINGRESP
            self.sock.read(1)
            return None
        if op & 0xF0 != 0x30:
            return op
        size = self._read_len()
        tlen = struct.unpack("!H", self.sock.read(2))[0]
        topic = self.sock.read(tlen)
        size -= 2 + tlen
        if op & 0x06:
            pid = struct.unpack("!H", self.sock.read(2))[0]
            size -= 2
        msg = self.sock.read(size)
        if self.cb:
            self.cb(topic, msg)
        if op & 0x06 == 2:
            self.sock.write(b"\x40\x02" + struct.pack("!H", pid))
        return op

    def ping(self):
        self.sock.write(b"\xc0\x00")

    def disconnect(self):
        self.sock.write(b"\xe0\x00")
        self.sock.close()
        self.sock = None
