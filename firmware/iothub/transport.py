# Socket + TLS link with every wait bounded.
#
# The TLS handshake runs in blocking mode on a socket with a timeout (so a silent server
# cannot hang wrap_socket), then the link switches to non-blocking: MicroPython's blocking
# readinto()/recv_into() on a TLS socket wait until the whole buffer is filled, which would
# stall a client waiting for a 2-byte PINGRESP. Reads go through select.poll with a timeout.
import select
import socket

from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import ConnectionLost, Timeout, TLSError

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

    def open(self, host, port, ctx, server_hostname, timeout_ms=30000):
        self.close()
        family, stype, proto, _, addr = resolve(host, port)
        raw = socket.socket(family, stype, proto)
        self.raw = raw
        try:
            raw.settimeout(timeout_ms / 1000)
            raw.connect(addr)
        except OSError as e:
            self.close()
            raise ConnectionLost("TCP connect to %s:%d failed: %s" % (host, port, e))
        try:
            sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except (TLSError, MemoryError):
            self.close()
            raise
        except (OSError, ValueError) as e:
            self.close()
            code = e.args[0] if e.args else None
            if isinstance(e, OSError) and isinstance(code, int) and code >= 0:
                raise ConnectionLost(
                    "TLS handshake with %s: socket error %s" % (server_hostname, e)
                )
            from .tlsprofile import handshake_error  # a context not made by tls_context()

            raise handshake_error(e, server_hostname, getattr(ctx, "iothub_info", None))
        sock.setblocking(False)
        self.sock = sock
        p = select.poll()
        p.register(sock, _POLLIN)
        self._poll = p
        self.bytes_out = self.bytes_in = self.writes = 0
        return sock

    @property
    def is_open(self):
        return self.sock is not None

    def cipher(self):
        try:
            return self.sock.cipher()
        except (AttributeError, OSError):
            return None

    def write(self, data, timeout_ms=10000):
        """Write all of data (one TLS record per call when it fits a record)."""
        sock = self.sock
        if sock is None:
            raise ConnectionLost("not connected")
        mv = memoryview(data)
        total = len(mv)
        done = 0
        deadline = ticks_add(ticks_ms(), timeout_ms)
        self.writes += 1
        while done < total:
            try:
                n = sock.write(mv[done:])
            except OSError as e:
                self.close()
                raise ConnectionLost("write failed: %s" % e)
            if n:
                done += n
                continue
            left = ticks_diff(deadline, ticks_ms())
            if left <= 0:
                self.close()
                raise Timeout("write stalled for %d ms" % timeout_ms)
            self._poll.modify(sock, _POLLOUT)
            try:
                self._poll.poll(min(left, 100))
            finally:
                self._poll.modify(sock, _POLLIN)
        self.bytes_out += total
        return total

    def read_into(self, buf, timeout_ms):
        """Read what is available into buf, waiting up to timeout_ms. Returns 0 on timeout.

        Raises ConnectionLost when the peer closed or reset the link.
        """
        sock = self.sock
        if sock is None:
            raise ConnectionLost("not connected")
        try:
            n = sock.readinto(buf)
        except OSError as e:
            n = _again(e)
        if n is None:
            events = self._poll.poll(max(timeout_ms, 0))
            if not events:
                return 0
            try:
                n = sock.readinto(buf)
            except OSError as e:
                n = _again(e)
            if n is None:
                if events[0][1] & _POLLERR:
                    self.close()
                    raise ConnectionLost("connection reset by the hub")
                return 0
        if n == 0:
            self.close()
            raise ConnectionLost("connection closed by the hub")
        self.bytes_in += n
        return n

    def close(self):
        for s in (self.sock, self.raw):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.sock = self.raw = self._poll = None


def _again(e):
    # None: nothing to read yet; 0: closed by the peer; else ConnectionLost, explained. The
    # codes and what they mean are in one table (tlserrors), loaded at the first read error.
    from .tlserrors import read_outcome

    return read_outcome(e)
