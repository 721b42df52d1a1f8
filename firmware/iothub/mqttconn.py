# MQTT 3.1.1 packets of connection setup (OASIS MQTT 3.1.1 sections 3.1, 3.8, 3.10):
# CONNECT, SUBSCRIBE and UNSUBSCRIBE (a handler set back to None), and the session steps that send them (open a link and wait for CONNACK;
# subscribe and wait for SUBACK). Loaded for each connection and dropped after it by
# DeviceClient: between connections only iothub.mqtt's publish/ack path stays in RAM.
from . import linkopen
from . import mqtt as m
from .clock import ticks_diff, ticks_ms
from .errors import ConfigError, ProtocolError


def _field(b, what):
    if len(b) > 65535:
        raise ConfigError("%s is longer than 65535 bytes" % what)
    return b


def encode_connect(
    buf, client_id, username=None, password=None, keepalive=240, clean_session=False
):
    """CONNECT (no will: IoT Hub ignores it). Returns the packet length."""
    cid = _field(m._b(client_id, "client id"), "client id")
    if not cid and not clean_session:
        raise ConfigError("an empty client id needs clean_session=True")
    if not isinstance(keepalive, int) or not 0 <= keepalive <= 65535:
        raise ConfigError("keepalive must be an int in 0..65535 seconds")
    flags = 0x02 if clean_session else 0
    rem = 10 + 2 + len(cid)
    if username is not None:
        username = _field(m._b(username, "username"), "username")
        flags |= 0x80
        rem += 2 + len(username)
    if password is not None:
        if username is None:
            raise ConfigError("MQTT 3.1.1 needs a username when a password is given")
        password = _field(m._b(password, "password"), "password")
        flags |= 0x40
        rem += 2 + len(password)
    n = 1 + m._rl_size(rem) + rem
    m._fits(buf, n, "CONNECT")
    buf[0] = 0x10
    i = m._put_rl(buf, 1, rem)
    i = m._put_str(buf, i, b"MQTT")
    buf[i] = 4  # protocol level 3.1.1
    buf[i + 1] = flags
    i = m._put_u16(buf, i + 2, keepalive)
    i = m._put_str(buf, i, cid)
    if username is not None:
        i = m._put_str(buf, i, username)
    if password is not None:
        i = m._put_str(buf, i, password)
    return i


def encode_subscribe(buf, pid, topics):
    """SUBSCRIBE with topics = [(filter, qos), ...] (qos 0 or 1)."""
    m._check_pid(pid)
    if not topics:
        raise ConfigError("SUBSCRIBE needs at least one topic filter")
    items = []
    rem = 2
    for it in topics:
        try:
            f, qos = it
        except (TypeError, ValueError):
            raise ConfigError("SUBSCRIBE topics must be (filter, qos) pairs")
        f = _field(m._b(f, "topic filter"), "topic filter")
        if not f:
            raise ConfigError("topic filter must not be empty")
        m._check_qos(qos, "SUBSCRIBE")
        items.append((f, qos))
        rem += 3 + len(f)
    n = 1 + m._rl_size(rem) + rem
    m._fits(buf, n, "SUBSCRIBE")
    buf[0] = 0x82
    i = m._put_rl(buf, 1, rem)
    i = m._put_u16(buf, i, pid)
    for f, qos in items:
        i = m._put_str(buf, i, f)
        buf[i] = qos
        i += 1
    return i


def encode_unsubscribe(buf, pid, filters):
    """UNSUBSCRIBE filters (a handler set back to None)."""
    m._check_pid(pid)
    if not filters:
        raise ConfigError("UNSUBSCRIBE needs at least one topic filter")
    items = []
    rem = 2
    for f in filters:
        f = _field(m._b(f, "topic filter"), "topic filter")
        if not f:
            raise ConfigError("topic filter must not be empty")
        items.append(f)
        rem += 2 + len(f)
    n = 1 + m._rl_size(rem) + rem
    m._fits(buf, n, "UNSUBSCRIBE")
    buf[0] = 0xA2
    i = m._put_rl(buf, 1, rem)
    i = m._put_u16(buf, i, pid)
    for f in items:
        i = m._put_str(buf, i, f)
    return i


def connect_packet(s, client_id, username, password, keepalive, clean):
    """(buffer, length) of Session s's CONNECT, encoded before its link opens (both
    clients): into the transmit buffer when it is full-size already, else into a buffer of
    its size (a client without handlers keeps only a few bytes of it), made below the TLS
    socket's buffers, not between them and the handshake's, and garbage after the write."""
    conn = s.tx
    n = 1 + 2 + 10 + 2 + 2 + len(client_id) + len(username) + 2 + len(password or "")
    if n > len(conn):
        conn = bytearray(n + 8)
    return conn, encode_connect(conn, client_id, username, password, keepalive, clean)


def open_session(
    s,
    host,
    port,
    ctx,
    server_hostname,
    client_id,
    username,
    password,
    keepalive,
    clean,
    deadline,
    info=None,
):
    """Connect Session s and wait for CONNACK. Returns session_present; raises on refusal."""
    s.link.close()
    s.decoder.reset()  # reuse its buffer: a fresh one per reconnect fragments the heap
    s.lc.keepalive_ms = keepalive * 1000
    s.lc.ping_at = None
    conn, n = connect_packet(s, client_id, username, password, keepalive, clean)
    linkopen.open(
        s.link, host, port, ctx, server_hostname, max(ticks_diff(deadline, ticks_ms()), 1), info
    )
    try:
        s.write_from(conn, 0, n)
        conn = None
        s._connack = None
        s.wait(lambda: s._connack is not None, deadline, "CONNACK")
        session_present, rc = s._connack
        if rc != 0:
            from .errors import connack_error  # iothub.errstatus, on a refusal only

            raise connack_error(rc)
    except BaseException:
        s.link.close()
        raise
    return session_present


def subscribe(s, filters, deadline):
    """SUBSCRIBE to filters (QoS 1) and wait for the SUBACK; every filter must be granted."""
    pid = s.next_pid()
    s._subacks[pid] = None
    try:
        s.write(encode_subscribe(s.tx_full(), pid, [(f, 1) for f in filters]))
        s.wait(lambda: s._subacks.get(pid) is not None, deadline, "SUBACK")
        granted = s._subacks[pid]
    finally:
        s._subacks.pop(pid, None)
    check_suback(filters, granted)


def check_suback(filters, granted):
    """Every filter must be granted (SUBACK return code 0x80: refused)."""
    if len(granted) != len(filters):
        raise ProtocolError(
            "SUBACK has %d return codes for %d topic filters" % (len(granted), len(filters))
        )
    for f, g in zip(filters, granted):
        if g == 0x80:
            raise ProtocolError("the hub refused the subscription to %s" % f)
