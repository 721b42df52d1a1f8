# The SDK's small error model (after h11 and azure-sdk-for-c):
#   ConfigError    local misuse or bad input from the application (a ValueError)
#   IoTHubError    anything that went wrong with the hub or the link; subclasses say what
# Messages name the problem and what was expected. They never contain key material,
# tokens or signatures.


class ConfigError(ValueError):
    """Bad input from the application: connection string, key, certificate, option."""


class IoTHubError(Exception):
    """Base class of every runtime error raised by the SDK."""


class TLSError(IoTHubError):
    """The TLS handshake failed or the firmware lacks a TLS capability."""


class ProtocolError(IoTHubError):
    """The peer broke the MQTT or IoT Hub protocol (malformed or unexpected packet)."""


class ConnectionLost(IoTHubError):
    """The link went down (closed by the peer, reset, or no PINGRESP in time)."""


class Timeout(IoTHubError):
    """A bounded wait ran out (CONNACK, PUBACK, twin or DPS response)."""


class ConnectionRefused(IoTHubError):
    """CONNACK with a non-zero return code. `code` is the MQTT 3.1.1 return code."""

    REASONS = {
        1: "unacceptable protocol version",
        2: "identifier rejected",
        3: "server unavailable",
        4: "bad user name or password",
        5: "not authorized",
    }

    def __init__(self, code):
        self.code = code
        super().__init__(
            "connection refused by the hub: CONNACK %d (%s)"
            % (code, self.REASONS.get(code, "unknown return code"))
        )

    @property
    def retriable(self):
        # 3 is transient; 4 and 5 need new credentials; 1 and 2 will not change on retry.
        return self.code == 3


class AuthenticationError(ConnectionRefused):
    """CONNACK 4 or 5: the hub refused the credentials. Not retried until they change."""


class ProxyError(IoTHubError):
    """The HTTP proxy refused the tunnel. `status` is its HTTP status (407: credentials
    wanted, 403: not allowed; 0 when the answer was not HTTP)."""

    def __init__(self, status, text):
        self.status = status
        super().__init__(text)


class StatusError(IoTHubError):
    """A twin/DPS response with status >= 400. 429 and 5xx are retriable."""

    def __init__(self, status, what="request", body=None, detail=""):
        self.status = status
        self.body = body
        super().__init__("%s failed with status %d%s" % (what, status, detail))

    @property
    def retriable(self):
        return self.status == 429 or self.status >= 500


def connack_error(code):
    """The exception for a refused CONNACK return code."""
    if code in (4, 5):
        return AuthenticationError(code)
    return ConnectionRefused(code)
