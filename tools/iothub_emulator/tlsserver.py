"""The hub's TLS endpoint: a CPython TLS server on loopback with IoT Hub's policy.

OpenSSL (pyOpenSSL) runs over memory BIOs on a plain TCP socket, so every raw byte and TLS
record in each direction is seen and counted, and a test can drop the link or inject bytes.

Policy, like a real classic hub endpoint (docs/protocol.md section 1):
  * TLS 1.2 only (capped at 1.2 even with clients that offer 1.3); `legacy=True` speaks only
    TLS 1.0/1.1 (at OpenSSL security level 0), for negative tests.
  * profile "ecc": EC leaf, the four ECDHE-ECDSA suites; profile "rsa": RSA leaf, the four
    ECDHE-RSA suites. The hub follows the client's preference order.
  * A client certificate is requested; any certificate is accepted at the TLS layer and
    recorded with its SHA-1/SHA-256 thumbprints: the hub decides at MQTT CONNECT
    (registered thumbprint or CA), as IoT Hub does (section 1.9).
  * RFC 6066 max_fragment_length: OpenSSL 3 honours it on its own (echoes it in the
    ServerHello and fragments its records); `ConnInfo.negotiated_mfl` reads it off the wire.
  * No session tickets (resumption is not modelled; every handshake is a full one).

    ep = TLSEndpoint(pki, "ecc", handler=my_handler).start()
    ... device connects to 127.0.0.1:ep.port with server_hostname=ep.hostname ...
    info = ep.wait_connection(0); ep.stop()

`handler(conn)` runs in the connection's own thread after a successful handshake with a
`TLSConn` (plaintext recv/sendall/close/abort/send_raw); the link is closed when it returns.
Without a handler the endpoint reads and discards until the client closes.
"""

import hashlib
import select
import socket
import threading
import time

from OpenSSL import SSL, crypto

from . import tlsrecords

SUITES = {
    "ecc": (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA384",
    ),
    "rsa": (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-SHA256",
        "ECDHE-RSA-AES256-SHA384",
    ),
}
# IANA names of the suites above (the names mbedTLS and the RFCs use).
IANA_NAMES = {
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
}
HANDSHAKE_TIMEOUT = 30.0
SEND_TIMEOUT = 30.0


class ConnInfo:
    """What the endpoint saw on one connection. Counters are updated as the link runs.

    client_hello       raw record(s) (headers included) that carried the ClientHello
    server_hello       raw record(s) of the server's first flight start (ServerHello ...)
    sni                server name the client sent (None if none)
    cipher, cipher_id, cipher_iana   negotiated suite (OpenSSL name, id, IANA name)
    version            "TLSv1.2", ...
    group              the ECDHE group (e.g. "secp256r1", "x25519")
    client_cert_der    the client's certificate (DER) or None; client_cert_chain_der: all
                       it sent, leaf first
    client_cert_sha1, client_cert_sha256   thumbprints, upper-case hex, no separators
    bytes_in/out       raw TCP bytes received/sent (including send_raw bytes)
    records_in/out     TLS records received/sent
    record_sizes_in/out, max_record_in/out   record length fields: the fragment length
                       without the 5-byte header (ciphertext length for protected records,
                       i.e. plaintext + explicit nonce/IV + tag/MAC + padding)
    handshake_bytes_in/out, handshake_records_in/out, handshake_seconds   the same counters
                       frozen when the server finished the handshake
    negotiated_mfl     max fragment length (bytes) the server echoed in its ServerHello, or None
    handshake_error    str when the handshake failed, else None
    handshake_done     Event: set when the handshake finished, successfully or not
    closed             Event: set when the TCP connection is gone
    """

    def __init__(self, peer):
        self.peer = peer
        self.started = time.monotonic()
        self.client_hello = b""
        self.server_hello = b""
        self.sni = None
        self.cipher = None
        self.cipher_id = None
        self.cipher_iana = None
        self.version = None
        self.group = None
        self.client_cert_der = None
        self.client_cert_chain_der = []
        self.client_cert_sha1 = None
        self.client_cert_sha256 = None
        self.negotiated_mfl = None
        self.handshake_error = None
        self.handshake_bytes_in = self.handshake_bytes_out = 0
        self.handshake_records_in = self.handshake_records_out = 0
        self.handshake_seconds = None
        self.handshake_done = threading.Event()
        self.closed = threading.Event()
        self.close_reason = None
        self._in = tlsrecords.RecordCounter()
        self._out = tlsrecords.RecordCounter()

    bytes_in = property(lambda self: self._in.nbytes)
    bytes_out = property(lambda self: self._out.nbytes)
    records_in = property(lambda self: self._in.count)
    records_out = property(lambda self: self._out.count)
    record_sizes_in = property(lambda self: self._in.sizes)
    record_sizes_out = property(lambda self: self._out.sizes)
    max_record_in = property(lambda self: self._in.max_size)
    max_record_out = property(lambda self: self._out.max_size)

    @property
    def ok(self):
        return self.handshake_done.is_set() and self.handshake_error is None

    def __repr__(self):
        return "<ConnInfo %s sni=%r %s %s err=%r in=%d/%d out=%d/%d>" % (
            self.peer,
            self.sni,
            self.version,
            self.cipher,
            self.handshake_error,
            self.bytes_in,
            self.records_in,
            self.bytes_out,
            self.records_out,
        )


class TLSConn:
    """The plaintext side of one connection, for the handler. Thread-safe: recv in the
    handler's thread while other threads sendall/close/abort."""

    def __init__(self, sock, ssl_conn, info):
        self.info = info
        self._sock = sock
        self._ssl = ssl_conn
        self._lock = threading.RLock()  # guards the SSL object and the order of bytes sent
        self._eof = False
        self._dead = False

    # -- raw side --
    def _flush(self):
        # caller holds the lock: move whatever OpenSSL produced onto the wire, in order
        out = b""
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        if out and not self._dead:
            self.info._out.feed(out)
            self._sock.sendall(out)

    def _feed(self, raw):
        self.info._in.feed(raw)
        with self._lock:
            self._ssl.bio_write(raw)

    # -- plaintext API --
    def recv(self, n=65536, timeout=None):
        """Up to n plaintext bytes; b"" when the peer closed (close_notify or TCP EOF) or the
        link was dropped; raises socket.timeout when nothing arrives within `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._dead:
                    return b""
                try:
                    data = self._ssl.recv(n)
                    self._flush()
                    return data
                except SSL.WantReadError:
                    self._flush()
                except SSL.ZeroReturnError:
                    self.info.close_reason = self.info.close_reason or "close_notify from client"
                    return b""
                except (SSL.Error, OSError) as e:
                    self.info.close_reason = self.info.close_reason or "TLS error: %s" % (e,)
                    return b""
            if self._eof:
                return b""
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                r, _, _ = select.select([self._sock], [], [], wait)
            except (OSError, ValueError):
                return b""
            if not r:
                raise socket.timeout("no data from the client within %.1f s" % timeout)
            try:
                raw = self._sock.recv(65536)
            except OSError:
                raw = b""
            if not raw:
                self._eof = True
                self.info.close_reason = self.info.close_reason or "TCP closed by client"
                with self._lock:
                    try:
                        self._ssl.bio_shutdown()
                    except SSL.Error:
                        pass
                continue
            self._feed(raw)

    def sendall(self, data):
        """Send plaintext (split into records of at most the negotiated fragment length)."""
        with self._lock:
            if self._dead:
                raise ConnectionError("the TLS connection is closed")
            self._ssl.sendall(bytes(data))
            self._flush()

    def send_raw(self, data):
        """Raw bytes on TCP, bypassing TLS (fault injection). Counted in bytes_out; the record
        counter stops counting if the bytes break record framing."""
        with self._lock:
            self.info._out.feed(bytes(data))
            self._sock.sendall(bytes(data))

    def close(self):
        """close_notify, then TCP FIN. Safe from any thread, idempotent."""
        with self._lock:
            if self._dead:
                return
            try:
                self._ssl.shutdown()
                self._flush()
            except (SSL.Error, OSError):
                pass
            self._drop("closed by the hub")

    def abort(self):
        """Drop the TCP connection without close_notify (fault injection)."""
        with self._lock:
            self._drop("aborted by the hub")

    def _drop(self, reason):
        if self._dead:
            return
        self._dead = True
        self.info.close_reason = self.info.close_reason or reason
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class TLSEndpoint:
    """A TLS listener with a hub's policy; see the module docstring."""

    def __init__(
        self,
        pki,
        profile="ecc",
        host="127.0.0.1",
        port=0,
        handler=None,
        *,
        legacy=False,
        server_cert=None,
        request_client_cert=True,
        name="hub",
    ):
        if profile not in SUITES:
            raise ValueError("unknown TLS profile %r (expected 'rsa' or 'ecc')" % (profile,))
        self.pki = pki
        self.profile = profile
        self.host = host
        self._want_port = port
        self.port = None
        self.handler = handler
        self.legacy = legacy
        self.name = name
        self.hostname = pki.hub_hostname
        self.server_cert = server_cert or pki.server_credentials(profile)
        self.request_client_cert = request_client_cert
        self.connections = []  # append-only list of ConnInfo
        self._conns = []  # live TLSConn objects
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._threads = []
        self._stop = threading.Event()
        self._lsock = None
        self._ctx = self._make_context()

    def _make_context(self):
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        if self.legacy:
            ctx.set_min_proto_version(SSL.TLS1_VERSION)
            ctx.set_max_proto_version(SSL.TLS1_1_VERSION)
            ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        else:
            ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
            ctx.set_cipher_list(":".join(SUITES[self.profile]).encode())
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
        chain, key = self.server_cert
        ctx.use_certificate_chain_file(chain)
        ctx.use_privatekey_file(key)
        ctx.check_privatekey()
        if self.request_client_cert:
            # request, never require; accept any certificate and record it
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, lambda *a: True)
        ctx.set_tlsext_servername_callback(self._on_sni)
        return ctx

    @staticmethod
    def _on_sni(ssl_conn):
        info = ssl_conn.get_app_data()
        name = ssl_conn.get_servername()
        if info is not None and name:
            info.sni = name.decode("ascii", "replace")

    # -- lifecycle --
    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self._want_port))
        s.listen(16)
        s.settimeout(0.2)
        self._lsock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name="%s-accept" % self.name, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.abort()
        deadline = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None

    def __enter__(self):
        return self.start() if self.port is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def address(self):
        return (self.host, self.port)

    def wait_connection(self, index=-1, timeout=10.0, handshake=True):
        """The ConnInfo of connection `index` (default: the latest), waiting up to `timeout`
        for it to arrive and, with handshake=True, for its handshake to finish."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.connections or (index >= 0 and len(self.connections) <= index):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "%s: no connection #%s within %.1f s" % (self.name, index, timeout)
                    )
                self._cond.wait(left)
            info = self.connections[index]
        if handshake and not info.handshake_done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("%s: handshake of %r did not finish in time" % (self.name, info))
        return info

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                sock, peer = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(None)
            # Each packet goes out when written, as a hub answers: with Nagle's algorithm a
            # PUBACK written right after another waited for the device's delayed ACK (40 ms
            # on Linux), a stall of the emulator's making whenever a device pipelines sends.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            info = ConnInfo(peer)
            with self._cond:
                self.connections.append(info)
                self._cond.notify_all()
            t = threading.Thread(
                target=self._serve, args=(sock, info), name="%s-conn" % self.name, daemon=True
            )
            self._threads.append(t)
            t.start()

    # -- per connection --
    def _serve(self, sock, info):
        ssl_conn = SSL.Connection(self._ctx, None)
        ssl_conn.set_app_data(info)
        ssl_conn.set_accept_state()
        conn = TLSConn(sock, ssl_conn, info)
        with self._lock:
            self._conns.append(conn)
        try:
            if self._handshake(sock, conn):
                if self.handler is not None:
                    self.handler(conn)
                else:
                    while conn.recv(65536):
                        pass
                conn.close()
        except Exception as e:  # a handler bug must not kill the endpoint
            info.close_reason = info.close_reason or "handler error: %r" % (e,)
            conn.abort()
        finally:
            conn._dead = True
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            info.handshake_done.set()
            info.closed.set()

    def _handshake(self, sock, conn):
        info = conn.info
        ssl_conn = conn._ssl
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            while True:
                try:
                    with conn._lock:
                        ssl_conn.do_handshake()
                        conn._flush()
                    break
                except SSL.WantReadError:
                    with conn._lock:
                        conn._flush()
                    if not info.client_hello and info._in.records:
                        info.client_hello = tlsrecords.client_hello_records(info._in.records)
                left = deadline - time.monotonic()
                r, _, _ = select.select([sock], [], [], max(0.0, left))
                if not r or self._stop.is_set():
                    raise TimeoutError("handshake timed out")
                raw = sock.recv(65536)
                if not raw:
                    raise ConnectionError("client closed the connection during the handshake")
                conn._feed(raw)
        except Exception as e:
            with conn._lock:
                try:
                    conn._flush()  # the alert, if OpenSSL made one
                except OSError:
                    pass
            info.handshake_error = _describe(e)
            info.close_reason = "handshake failed"
            self._snapshot(conn)
            conn._drop("handshake failed")
            return False
        self._snapshot(conn)
        info.version = ssl_conn.get_protocol_version_name()
        info.cipher = ssl_conn.get_cipher_name()
        try:
            info.group = ssl_conn.get_group_name()
        except (AttributeError, SSL.Error):
            info.group = None
        peer = ssl_conn.get_peer_certificate()
        if peer is not None:
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, peer)
            info.client_cert_der = der
            # on a server, OpenSSL's peer chain leaves out the leaf
            extra = ssl_conn.get_peer_cert_chain() or []
            info.client_cert_chain_der = [der] + [
                crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in extra
            ]
            info.client_cert_sha1 = hashlib.sha1(der).hexdigest().upper()
            info.client_cert_sha256 = hashlib.sha256(der).hexdigest().upper()
        info.handshake_done.set()
        return True

    @staticmethod
    def _snapshot(conn):
        info = conn.info
        info.handshake_seconds = time.monotonic() - info.started
        info.handshake_bytes_in, info.handshake_bytes_out = info.bytes_in, info.bytes_out
        info.handshake_records_in = info.records_in
        info.handshake_records_out = info.records_out
        if not info.client_hello and info._in.records:
            info.client_hello = tlsrecords.client_hello_records(info._in.records)
        if info.sni is None and info.client_hello:
            info.sni = tlsrecords.client_hello_sni(info.client_hello)
        out = info._out.records
        info.server_hello = b"".join(r for r in out if r[0] == tlsrecords.CT_HANDSHAKE)
        for mtype, body in tlsrecords.handshake_messages(out):
            if mtype == tlsrecords.HS_SERVER_HELLO:
                try:
                    _, suite, exts = tlsrecords.parse_server_hello(body)
                except (IndexError, ValueError):
                    break
                info.cipher_id = suite
                info.cipher_iana = IANA_NAMES.get(suite)
                mfl = exts.get(tlsrecords.EXT_MAX_FRAGMENT_LENGTH)
                if mfl:
                    info.negotiated_mfl = tlsrecords.MFL_CODES.get(mfl[0])
                break


def _describe(exc):
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        parts = [e[2] if len(e) > 2 else str(e) for e in exc.args[0]]
        return "TLS: " + "; ".join(parts) if parts else "TLS error"
    return "%s: %s" % (type(exc).__name__, exc)


class ServedEndpoint:
    """What the hub and DPS emulators share: a TLSEndpoint in .endpoint (None when stopped),
    a TestPKI in .pki and a TLS profile in .profile; start() returns self. With a WebSocket
    port (_want_ws_port not None) the same service is also served as MQTT over WebSockets on
    .ws_endpoint (websocket.py); .ws is its Upgrader (test hook: .ws.reply)."""

    endpoint = None
    ws_endpoint = None
    ws = None
    _want_ws_port = None

    def _start_ws(self, handler, name):
        if self._want_ws_port is None:
            return
        from .websocket import Upgrader

        self.ws = Upgrader(handler)
        ep = TLSEndpoint(
            self.pki, self.profile, self.host, self._want_ws_port, handler=self.ws, name=name
        )
        ep.hostname = self.endpoint.hostname
        self.ws_endpoint = ep.start()
        self._want_ws_port = ep.port  # a restart comes back on the same port

    def _stop_ws(self):
        if self.ws_endpoint is not None:
            self.ws_endpoint.stop()
            self.ws_endpoint = None

    @property
    def ws_port(self):
        return self.ws_endpoint.port if self.ws_endpoint is not None else None

    def __enter__(self):
        return self.start() if self.endpoint is None else self

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self.endpoint.port if self.endpoint is not None else None

    @property
    def root_der(self):
        return self.pki.root_der(self.profile)

    @property
    def root_pem_path(self):
        return self.pki.root_pem_path(self.profile)

    @property
    def root_der_file(self):
        """Path of the root (DER) a device trusts for this endpoint: tests pass it as roots=."""
        return self.pki.root_der_path(self.profile)
