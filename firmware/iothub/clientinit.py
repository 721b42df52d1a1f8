# DeviceClient's construction (both clients): the options, the credentials, the session
# and outbox buffers and the TLS context, from keyword options or a connection string; and
# replacing the credentials of a live client. Runs once: the module unloads itself with
# the ones it loaded (connstr, sas, tlsconf) when the client is made, so that neither the
# construction nor a connect (iothub.clientx) holds the other's code.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .clock import ticks_ms
from .errors import ConfigError, unload

_MAX_KEEPALIVE = const(1177)  # hub timeout is 1.5 x keepalive, capped at 1767 s


def _options(args):
    # DeviceClient's keyword options with their defaults (a table made per call: every
    # global name of a loaded module is interned for good, and this one is read once).
    o = {
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
    for k in args:
        if k not in o:
            raise TypeError("DeviceClient got an unexpected keyword argument %r" % (k,))
        o[k] = args[k]
    return o


def init(c, hostname, device_id, args):
    o = _options(args)
    if not hostname or not device_id:
        raise ConfigError("hostname and device_id are required")
    ka = o["keepalive"]
    if not isinstance(ka, int) or not 0 < ka <= _MAX_KEEPALIVE:
        raise ConfigError(
            "keepalive must be 1..%d s (IoT Hub limit), got %r" % (_MAX_KEEPALIVE, ka)
        )
    if not isinstance(o["sas_ttl"], int) or o["sas_ttl"] < 10:
        raise ConfigError("sas_ttl must be an int of at least 10 s, got %r" % (o["sas_ttl"],))
    tb = o["txbuf"]  # (made when first needed: checked now, not at the first QoS 0 send)
    if not isinstance(tb, int) or isinstance(tb, bool) or tb < 64:
        raise ConfigError("txbuf must be an int >= 64, got %r" % (tb,))
    from . import topics
    from .session import Session

    global _pre
    c._outbox, bare = _pre or _blocks(o)
    _pre = None
    module_id = o["module_id"]
    c.hostname = hostname
    c.device_id = device_id
    c.module_id = module_id
    # Checked now (a "/" in an id would break every topic) and kept: built once.
    from .topicsx import client_id, username

    c._cid = client_id(device_id, module_id)
    c._user = username(hostname, device_id, module_id, o["model_id"])
    client_id = username = None
    unload("topicsx")
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
    if o["transport"] != "mqtt" or o["proxy"] is not None:  # (a new Link is for MQTT)
        from .linkopen import use

        use(s.link, o["transport"], o["proxy"], o["txbuf"], o["max_packet"])
        use = None
    s.owner = c
    c._s = s
    c._direct = 0  # packet id of an unqueued (larger than the ring) message in flight
    c._t0 = topics.telemetry_topic(device_id, module_id).encode()
    c._tkey = None  # what the cached telemetry topic was built from, and the topic
    c._renew_unix = 0  # Unix time the SAS token is due for renewal
    c._handlers = {}
    c._tw = None  # twin state (iothub.inbound.Twin), made on first use
    c.on_connection_state = None
    c.on_error = None
    c.stats = {"connects": 0, "reconnects": 0, "renewals": 0, "redelivered": 0, "poison": 0}
    unload("linkopen", "clientinit")
    # The caller configures the TLS context (ClientBase.__init__) once this module's code
    # is freed: tlsconf, the roots and a client certificate then load into its place, not
    # on top of it (the peak of a construction).
    return bare if c._ctx is None else False


_pre = None  # (outbox, bare TLS context) that connection_string() made before parsing


def _blocks(o):
    # o: _options(). The client's two largest blocks first, while the top of the heap is still free: the
    # outbox ring (queue_bytes) and the TLS context object (3 KB on a 64-bit port; mbedTLS's
    # own allocations come when it is configured). Made after code that is loaded and
    # dropped (connstr, topicsx, saskey), they needed blocks its holes could not give (the
    # demo's smallest heap, 64-bit port, .mpy). On a firmware without tls.SSLContext,
    # tlsconf says what is missing.
    from .outbox import Outbox

    ob = Outbox(o["queue_size"], o["queue_policy"], o["queue_bytes"])
    bare = None
    if o["ssl_context"] is None:
        try:
            import tls

            bare = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        except MemoryError:
            raise  # no room for the context: said now, not again by tlsconf
        except Exception:  # no tls (on CPython a script named tls.py may shadow it)
            pass
    return ob, bare


def connection_string(cls, cs, args):
    global _pre
    _pre = _blocks(_options(args))  # before the parsing's code and garbage
    try:
        from .connstr import parse_connection_string

        cs = parse_connection_string(cs)
        parse_connection_string = None
        unload("connstr")
        if cs.get("x509"):
            raise ConfigError(
                "this connection string says x509=true: use DeviceClient.from_x509(...) "
                "with the device certificate and key"
            )
        if cs.get("GatewayHostName") and "host" not in args:
            args["host"] = cs["GatewayHostName"]
        return cls(
            cs["HostName"],
            cs["DeviceId"],
            module_id=cs.get("ModuleId"),
            shared_access_key=cs["SharedAccessKey"],
            shared_access_key_name=cs.get("SharedAccessKeyName"),
            **args,
        )
    finally:
        _pre = None  # (init took them; after a failure they go)


def set_credentials(c, shared_access_key, name, cert, key):
    if shared_access_key is not None and cert is not None:
        raise ConfigError("give either a shared access key or an X.509 certificate, not both")
    if shared_access_key is None and cert is None and c._ctx is None:
        raise ConfigError(
            "no credentials: give a shared access key or an X.509 certificate and key"
        )
    if isinstance(shared_access_key, str):
        from .saskey import decode_key

        shared_access_key = decode_key(shared_access_key)
        decode_key = None
        unload("saskey", "sas")  # a connect signs its token with sas alone
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
    from .transitions import credentials_changed

    credentials_changed(c._lc, ticks_ms())
    if c._s.link.is_open:
        f = getattr(c, "_drop", None)  # the asyncio client's; the blocking one's is clientrun's
        if f is None:
            from .clientrun import drop

            drop(c, "credentials changed", True)
        else:
            f("credentials changed", clean=True)
    unload("connstr", "saskey", "sas", "clientinit")
