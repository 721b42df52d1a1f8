# DeviceClient's cold paths: construction from a connection string, credentials and the
# TLS context, opening a connection (SAS token, CONNECT, subscriptions, redelivery), and
# the rare sends. Loaded when one of them runs and unloaded again after connect(), with
# the modules only they need (sas, tlsconf, connstr): between connections a
# telemetry-only device keeps just the send/receive path in RAM. A reconnect loads them
# again from flash (a few ms; frozen firmware keeps them in flash anyway).

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


import gc
import sys

from . import transitions
from .clock import ticks_add, ticks_ms
from .errors import AuthenticationError, ConfigError, ConnectionLost, IoTHubError, TLSError

_RENEW_PERCENT = const(80)  # renew the SAS token at 80 % of its lifetime (C SDK)


_MAX_KEEPALIVE = const(1177)  # hub timeout is 1.5 x keepalive, capped at 1767 s


def init(c, hostname, device_id, options):
    # DeviceClient's keyword options and their defaults (a local table: every global name
    # of a loaded module is interned for good, and this one is read once).
    defaults = {
        "module_id": None,
        "shared_access_key": None,
        "shared_access_key_name": None,
        "cert": None,
        "key": None,
        "tls": "rsa",
        "roots": None,
        "max_fragment_length": None,
        "host": None,
        "port": None,  # 8883, or 443 with transport="websockets"
        "transport": "mqtt",
        "proxy": None,
        "model_id": None,
        "keepalive": 240,
        "sas_ttl": 3600,
        "clean_session": False,
        "timeout_ms": 30000,
        "max_packet": 66560,  # IoT Hub's largest C2D message (64 KB) plus topic and header
        "txbuf": 1024,
        "auto_reconnect": True,
        "backoff": None,
        "queue_size": 16,
        "queue_bytes": 4096,
        "queue_policy": "drop-oldest",
        "ssl_context": None,
        "log": None,
    }
    o = defaults
    for k in options:
        if k not in o:
            raise TypeError("DeviceClient got an unexpected keyword argument %r" % (k,))
        o[k] = options[k]
    if not hostname or not device_id:
        raise ConfigError("hostname and device_id are required")
    ka = o["keepalive"]
    if not isinstance(ka, int) or not 0 < ka <= _MAX_KEEPALIVE:
        raise ConfigError(
            "keepalive must be 1..%d s (IoT Hub limit), got %r" % (_MAX_KEEPALIVE, ka)
        )
    if not isinstance(o["sas_ttl"], int) or o["sas_ttl"] < 10:
        raise ConfigError("sas_ttl must be an int of at least 10 s, got %r" % (o["sas_ttl"],))
    from . import topics
    from .outbox import Outbox
    from .session import Session

    module_id = o["module_id"]
    c.hostname = hostname
    c.device_id = device_id
    c.module_id = module_id
    # Checked now (a "/" in an id would break every topic) and kept: built once.
    c._cid = topics.client_id(device_id, module_id)
    c._user = topics.username(hostname, device_id, module_id, o["model_id"])
    c.host = o["host"] or hostname
    c.port = o["port"] or (443 if o["transport"] == "websockets" else 8883)
    c.model_id = o["model_id"]
    c.keepalive = ka
    c.sas_ttl = o["sas_ttl"]
    c.clean_session = o["clean_session"]
    c.timeout_ms = 30000  # what timeout_ms=None stands for
    c.timeout_ms = c._timeout(o["timeout_ms"])
    c.auto_reconnect = o["auto_reconnect"]
    c._tls_profile = o["tls"]
    c._roots = o["roots"]
    c._mfl = o["max_fragment_length"]
    c._log = o["log"]
    c._ctx = None
    c._tlsinfo = None
    ctx = o["ssl_context"]
    if ctx is not None:
        # An application's own context is accepted only if it verifies the server.
        try:
            import tls
        except ImportError:
            tls = None
        if getattr(ctx, "verify_mode", None) != getattr(tls, "CERT_REQUIRED", 2):
            raise ConfigError(
                "ssl_context must verify the hub's certificate (verify_mode CERT_REQUIRED); "
                "iothub never connects without verification"
            )
        c._ctx = ctx
        c._tlsinfo = getattr(ctx, "iothub_info", None)
    set_credentials(c, o["shared_access_key"], o["shared_access_key_name"], o["cert"], o["key"])
    s = Session(o["txbuf"], o["max_packet"])
    lc = c._lc = s.lc  # the lifecycle core: every decision about the connection
    lc.timeout_ms = c.timeout_ms
    lc.auto = c.auto_reconnect
    lc.backoff = o["backoff"]  # iothub.backoff.Backoff() made at the first failure
    s.link.use(o["transport"], o["proxy"], o["txbuf"], o["max_packet"])
    s.on_publish = c._on_publish
    s.on_puback = c._on_puback
    s.pid_in_use = c._pid_in_use
    s.on_drop = c._on_drop
    c._s = s
    c._outbox = Outbox(o["queue_size"], o["queue_policy"], o["queue_bytes"])
    # The TLS context is made now, right after the client's large buffers (those first, so
    # they get contiguous blocks), while the heap is still nearly empty: it is long-lived
    # (better low in the heap than between later objects), and building it then never adds
    # to what a connect needs at once. On a Pico W-like heap this decides whether the first
    # handshake finds its 6 KB block at 64 KiB. Bad roots, certificates or keys fail here.
    gc.collect()  # the garbage of parsing the options and building the buffers
    try:
        context(c)
    except TLSError:
        pass  # no tls module (a host-side hand-over of DPS results): made at connect()
    unload("tlsconf", "roots", "pem", "linkopen")
    c._direct = 0  # packet id of an unqueued (larger than the ring) message in flight
    c._t0 = topics.telemetry_topic(device_id, module_id).encode()
    c._tkey = None  # what the cached telemetry topic was built from
    c._topic = None
    c._renew_unix = 0  # Unix time the SAS token is due for renewal
    c._handlers = {}
    c._tw = None  # twin state (iothub.twin), made on first use
    c.on_connection_state = None
    c.on_error = None
    c.stats = {"connects": 0, "reconnects": 0, "renewals": 0, "redelivered": 0, "poison": 0}


def unload(*names):
    # Drop package modules needed only to build something (what was built keeps no
    # reference to them): their bytecode is freed at the next collection.
    pkg = sys.modules.get("iothub")
    for n in names:
        if sys.modules.pop("iothub." + n, None) is not None and pkg is not None:
            try:
                delattr(pkg, n)
            except AttributeError:
                pass


def connected():
    # After a successful connect the connection-time code goes until the next connection
    # (both clients). After a failure it stays loaded for the retries: reloading it for
    # every attempt of a long outage would churn the heap.
    unload(
        "clientx",
        "credentials",
        "mqttconn",
        "routes",
        "sas",
        "pct",
        "tlsconf",
        "tlsprofile",
        "connstr",
        "transitions",
        "linkopen",
    )


def connection_string(cls, cs, options):
    from .connstr import parse_connection_string

    cs = parse_connection_string(cs)
    parse_connection_string = None
    unload("connstr")  # before the client's buffers and TLS context are made
    if cs.get("x509"):
        raise ConfigError(
            "this connection string says x509=true: use DeviceClient.from_x509(...) "
            "with the device certificate and key"
        )
    if cs.get("GatewayHostName") and "host" not in options:
        options["host"] = cs["GatewayHostName"]
    return cls(
        cs["HostName"],
        cs["DeviceId"],
        module_id=cs.get("ModuleId"),
        shared_access_key=cs["SharedAccessKey"],
        shared_access_key_name=cs.get("SharedAccessKeyName"),
        **options,
    )


def set_credentials(c, shared_access_key, name, cert, key):
    if shared_access_key is not None and cert is not None:
        raise ConfigError("give either a shared access key or an X.509 certificate, not both")
    if shared_access_key is None and cert is None and c._ctx is None:
        raise ConfigError(
            "no credentials: give a shared access key or an X.509 certificate and key"
        )
    if isinstance(shared_access_key, str):
        from .sas import decode_key

        shared_access_key = decode_key(shared_access_key)
        decode_key = None
        unload("sas")  # until a connect signs a token with it
    # The TLS context holds the client certificate, never the SAS key: it is built again
    # (at the next connect) only when a certificate comes or goes. Rebuilding it for a new
    # key would cost a Pico W its largest free block just before the next handshake.
    rebuild = cert is not None or getattr(c, "_cert", None) is not None
    c._key = shared_access_key
    c._key_name = name
    c._cert = cert
    c._pkey = key
    if rebuild:
        c._ctx = None


def update_credentials(c, connection_string, shared_access_key, cert, key):
    if connection_string is not None:
        from .connstr import parse_connection_string

        cs = parse_connection_string(connection_string)
        if cs["HostName"] != c.hostname or cs["DeviceId"] != c.device_id:
            raise ConfigError("the new connection string is for another hub or device")
        shared_access_key = cs.get("SharedAccessKey")
    set_credentials(c, shared_access_key, c._key_name, cert, key)
    c._log_line(1, "credentials replaced; reconnecting")
    transitions.credentials_changed(c._lc, ticks_ms())
    if c._s.is_open:
        c._drop("credentials changed", clean=True)
    unload("connstr", "sas")


def context(c):
    if c._ctx is None:
        from .tlsconf import configure

        c._ctx, c._tlsinfo = configure(
            c._tls_profile, c._roots, c._mfl, False, c._cert, c._pkey, True, c._log
        )
    return c._ctx


def password(c):
    if c._cert is not None:
        transitions.token(c._lc, ticks_ms(), None)
        return None
    from .credentials import sas_password
    from .sas import device_resource_uri

    ttl = c.sas_ttl
    token, now, _ = sas_password(
        device_resource_uri(c.hostname, c.device_id, c.module_id), c._key, ttl, c._key_name
    )
    # Renewal is timed with ticks: the hot path never reads the wall clock (a float, or
    # a big int on 32-bit boards, allocates).
    c._renew_unix = now + ttl * _RENEW_PERCENT // 100
    transitions.token(c._lc, ticks_ms(), ttl)
    return token


def filters(c, name=None):
    """Topic filters for the handlers set (or for the one named), [] when none."""
    h = c._handlers
    tw = c._tw
    want_twin = (
        name == "twin" or h.get("desired") or h.get("writable") or (tw is not None and tw.want)
    )
    methods = h.get("method") or h.get("command")
    if not (h.get("message") or methods or want_twin):
        return []
    from . import routes

    f = []
    if name in (None, "message") and h.get("message"):
        if c.module_id:
            f.append(routes.module_inputs_subscribe_topic(c.device_id, c.module_id))
        else:
            f.append(routes.c2d_subscribe_topic(c.device_id))
    if name in (None, "method", "command") and methods:
        f.append(routes.METHODS_SUB)
    if name in (None, "desired", "writable", "twin") and want_twin:
        f.append(routes.TWIN_RES_SUB)
        f.append(routes.TWIN_DESIRED_SUB)
    return f


def handler_changed(c, name, set_):
    """A handler was set (subscribe its topics) or set to None (unsubscribe them), while
    connected. The twin's responses stay subscribed while get_twin()/update_reported() use
    them."""
    if set_:
        subscribe(c, filters(c, name))
        return
    from . import routes

    if name == "message":
        f = [
            routes.module_inputs_subscribe_topic(c.device_id, c.module_id)
            if c.module_id
            else routes.c2d_subscribe_topic(c.device_id)
        ]
    elif name in ("method", "command"):
        if c._handlers.get("method") or c._handlers.get("command"):
            return  # the other one still answers on the methods topic
        f = [routes.METHODS_SUB]
    elif c._handlers.get("desired") or c._handlers.get("writable"):
        return  # the other one still reads desired patches
    elif c._tw is not None and c._tw.want:
        f = [routes.TWIN_DESIRED_SUB]
    else:
        f = [routes.TWIN_RES_SUB, routes.TWIN_DESIRED_SUB]
    # Not waiting for UNSUBACK: a message the hub sends meanwhile finds no handler (a method
    # gets 404, a C2D message is acknowledged and dropped), as after it.
    from .mqttconn import encode_unsubscribe

    s = c._s
    try:
        s.write(encode_unsubscribe(s.tx, s.next_pid(), f))
    except ConnectionLost as e:
        c._lost(e)
        return
    c._log_line(2, "unsubscribed %s" % (f,))


def subscribe(c, filters, deadline=None):
    if deadline is None:
        deadline = ticks_add(ticks_ms(), c.timeout_ms)
    c._s.subscribe(filters, deadline)
    c._log_line(2, "subscribed %s" % (filters,))


def connect(c, deadline):
    """Open the link (token, context, CONNECT/CONNACK), subscribe, redeliver. Returns
    session_present; raises on failure with the link closed."""
    lc = c._lc
    transitions.connecting(lc)
    pw = password(c)
    ctx = context(c)  # made at construction; again only after new credentials
    unload("tlsconf", "roots", "pem")
    c._log_line(1, "connecting to %s:%d as %s" % (c.host, c.port, c._cid))
    s = c._s
    session_present = s.open(
        c.host,
        c.port,
        ctx,
        c.hostname,
        c._cid,
        c._user,
        pw,
        c.keepalive,
        c.clean_session,
        deadline,
        c._tlsinfo,
    )
    pw = None
    try:
        transitions.opened(lc, ticks_ms())
        c.stats["connects"] += 1
        f = filters(c)
        if f:
            s.subscribe(f, deadline)
        # Everything still unacknowledged goes out again in order, each with the DUP flag
        # set in place if it was written before.
        c.stats["redelivered"] += c._outbox.redeliver(s.write_from, ticks_ms())
    except BaseException:
        s.close()
        lc.state = "disconnected"
        raise
    c._log_line(1, "connected (session present: %s, %s)" % (session_present, s.link.cipher()))
    return session_present


def send_unqueued(c, topic, payload, n, block, timeout_ms):
    # A message larger than the outbox ring: sent straight from the payload, never queued.
    if not block:
        raise ConfigError(
            "a message of %d bytes does not fit the queue (queue_bytes=%d): send it with "
            "block=True while connected, or give the client a larger queue_bytes"
            % (n, len(c._outbox.buf))
        )
    if not c.is_connected:
        raise ConnectionLost(
            "not connected, and a message of %d bytes is larger than the queue "
            "(queue_bytes=%d): nothing was queued" % (n, len(c._outbox.buf))
        )
    pid = c._s.next_pid()
    c._direct = pid
    try:
        try:
            c._s.publish(topic, payload, 1, pid)
        except ConnectionLost as e:
            c._lost(e)
        c._await(pid, timeout_ms)
    finally:
        c._direct = 0
    return pid


def props_size(properties, *values):
    n = 0
    if properties:
        items = properties.items() if isinstance(properties, dict) else properties
        for k, v in items:
            n += len(str(k)) + (len(str(v)) if v is not None else 0)
    for v in values:
        if v:
            n += len(v)
    return n


# ---- failures and reconnects: acting on the lifecycle core's decisions (client._step) ------


def act(c, a, timeout_ms):
    """Do what lifecycle.next() decided (anything but WAIT)."""
    lc = c._lc
    if a == 3:  # DEAD
        c._lost(ConnectionLost(lc.why))
        if not c.auto_reconnect:
            raise ConnectionLost(lc.why)
    elif a == 5:  # RESYNC
        c._twin().resync(max(min(timeout_ms, c.timeout_ms), 1))
    elif a == 4:  # RENEW: reconnect with a fresh SAS token, 80 % into the current one's life
        from .clock import unix_time

        left = c._renew_unix - unix_time()
        if left > 0:  # a token longer than the ticks span: wait on
            transitions.renew_later(lc, ticks_ms(), left * 1000)
            return
        # MQTT 3.1.1 has no re-authentication: reconnect with a fresh token. The session
        # (clean_session=False) and the outbox survive; subscriptions are renewed anyway.
        c.stats["renewals"] += 1
        drop(c, "SAS token renewal", clean=True)
        transitions.renewing(lc)
    if a != 1 and a != 4:
        return  # STOP: nothing to do until the application acts (poll() waits, a send() gives up)
    # CONNECT, or RENEW's reconnect.
    # Collect first: what this attempt loads for good (mqttconn, credentials, sas, after an
    # unload) then goes into the lowest free blocks rather than between the garbage of an
    # outage, and the handshake finds the largest contiguous block the heap can offer.
    gc.collect()
    try:
        c.connect()
    except AuthenticationError as e:
        transitions.failed(lc, ticks_ms(), True)
        c._log_line(0, str(e) + "; not retrying until the credentials change")
        c._notify("auth_failed", e.code)
    except (IoTHubError, OSError, MemoryError) as e:
        # MemoryError: the heap is too fragmented for a handshake right now; the link's
        # buffers are released, so back off and try again rather than end the loop.
        why = "out of memory" if isinstance(e, MemoryError) else e
        c._log_line(1, "connect failed: %s" % (why,))
        retry(c, transitions.failed(lc, ticks_ms()))
    else:
        c.stats["reconnects"] += 1
        return
    if a == 4 and not c.auto_reconnect:
        raise ConnectionLost("SAS token renewal: reconnect failed")


def drop(c, reason, clean=False):
    c._s.close(clean)
    lc = c._lc
    was = lc.state
    if was == "connected":
        lc.state = "disconnected"
    c._log_line(1, "disconnected: %s" % reason)
    if was == "connected":
        c._notify("disconnected", reason)


def lost(c, err):
    drop(c, str(err))
    retry(c, transitions.lost(c._lc, ticks_ms()))


def retry(c, ms):
    if ms >= 0:
        c._log_line(1, "retrying in %d ms" % ms)
        c._notify("retrying", ms)
