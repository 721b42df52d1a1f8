# The TLS link of iothub.aio: the same write()/read_into() interface as transport.Link, so
# session.Session and its packet dispatch work unchanged, but nothing here blocks:
#
#   write(buf, off, n)  writes what the socket takes now; the rest is kept (in order) and
#                       sent by drain(), which the asyncio client awaits. A packet is never
#                       interleaved with another: while bytes are pending, later writes queue
#                       behind them. One write per MQTT packet, so one TLS record each.
#   read_into(...)      reads what is there now (0 when nothing is).
#   readable()          awaits input: the raw socket is polled by the kernel; plaintext
#                       mbedTLS already holds is not visible there, so after a read that
#                       filled the caller's buffer no wait is made before the next read.
#
# The TLS handshake runs in the first write (CONNECT), non-blocking: drain() waits on the
# TLS socket, whose poll knows whether mbedTLS wants to read or to write next.
#
# The waits use asyncio's I/O queue (asyncio.core._io_queue, in MicroPython's asyncio since
# uasyncio v3), the mechanism asyncio's own streams use. The raw socket is waited on rather
# than asyncio.open_connection's TLS stream: on the unix port a TLS socket has no file
# descriptor, so waiting on it means asking it every 1 ms; the raw socket wakes the loop
# only when bytes arrive.
import socket
from errno import EINPROGRESS

from .errors import ConfigError, ConnectionLost, explained
from .transport import Link

try:
    from asyncio import core as _core

    _ioq = _core._io_queue
except (ImportError, AttributeError):
    _core = _ioq = None


def check():
    if _ioq is None:
        raise ConfigError(
            "iothub.aio needs MicroPython's asyncio with its I/O queue (asyncio.core."
            "_io_queue, MicroPython >= 1.13); this port's asyncio has none"
        )


class ALink(Link):
    """transport.Link's state, is_open and close(), with writes that never block
    (what the socket does not take waits in `pending`) and reads that never wait."""

    def __init__(self):
        Link.__init__(self)
        self.pending = None  # bytearray of bytes written but not yet taken by the socket

    async def open(self, host, port, ctx, server_hostname, info=None):
        """TCP connect (awaited) and wrap in TLS; the handshake runs in the first write.
        DNS is a blocking lookup, as in asyncio.open_connection."""
        from .linkopen import resolve  # connection-time code, unloaded after connect

        self.close()
        family, stype, proto, _, addr = resolve(host, port)
        raw = socket.socket(family, stype, proto)
        self.raw = raw
        raw.setblocking(False)
        try:
            raw.connect(addr)
        except OSError as e:
            if e.args[0] != EINPROGRESS:
                self.close()
                raise ConnectionLost("TCP connect to %s:%d failed: %s" % (host, port, e))
        yield _ioq.queue_write(raw)  # connected (or failed: the first write says why)
        try:
            sock = ctx.wrap_socket(
                raw, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as e:
            from .linkopen import tls_error

            self.close()
            raise tls_error(e, server_hostname, info or getattr(ctx, "iothub_info", None))
        except BaseException:
            self.close()
            raise
        self.sock = sock
        self._more = False
        self.pending = None
        self._hs = (server_hostname, info or getattr(ctx, "iothub_info", None))
        self.bytes_out = self.bytes_in = self.writes = 0

    def _fail(self, e):
        hs = self._hs
        self.close()
        if hs is not None:
            from .linkopen import tls_error

            return tls_error(e, hs[0], hs[1])
        if isinstance(e, ValueError):
            return e
        return ConnectionLost("write failed: %s" % e)

    def _put(self, buf, off, end):
        # Write buf[off:end] now, as far as the socket takes it. Returns the offset reached.
        sock = self.sock
        while off < end:
            try:
                k = sock.write(buf, off, end - off)
            except (OSError, ValueError) as e:
                raise self._fail(e)
            if not k:
                break
            self._hs = None  # a write went through: the handshake is done
            off += k
        return off

    def write(self, buf, off=0, n=-1):
        if self.sock is None:
            raise ConnectionLost("not connected")
        if n < 0:
            n = len(buf) - off
        end = off + n
        self.writes += 1
        if self.pending is None:
            off = self._put(buf, off, end)
        if off < end:  # the socket is full (or handshaking): keep the rest, in order
            if self.pending is None:
                self.pending = bytearray(memoryview(buf)[off:end])
            else:
                self.pending += memoryview(buf)[off:end]
        self.bytes_out += n
        return n

    def write_from(self, buf, off, n):
        return self.write(buf, off, n)

    def drain(self):  # async
        """Send the pending bytes; returns when the socket took them all."""
        while self.pending is not None:
            p = self.pending
            k = self._put(p, 0, len(p))
            if k == len(p):
                self.pending = None
                return
            if k:
                self.pending = p = p[k:]
            yield _ioq.queue_write(self.sock)
            if self.sock is None:
                raise ConnectionLost("link closed while writing")

    def readable(self):  # async
        """Wait until read_into() may have bytes (at once if mbedTLS may hold some)."""
        if not self._more:
            raw = self.raw
            if raw is None:
                raise ConnectionLost("not connected")
            yield _ioq.queue_read(raw)

    def read_into(self, buf, off, n, timeout_ms=0):
        """Read up to n bytes into buf[off:] without waiting. Returns the count (0: none
        yet). Raises ConnectionLost when the peer closed or reset the link."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost("not connected")
        try:
            if off:
                k = sock.readinto(memoryview(buf)[off : off + n])  # rare: a split packet
            else:
                k = sock.readinto(buf, n)
        except OSError as e:
            # None: nothing yet; 0: closed by the peer; else ConnectionLost, explained (the
            # table is loaded for this one call, as by transport.Link)
            try:
                k = explained("tlserrors", "read_outcome", e)
            except ConnectionLost:
                self.close()
                raise
        except ValueError as e:  # the server's certificate did not verify
            raise self._fail(e)
        if k is None:
            self._more = False
            return 0
        if k == 0:
            self.close()
            raise ConnectionLost("connection closed by the hub")
        self._hs = None
        self._more = k == n
        self.bytes_in += k
        return k

    def close(self):
        Link.close(self)
        self.pending = None
