# Socket + TLS link with every wait bounded. Opening it (DNS, TCP, proxy, TLS socket,
# WebSocket upgrade) is in iothub.linkopen, loaded per connection; this module keeps the
# read/write path a connected client needs.
#
# The TCP connect runs with a socket timeout, then the link switches to non-blocking (the
# TLS handshake runs in the first write, bounded by open()'s deadline): MicroPython's blocking
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
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import ConnectionLost, Timeout, explained

# select's event bits: MicroPython's stream poll flags (MP_STREAM_POLL_* in py/stream.h,
# which extmod/modselect.c exports as select.POLLIN ...), the same on every port
# (and Linux's values).
_POLLIN = const(1)
_POLLOUT = const(4)
_POLLERR = const(24)  # POLLERR | POLLHUP


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

    @property
    def is_open(self):
        return self.sock is not None

    def write(self, buf, off=0, n=-1, timeout_ms=10000):
        """Write buf[off:off+n] (all of buf by default) in one call when possible: one TLS
        record per write that fits a record. The first write also completes the TLS
        handshake (iothub.linkopen.handshake), by the deadline open() was given, which
        then bounds the rest of that write too."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost("not connected")
        if n < 0:
            n = len(buf) - off
        end = off + n
        deadline = 0
        self.writes += 1
        if self._hs is not None and off < end:
            from .linkopen import handshake

            off, deadline = handshake(self, buf, off, end)
        while off < end:
            try:
                k = sock.write(buf, off, end - off)
            except OSError as e:
                self.close()
                raise ConnectionLost("write failed: %s" % e)
            except ValueError:
                self.close()
                raise
            if k:
                off += k
                continue
            if not deadline:
                deadline = ticks_add(ticks_ms(), timeout_ms)
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                self.close()
                raise Timeout("write stalled for %d ms" % timeout_ms)
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
            # None: nothing to read yet; 0: closed by the peer; else ConnectionLost,
            # explained. The codes and what they mean are in one table (tlserrors), loaded
            # for a read error and dropped again: a link that failed once must not keep
            # 7 KB of explanations in RAM.
            k = explained("tlserrors", "read_outcome", e)
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
