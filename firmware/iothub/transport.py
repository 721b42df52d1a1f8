# Socket + TLS link with every wait bounded.
#
# The TLS handshake runs in blocking mode on a socket with a timeout (so a silent server
# cannot hang wrap_socket), then the link switches to non-blocking: MicroPython's blocking
# readinto() on a TLS socket waits until the whole buffer is filled, which would stall a
# client waiting for a 2-byte PINGRESP, and a timed-out read leaves mbedTLS in an error
# state for good.
#
# Waiting: select.poll on the *raw* socket. On the unix port a TLS socket has no file
# descriptor for poll(), so select falls back to asking it every 1 ms (extmod/modselect.c,
# MICROPY_PY_SELECT_IOCTL_CALL_PERIOD_MS); the raw socket is polled by the kernel and wakes
# as soon as bytes arrive. Plaintext that mbedTLS already holds is not visible there, so a
# read that filled the caller's whole buffer is followed by another read before any wait.
#
# Hot path without allocation: write(buf, off, n) and read_into(buf, off, n) take offsets
# (stream write(buf, off, n) and readinto(buf, n) exist on every port since long before
# 1.23); ipoll() reuses one result tuple; a non-blocking read with nothing there returns
# None rather than raising.
import select
import socket

from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import ConfigError, ConnectionLost, Timeout, TLSError

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_POLLERR = getattr(select, "POLLERR", 8) | getattr(select, "POLLHUP", 16)


def resolve(host, port):
    """DNS lookup on every attempt (hub addresses change on failover)."""
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as e:
        raise ConnectionLost("DNS lookup of %s failed: %s" % (host, e))
    if not ai:
        raise ConnectionLost("DNS lookup of %s returned no address" % host)
    return ai[0]


class Link:
    """One TLS connection. open() connects; write() sends all; read_into() waits <= timeout."""

    def __init__(self):
        self.sock = None
        self.raw = None
        self._poll = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.writes = 0
        self._more = False
        self._hs = None  # (poll, deadline, server name, TLS info) until the handshake is done
        self.websocket = None  # (txbuf, max_message) for transport="websockets"
        self.proxy = None  # (host, port, authorization) of an HTTP CONNECT proxy

    def use(self, transport="mqtt", proxy=None, txbuf=1024, max_message=32768):
        """transport "mqtt" (MQTT in TLS) or "websockets" (MQTT in WebSocket frames in TLS);
        proxy: None, (host, port) or (host, port, user, password) of an HTTP proxy."""
        if transport not in ("mqtt", "websockets"):
            raise ConfigError("transport must be 'mqtt' or 'websockets', got %r" % (transport,))
        self.websocket = (txbuf, max_message) if transport == "websockets" else None
        if proxy is not None:
            from .proxy import check

            proxy = check(proxy)
        self.proxy = proxy

    def open(self, host, port, ctx, server_hostname, timeout_ms=30000, info=None):
        self.close()
        deadline = ticks_add(ticks_ms(), timeout_ms)
        proxy = self.proxy
        family, stype, proto, _, addr = resolve(*(proxy[:2] if proxy else (host, port)))
        raw = socket.socket(family, stype, proto)
        self.raw = raw
        try:
            raw.settimeout(timeout_ms / 1000)
            raw.connect(addr)
        except OSError as e:
            self.close()
            where = "proxy %s:%d" % proxy[:2] if proxy else "%s:%d" % (host, port)
            raise ConnectionLost("TCP connect to %s failed: %s" % (where, e))
        if proxy is not None:
            from .proxy import tunnel

            try:
                tunnel(raw, host, port, proxy, deadline)
            except BaseException:
                self.close()
                raise
        try:
            raw.setblocking(False)
            # The handshake runs in the first write (CONNECT, or the WebSocket upgrade),
            # non-blocking and bounded by this open's deadline as a whole: a server that
            # sends one byte at a time cannot stretch it (a per-read timeout restarts
            # with every byte).
            sock = ctx.wrap_socket(
                raw, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except (TLSError, MemoryError):
            self.close()
            raise
        except (OSError, ValueError) as e:
            self.close()
            raise self._tls_error(e, server_hostname, info or getattr(ctx, "iothub_info", None))
        self.sock = sock
        p = select.poll()
        p.register(raw, _POLLIN)
        self._poll = p
        self._more = False
        # While handshaking, wait on the TLS socket itself: it knows whether mbedTLS waits
        # to read or to write.
        hp = select.poll()
        hp.register(sock, _POLLIN | _POLLOUT)
        self._hs = (hp, deadline, server_hostname, info or getattr(ctx, "iothub_info", None))
        if self.websocket is not None:
            # The WebSocket has the socket's write/readinto/close/cipher; it waits on raw.
            from .websocket import upgrade

            try:
                self.sock = upgrade(
                    sock, raw, server_hostname, deadline, *self.websocket, send=self.write
                )
            except BaseException:
                self.close()
                raise
        self.bytes_out = self.bytes_in = self.writes = 0
        return sock

    @staticmethod
    def _tls_error(e, server_hostname, info):
        code = e.args[0] if e.args else None
        if isinstance(e, OSError) and isinstance(code, int) and code >= 0:
            return ConnectionLost("TLS handshake with %s: socket error %s" % (server_hostname, e))
        from .tlsprofile import handshake_error

        return handshake_error(e, server_hostname, info)

    @property
    def is_open(self):
        return self.sock is not None

    def cipher(self):
        if self._hs is not None:
            return None  # no suite before the handshake completes
        try:
            return self.sock.cipher()
        except (AttributeError, OSError):
            return None

    def write(self, buf, off=0, n=-1, timeout_ms=10000):
        """Write buf[off:off+n] (all of buf by default) in one call when possible: one TLS
        record per write that fits a record. The first write also completes the TLS
        handshake, by the deadline open() was given."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost("not connected")
        if n < 0:
            n = len(buf) - off
        end = off + n
        hs = self._hs
        deadline = hs[1] if hs is not None else 0
        self.writes += 1
        while off < end:
            try:
                k = sock.write(buf, off, end - off)
            except OSError as e:
                self.close()
                if hs is not None:
                    raise self._tls_error(e, hs[2], hs[3])
                raise ConnectionLost("write failed: %s" % e)
            except ValueError as e:  # the server's certificate did not verify
                self.close()
                raise self._tls_error(e, hs[2], hs[3]) if hs is not None else e
            if k:
                off += k
                self._hs = hs = None  # handshake done
                continue
            if not deadline:
                deadline = ticks_add(ticks_ms(), timeout_ms)
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                self.close()
                if hs is not None:
                    raise Timeout(
                        "TLS handshake with %s did not complete in time (a slow or silent "
                        "server)" % hs[2]
                    )
                raise Timeout("write stalled for %d ms" % timeout_ms)
            if hs is not None:
                for _ in hs[0].ipoll(min(left, 100)):
                    break
                continue
            self._poll.modify(self.raw, _POLLOUT)
            try:
                for _ in self._poll.ipoll(min(left, 100)):
                    break
            finally:
                self._poll.modify(self.raw, _POLLIN)
        self.bytes_out += n
        return n

    def read_into(self, buf, off, n, timeout_ms):
        """Read up to n bytes into buf[off:], waiting up to timeout_ms for the first.
        Returns the count, 0 on timeout. Raises ConnectionLost when the peer closed or
        reset the link."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost("not connected")
        ready = _POLLIN
        if not self._more:
            ready = 0
            for ev in self._poll.ipoll(max(timeout_ms, 0)):
                ready = ev[1]
                break
            if not ready:
                return 0
        try:
            if off:
                k = sock.readinto(memoryview(buf)[off : off + n])  # rare: a split packet
            else:
                k = sock.readinto(buf, n)
        except OSError as e:
            k = _again(e)
        if k is None:  # a partial TLS record, or mbedTLS had nothing after all
            self._more = False
            if ready & _POLLERR and not ready & _POLLIN:
                self.close()
                raise ConnectionLost("connection reset by the hub")
            return 0
        if k == 0:
            self.close()
            raise ConnectionLost("connection closed by the hub")
        self._more = k == n
        self.bytes_in += k
        return k

    def close(self):
        for s in (self.sock, self.raw):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.sock = self.raw = self._poll = self._hs = None


def _again(e):
    # None: nothing to read yet; 0: closed by the peer; else ConnectionLost, explained. The
    # codes and what they mean are in one table (tlserrors), loaded for a read error and
    # dropped again: a link that failed once must not keep 7 KB of explanations in RAM.
    from .tlserrors import read_outcome

    try:
        return read_outcome(e)
    finally:
        import sys

        if sys.modules.pop("iothub.tlserrors", None) is not None:
            try:
                delattr(sys.modules["iothub"], "tlserrors")
            except (AttributeError, KeyError):
                pass
