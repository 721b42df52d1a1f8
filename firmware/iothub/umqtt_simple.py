# Everything micropython-lib's umqtt.simple.MQTTClient needs to talk to IoT Hub, for users
# who keep that client instead of DeviceClient:
#
#   from umqtt.simple import MQTTClient
#   from iothub.umqtt_simple import from_connection_string
#   hub = from_connection_string(CS, tls="rsa")
#   c = MQTTClient(**hub.kwargs())        # client id, server, port, user, password, keepalive, ssl
#   c.connect(clean_session=False)        # False: the hub keeps C2D messages while offline
#   c.publish(hub.telemetry_topic({"sensor": "bme280"}), b'{"t": 21.5}', qos=1)
#
# It uses only the pure core (connstr, sas, topics), the clock and the TLS profile: not
# DeviceClient, its session, MQTT codec or transport. What it leaves to the application is what
# DeviceClient would do: reconnect with backoff, redeliver unacknowledged messages, renew the SAS
# token (reconnect with renew() before `expiry`), keepalive pings (umqtt.simple sends none on
# its own: call ping() within `keepalive` seconds).

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from . import topics
from .clock import require_valid_clock, unix_time
from .errors import ConfigError
from .sas import device_resource_uri, sas_token

# IoT Hub closes links idle for 1.5 x keepalive, at most 1767 s (docs/protocol.md 2.3)
_KEEPALIVE_MAX = const(1177)


class Settings:
    """Connection settings for one device (or module) identity; see kwargs()."""

    def __init__(self, hostname, device_id, module_id, host, port, keepalive, model_id):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("port must be an int in 1..65535")
        if not isinstance(keepalive, int) or not 0 < keepalive <= _KEEPALIVE_MAX:
            raise ConfigError("keepalive must be 1..%d s (IoT Hub's limit)" % _KEEPALIVE_MAX)
        self.hostname = hostname
        self.device_id = device_id
        self.module_id = module_id
        self.client_id = topics.client_id(device_id, module_id)
        self.user = topics.username(hostname, device_id, module_id, model_id)
        # umqtt.simple dials `server` and also passes it as server_hostname (SNI and the
        # certificate check), so a gateway or emulator must present a certificate for it.
        self.server = host or hostname
        self.port = port
        self.keepalive = keepalive
        self.ssl = None  # set by from_connection_string() / from_x509(), after the checks
        self.password = ""  # X.509: empty password
        self.expiry = None  # X.509: no token to renew
        self._key = None
        self._key_name = None
        self._ttl = 0

    def kwargs(self):
        """Keyword arguments for umqtt.simple.MQTTClient(**kwargs)."""
        return {
            "client_id": self.client_id,
            "server": self.server,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "keepalive": self.keepalive,
            "ssl": self.ssl,
        }

    def renew(self, now=None):
        """Sign a fresh SAS password valid for the TTL from now (Unix seconds); returns it.
        Reconnect with it: MQTT 3.1.1 has no re-authentication on a live connection."""
        if self._key is None:
            raise ConfigError("X.509 settings have no SAS token to renew")
        now = require_valid_clock(unix_time() if now is None else now)
        self.expiry = now + self._ttl
        uri = device_resource_uri(self.hostname, self.device_id, self.module_id)
        self.password = sas_token(uri, self._key, self.expiry, self._key_name)
        return self.password

    def renew_due(self, now=None):
        """True once 80 % of the token's lifetime has passed (the Azure C SDK's rule)."""
        if self.expiry is None:
            return False
        now = unix_time() if now is None else now
        return now >= self.expiry - self._ttl // 5

    def telemetry_topic(self, properties=None, **system):
        """devices/{d}[/modules/{m}]/messages/events/{property bag}. system: message_id,
        correlation_id, user_id, content_type, content_encoding."""
        return topics.telemetry_topic(self.device_id, self.module_id, properties, **system)

    def c2d_topic(self):
        """The filter to subscribe to for cloud-to-device messages (devices only)."""
        if self.module_id is not None:
            raise ConfigError("modules receive no C2D messages (they have inputs)")
        return "devices/%s/messages/devicebound/#" % self.device_id

    def parse_c2d(self, topic):
        """Decoded properties of a C2D topic (bytes or str), or None if it is not one."""
        from .inbound import parse

        if isinstance(topic, (bytes, bytearray)):
            topic = bytes(topic).decode()
        r = parse(topic, self.device_id)
        return r[1] if r is not None and r[0] == "message" else None

    def __repr__(self):  # never the password
        return "<iothub umqtt settings %s on %s:%d>" % (self.client_id, self.server, self.port)


def _context(tls, roots, cert, key, max_fragment_length):
    from .tlsprofile import tls_context

    return tls_context(
        tls, roots=roots, cert=cert, key=key, max_fragment_length=max_fragment_length
    )


def from_connection_string(
    cs,
    *,
    tls="rsa",
    roots=None,
    host=None,
    port=8883,
    keepalive=240,
    sas_ttl=3600,
    model_id=None,
    max_fragment_length=None,
    now=None,
):
    """Settings from a device or module connection string with SharedAccessKey; the SAS
    password is signed at once, valid for sas_ttl seconds (needs a set clock)."""
    from .connstr import parse_connection_string

    p = parse_connection_string(cs)
    if p["x509"]:
        raise ConfigError("x509=true connection string: use from_x509() with the certificate")
    if not isinstance(sas_ttl, int) or sas_ttl < 60:
        raise ConfigError("sas_ttl must be an int of at least 60 s")
    s = Settings(
        p["HostName"],
        p["DeviceId"],
        p.get("ModuleId"),
        host or p.get("GatewayHostName"),
        port,
        keepalive,
        model_id,
    )
    s.ssl = _context(tls, roots, None, None, max_fragment_length)
    s._key = p["SharedAccessKey"]
    s._key_name = p.get("SharedAccessKeyName")
    s._ttl = sas_ttl
    s.renew(now)
    return s


def from_x509(
    hostname,
    device_id,
    cert,
    key,
    *,
    module_id=None,
    tls="rsa",
    roots=None,
    host=None,
    port=8883,
    keepalive=240,
    model_id=None,
    max_fragment_length=None,
):
    """Settings for an X.509 identity: the certificate and key (PEM or DER) go into the TLS
    context (mutual TLS); the password is empty."""
    s = Settings(hostname, device_id, module_id, host, port, keepalive, model_id)
    s.ssl = _context(tls, roots, cert, key, max_fragment_length)
    return s
