"""MQTT over WebSockets on the emulator's side (RFC 6455 server, written independently of the
device's client so each checks the other).

IoT Hub and DPS accept `wss://{host}:443/$iothub/websocket` with subprotocol `mqtt`, then run
the same MQTT 3.1.1 as on 8883. Here a second TLSEndpoint (same PKI, policy and counters) gets
`Upgrader(handler)` as its handler: it reads the HTTP Upgrade request, checks it, answers 101 and
hands the service handler a `WSConn`, which has TLSConn's interface (recv/sendall/close/abort/
send_raw/info): the hub and DPS code runs unchanged over it.

What a WebSocket connection adds to its ConnInfo: `ws_request` (method, path, headers with
lower-case names), `ws_upgrade_bytes_in/out` (raw TCP bytes up to and including the 101),
`ws_frames_in/out`, `ws_control_in` [(opcode, payload)] of the control frames the client sent,
`ws_close` (code, reason) of a close frame from the client.
"""

import base64
import hashlib
import socket
import struct
import threading

PATH = "/$iothub/websocket"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 16384
MAX_FRAME = 1 << 20  # the hub's packets are at most 256 KB + topic; a bigger frame is refused
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(opcode, payload=b"", fin=True, mask=None, rsv=0):
    """One frame as bytes: unmasked (a server's) unless a 4-byte mask is given."""
    payload = bytes(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask is not None:
        head += bytes(mask)
        payload = unmask(payload, mask)
    return head + payload


def unmask(data, key):
    if not data:
        return b""
    k = (bytes(key) * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


class Violation(Exception):
    """The client broke RFC 6455; the connection is closed with `code`."""

    def __init__(self, code, text):
        super().__init__(text)
        self.code = code


def parse_frames(buf, max_frame=MAX_FRAME):
    """Complete frames at the start of buf (a bytearray, consumed): [(fin, opcode, payload)].
    Client frames must be masked (RFC 6455 section 5.1)."""
    out = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        if b0 & 0x70:
            raise Violation(1002, "reserved bits set")
        if not b1 & 0x80:
            raise Violation(1002, "unmasked frame from the client")
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack_from("!Q", buf, 2)[0]
            pos = 10
        if n > max_frame:
            raise Violation(1009, "frame of %d bytes" % n)
        if len(buf) < pos + 4 + n:
            break
        key = bytes(buf[pos : pos + 4])
        payload = unmask(bytes(buf[pos + 4 : pos + 4 + n]), key)
        del buf[: pos + 4 + n]
        out.append((bool(b0 & 0x80), b0 & 0x0F, payload))
    return out


def _http(status, reason, extra=""):
    return (
        "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n%s\r\n"
        % (status, reason, extra)
    ).encode()


class Upgrader:
    """The WebSocket endpoint's connection handler: upgrade, then handler(WSConn).

    reply: None, or fn(request_dict, accept_value) -> bytes sent instead of the proper 101 (for
    tests of clients facing bad answers); the connection is then closed."""

    def __init__(self, handler, path=PATH, timeout=10.0):
        self.handler = handler
        self.path = path
        self.timeout = timeout
        self.reply = None

    def __call__(self, conn):
        ws = self.accept(conn)
        if ws is not None:
            self.handler(ws)

    def accept(self, conn):
        info = conn.info
        head = bytearray()
        while b"\r\n\r\n" not in head:
            if len(head) > MAX_HEAD:
                conn.sendall(_http(431, "Request Header Fields Too Large"))
                info.close_reason = "websocket: request head too long"
                return None
            try:
                data = conn.recv(65536, timeout=self.timeout)
            except (socket.timeout, TimeoutError):
                info.close_reason = "websocket: no upgrade request in time"
                return None
            if not data:
                info.close_reason = "websocket: closed before the upgrade request"
                return None
            head += data
        end = head.index(b"\r\n\r\n")
        rest = bytes(head[end + 4 :])
        req, problem = self._parse(bytes(head[:end]))
        info.ws_request = req
        if problem is None and self.reply is None:
            want = [p.strip() for p in req["headers"].get("sec-websocket-protocol", "").split(",")]
            chosen = [p for p in want if p.lower() == "mqtt"]
            if not chosen:
                problem = (400, "Bad Request", "no 'mqtt' subprotocol offered")
        if problem is not None:
            status, reason, why = problem
            conn.sendall(_http(status, reason))
            info.close_reason = "websocket: %s" % why
            return None
        accept = accept_key(req["headers"]["sec-websocket-key"])
        if self.reply is not None:
            conn.sendall(self.reply(req, accept))
            info.close_reason = "websocket: test reply sent"
            return None
        conn.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n"
                % (accept, chosen[0])
            ).encode()
        )
        info.ws_upgrade_bytes_in = info.bytes_in
        info.ws_upgrade_bytes_out = info.bytes_out
        return WSConn(conn, rest)

    def _parse(self, head):
        try:
            lines = head.decode("ascii").split("\r\n")
        except UnicodeDecodeError:
            return {"headers": {}}, (400, "Bad Request", "request head is not ASCII")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                return {"headers": headers}, (400, "Bad Request", "malformed header line")
            headers[name.strip().lower()] = value.strip()
        req = {"request_line": lines[0], "headers": headers}
        if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
            return req, (400, "Bad Request", "not a GET HTTP/1.1 request: %r" % lines[0][:60])
        req["method"], req["target"] = parts[0], parts[1]
        req["path"] = parts[1].split("?", 1)[0]
        if req["path"] != self.path:
            return req, (404, "Not Found", "path %r is not %s" % (req["path"], self.path))
        if headers.get("upgrade", "").lower() != "websocket":
            return req, (400, "Bad Request", "no 'Upgrade: websocket'")
        if "upgrade" not in [t.strip().lower() for t in headers.get("connection", "").split(",")]:
            return req, (400, "Bad Request", "no 'Connection: Upgrade'")
        if headers.get("sec-websocket-version") != "13":
            return req, (426, "Upgrade Required", "Sec-WebSocket-Version is not 13")
        try:
            if len(base64.b64decode(headers.get("sec-websocket-key", ""), validate=True)) != 16:
                raise ValueError
        except ValueError:
            return req, (400, "Bad Request", "Sec-WebSocket-Key is not 16 bytes in base64")
        if "host" not in headers:
            return req, (400, "Bad Request", "no Host header")
        return req, None


class WSConn:
    """A TLSConn-like plaintext stream of binary WebSocket messages (see the module docstring).
    recv() returns the payload of data frames; pings are answered; a close frame from the
    client is echoed and ends the stream (b"")."""

    def __init__(self, conn, rest=b""):
        self.conn = conn
        self.info = conn.info
        self._buf = bytearray(rest)
        self._in_msg = False
        self._closed = False
        self._lock = threading.Lock()
        self.info.ws_frames_in = 0
        self.info.ws_frames_out = 0
        self.info.ws_close = None
        self.info.ws_control_in = []

    def recv(self, n=65536, timeout=None):
        while True:
            try:
                frames = parse_frames(self._buf)
            except Violation as e:
                self._fail(e.code, str(e))
                return b""
            data = b""
            for fin, op, payload in frames:
                self.info.ws_frames_in += 1
                try:
                    data += self._on_frame(fin, op, payload)
                except Violation as e:
                    self._fail(e.code, str(e))
                    return data
                if self._closed:
                    return data
            if data:
                return data
            if self._closed:
                return b""
            raw = self.conn.recv(65536, timeout=timeout)
            if not raw:
                return b""
            self._buf += raw

    def _on_frame(self, fin, op, payload):
        if op in (OP_CLOSE, OP_PING, OP_PONG):
            if not fin or len(payload) > 125:
                raise Violation(1002, "fragmented or oversized control frame")
            self.info.ws_control_in.append((op, payload))
        if op == OP_BINARY:
            if self._in_msg:
                raise Violation(1002, "new message before the previous one ended")
            self._in_msg = not fin
            return payload
        if op == OP_CONT:
            if not self._in_msg:
                raise Violation(1002, "continuation frame with no message")
            self._in_msg = not fin
            return payload
        if op == OP_TEXT:
            raise Violation(1003, "text frame (MQTT needs binary frames)")
        if op == OP_PING:
            self._send(frame(OP_PONG, payload))
            return b""
        if op == OP_PONG:
            return b""
        if op == OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.info.ws_close = (code, payload[2:].decode("utf-8", "replace"))
            self.info.close_reason = self.info.close_reason or "WebSocket close %d from client" % (
                code
            )
            if not self._closed:
                self._closed = True
                try:
                    self._send(frame(OP_CLOSE, payload[:2]))
                except OSError:
                    pass
            return b""
        raise Violation(1002, "reserved opcode %d" % op)

    def _fail(self, code, why):
        self.info.close_reason = self.info.close_reason or "websocket: %s" % why
        if not self._closed:
            self._closed = True
            try:
                self._send(frame(OP_CLOSE, struct.pack("!H", code) + why.encode()[:100]))
            except OSError:
                pass

    def _send(self, data):
        with self._lock:
            self.conn.sendall(data)
            self.info.ws_frames_out += 1

    def sendall(self, data):
        """One binary frame (one sendall)."""
        self._send(frame(OP_BINARY, data))

    def send_frames(self, *frames):
        """Bytes inside TLS but outside WebSocket framing (tests: hand-made frames), each
        argument in its own TLS record."""
        for f in frames:
            with self._lock:
                self.conn.sendall(bytes(f))

    def send_raw(self, data):
        self.conn.send_raw(data)

    def close(self, code=1000, reason=""):
        if not self._closed:
            self._closed = True
            try:
                self._send(frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()))
            except OSError:
                pass
        self.conn.close()

    def abort(self):
        self.conn.abort()
