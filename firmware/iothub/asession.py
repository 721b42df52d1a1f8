# Session steps for asyncio (session.Session over an alink.ALink): open a connection and
# wait for CONNACK, and read packets as they come, with the session's own dispatch. Used by
# iothub.aio's DeviceClient (while it connects) and by iothub.aio.register (DPS).
from .errors import ConnectionLost


def read_once(s):
    """Read what the link has now and dispatch every complete packet. Returns the bytes
    read (0: nothing there)."""
    dec = s.decoder
    n = s.link.read_into(dec._buf, dec._end, dec.room(), 0)
    if n:
        dec.filled(n)
        pkt = s._pkt
        while dec.next(pkt) is not None:
            s._dispatch(pkt)
    return n


async def read_until(s, done, what):
    """Read and dispatch until done() is true (the caller bounds the time)."""
    link = s.link
    while not done():
        if not link.is_open:
            raise ConnectionLost("the link closed while waiting for the %s" % what)
        await link.readable()
        if read_once(s) and link.pending is not None:
            await link.drain()


async def open_session(s, host, port, ctx, server_hostname, cid, user, pw, keepalive, clean, info):
    """Connect s (TCP, TLS in the first write) and wait for CONNACK: session_present. The
    caller bounds the time and closes the link on failure."""
    from .mqttconn import connect_packet

    s.decoder.reset()
    lc = s.lc
    lc.keepalive_ms = keepalive * 1000
    lc.ping_at = None
    s._connack = None
    link = s.link
    conn, n = connect_packet(s, cid, user, pw, keepalive, clean)
    pw = None
    await link.open(host, port, ctx, server_hostname, info)
    s.write_from(conn, 0, n)
    conn = None
    await link.drain()  # the TLS handshake runs here
    await read_until(s, lambda: s._connack is not None, "CONNACK")
    session_present, rc = s._connack
    if rc != 0:
        from .errors import connack_error  # iothub.errstatus, on a refusal only

        raise connack_error(rc)
    return session_present


def subscribe_start(s, filters):
    """Write SUBSCRIBE (QoS 1) for filters; returns its packet id (s._subacks[pid] fills)."""
    from .mqttconn import encode_subscribe

    pid = s.next_pid()
    s._subacks[pid] = None
    try:
        s.write(encode_subscribe(s.tx_full(), pid, [(f, 1) for f in filters]))
    except BaseException:
        s._subacks.pop(pid, None)
        raise
    return pid


def subscribe_finish(s, pid, filters):
    """Check the SUBACK of subscribe_start's pid (ProtocolError when a filter is refused)."""
    from .mqttconn import check_suback

    check_suback(filters, s._subacks.pop(pid))


async def subscribe(s, filters):
    """SUBSCRIBE and read until its SUBACK (nobody else reading the link)."""
    pid = subscribe_start(s, filters)
    try:
        if s.link.pending is not None:
            await s.link.drain()
        await read_until(s, lambda: s._subacks.get(pid) is not None, "SUBACK")
    except BaseException:
        s._subacks.pop(pid, None)
        raise
    subscribe_finish(s, pid, filters)
