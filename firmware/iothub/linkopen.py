# Opening a transport.Link: DNS, TCP, the HTTP proxy tunnel, the TLS socket (its handshake
# runs in the link's first write) and the WebSocket upgrade, and what a failed handshake
# means. Run once per connection: DeviceClient unloads this module after connect() (the
# link keeps no reference to it), so a connected client keeps only the read/write path.
import select
import socket

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .clock import ticks_add, ticks_diff, ticks_ms
from .errors import ConfigError, ConnectionLost, Timeout, TLSError

_POLLIN = const(1)  # select.POLLIN (see iothub.transport)
_POLLOUT = const(4)  # select.POLLOUT


def resolve(host, port):
    """DNS lookup on every attempt (hub addresses change on failover)."""
    try:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as e:
        raise ConnectionLost("DNS lookup of %s failed: %s" % (host, e))
    if not ai:
        raise ConnectionLost("DNS lookup of %s returned no address" % host)
    return ai[0]


def use(link, transport, proxy, txbuf, max_message):
    if transport not in ("mqtt", "websockets"):
        raise ConfigError("transport must be 'mqtt' or 'websockets', got %r" % (transport,))
    link.websocket = (txbuf, max_message) if transport == "websockets" else None
    if proxy is not None:
        from .proxy import check

        proxy = check(proxy)
    link.proxy = proxy


def open(link, host, port, ctx, server_hostname, timeout_ms, info):
    link.close()
    deadline = ticks_add(ticks_ms(), timeout_ms)
    proxy = link.proxy
    family, stype, proto, _, addr = resolve(*(proxy[:2] if proxy else (host, port)))
    raw = socket.socket(family, stype, proto)
    link.raw = raw
    try:
        raw.settimeout(timeout_ms / 1000)
        raw.connect(addr)
    except OSError as e:
        link.close()
        where = "proxy %s:%d" % proxy[:2] if proxy else "host %s:%d" % (host, port)
        raise ConnectionLost("TCP connect to %s failed: %s" % (where, e))
    if proxy is not None:
        from .proxy import tunnel

        try:
            tunnel(raw, host, port, proxy, deadline)
        except BaseException:
            link.close()
            raise
    info = info or getattr(ctx, "iothub_info", None)
    try:
        raw.setblocking(False)
        # The handshake runs in the first write (CONNECT, or the WebSocket upgrade),
        # non-blocking and bounded by this open's deadline as a whole: a server that
        # sends one byte at a time cannot stretch it (a per-read timeout restarts
        # with every byte).
        sock = ctx.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=False)
    except (TLSError, MemoryError):
        link.close()
        raise
    except (OSError, ValueError) as e:
        link.close()
        raise tls_error(e, server_hostname, info)
    link.sock = sock
    p = select.poll()
    p.register(raw, _POLLIN)
    link._poll = p
    link._more = False
    # While handshaking, wait on the TLS socket itself: it knows whether mbedTLS waits
    # to read or to write.
    hp = select.poll()
    hp.register(sock, _POLLIN | _POLLOUT)
    link._hs = (hp, deadline, server_hostname, info)
    if link.websocket is not None:
        # The WebSocket has the socket's write/readinto/close/cipher; it waits on raw.
        from .websocket import upgrade

        try:
            link.sock = upgrade(
                sock, raw, server_hostname, deadline, *link.websocket, send=link.write
            )
        except BaseException:
            link.close()
            raise
    link.bytes_out = link.bytes_in = link.writes = 0
    return sock


def handshake(link, buf, off, end):
    """The first write of a connection (Link.write): write until mbedTLS, done with the
    handshake, takes the first bytes of buf[off:end], waiting on the TLS socket (it knows
    whether the handshake waits to read or to write) until open()'s deadline. Returns
    (the offset after what was written, that deadline)."""
    poll, deadline, server_hostname, info = link._hs
    while True:
        try:
            k = link.sock.write(buf, off, end - off)
        except (OSError, ValueError) as e:  # ValueError: the certificate did not verify
            link.close()
            raise tls_error(e, server_hostname, info)
        if k:
            link._hs = None  # handshake done
            return off + k, deadline
        left = ticks_diff(deadline, ticks_ms())
        if left <= 0:
            link.close()
            raise Timeout(
                "TLS handshake with %s did not complete in time (a slow or silent server)"
                % server_hostname
            )
        for _ in poll.ipoll(min(left, 100)):
            break


def tls_error(e, server_hostname, info):
    """The SDK error for a failed TLS handshake (socket errors: ConnectionLost)."""
    code = e.args[0] if e.args else None
    if isinstance(e, OSError) and isinstance(code, int) and code >= 0:
        if code == 12:  # ENOMEM: the TLS buffers (mbedTLS in the GC heap) did not fit
            return ConnectionLost(
                "TLS handshake with %s: out of memory (ENOMEM): no block of the heap is "
                "large enough for the TLS buffers" % server_hostname
            )
        return ConnectionLost("TLS handshake with %s: socket error %s" % (server_hostname, e))
    from .tlserrors import handshake_error

    return handshake_error(e, server_hostname, info)


def cipher(link):
    """The negotiated (suite, version) of a Link, None before the handshake completed (or
    on a port whose TLS socket cannot tell). Here, not in the resident transport: only
    connection logs and tls_info() ask."""
    if link._hs is not None:
        return None
    try:
        return link.sock.cipher()
    except (AttributeError, OSError):
        return None
