# HTTP CONNECT proxy (RFC 9110 section 9.3.6) for both transports: the device opens TCP to
# the proxy, asks it for a tunnel to the hub's host name and port, and runs TLS (and MQTT or
# WebSockets) inside the tunnel as if connected directly. Loaded only when proxy= is given.
#
# Credentials (Basic, RFC 7617) are encoded once into the header value and never appear in
# logs or error messages.
import binascii

from .clock import ticks_diff, ticks_ms
from .errors import ConfigError, ConnectionLost, ProxyError, Timeout

_MAX_HEAD = 2048


def check(proxy):
    """(host, port, authorization-or-None) from proxy=(host, port) or
    (host, port, user, password). Raises ConfigError without echoing the values."""
    if not isinstance(proxy, (tuple, list)) or len(proxy) not in (2, 4):
        raise ConfigError("proxy must be (host, port) or (host, port, user, password)")
    host, port = proxy[0], proxy[1]
    if not isinstance(host, str) or not host or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError("proxy must be (host, port) with a host name and a port 1..65535")
    auth = None
    if len(proxy) == 4:
        user, password = proxy[2], proxy[3]
        if not isinstance(user, str) or not isinstance(password, str) or ":" in user:
            raise ConfigError("proxy user and password must be str (no ':' in the user name)")
        cred = binascii.b2a_base64((user + ":" + password).encode()).strip()
        auth = b"Basic " + cred
    return (host, port, auth)


def connect_request(host, port, auth=None):
    """The CONNECT request for a tunnel to host:port, as bytes."""
    req = b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n" % (host.encode(), port, host.encode(), port)
    if auth is not None:
        req += b"Proxy-Authorization: " + auth + b"\r\n"
    return req + b"\r\n"


def check_reply(head, where):
    """Raise ProxyError unless head (the proxy's answer up to the blank line) says 200."""
    line = bytes(head).split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProxyError(0, "the proxy %s did not answer CONNECT with HTTP" % where)
    status = int(parts[1])
    if status == 200:
        return
    reason = parts[2].decode() if len(parts) > 2 else ""
    if status in (401, 407):  # 407 by RFC 9110; some proxies (tinyproxy) say 401
        text = "the proxy %s wants credentials (%d %s): check proxy user and password" % (
            where,
            status,
            reason,
        )
    elif status == 403:
        text = "the proxy %s refused the tunnel (403 %s): port or host not allowed" % (
            where,
            reason,
        )
    else:
        text = "the proxy %s answered CONNECT with %d %s (expected 200)" % (where, status, reason)
    raise ProxyError(status, text)


def tunnel(sock, host, port, proxy, deadline):
    """Ask the proxy (a connected, blocking TCP socket) for a tunnel to host:port; waits until
    the ticks_ms deadline at most. Reads nothing past the proxy's answer."""
    where = "%s:%d" % (proxy[0], proxy[1])
    try:
        sock.write(connect_request(host, port, proxy[2]))
    except OSError as e:
        raise ConnectionLost("the proxy %s closed the connection: %s" % (where, e))
    head = bytearray(_MAX_HEAD)
    one = memoryview(head)
    n = 0
    while n < 4 or head[n - 4 : n] != b"\r\n\r\n":
        if n == _MAX_HEAD:
            raise ProxyError(0, "the proxy %s sent an answer over %d bytes" % (where, _MAX_HEAD))
        left = ticks_diff(deadline, ticks_ms())
        if left <= 0:
            raise Timeout("the proxy %s did not answer CONNECT in time" % where)
        sock.settimeout(left / 1000)
        try:
            # byte by byte: nothing past the answer is consumed (the TLS handshake follows)
            got = sock.readinto(one[n : n + 1])
        except OSError as e:
            if (e.args[0] if e.args else None) in (11, 110, 116):
                raise Timeout("the proxy %s did not answer CONNECT in time" % where)
            raise ConnectionLost("the proxy %s closed the connection: %s" % (where, e))
        if not got:
            raise ConnectionLost("the proxy %s closed the connection without answering" % where)
        n += 1
    check_reply(one[:n], where)
    sock.settimeout(max(ticks_diff(deadline, ticks_ms()), 1) / 1000)
