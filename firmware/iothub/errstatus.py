# Errors that carry a status from the other side: twin and DPS responses (StatusError),
# HTTP proxies (ProxyError) and refused CONNACKs (ConnectionRefused, AuthenticationError). Loaded the first time one is named (iothub.errors.__getattr__),
# then kept: the classes must stay the same objects for `except` clauses.
from .errors import IoTHubError, explained


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


class ConnectionRefused(IoTHubError):
    """CONNACK with a non-zero return code. `code` is the MQTT 3.1.1 return code."""

    def __init__(self, code):
        self.code = code
        super().__init__(explained("mqtterr", "error", 27, (code,)))  # 27: iothub.mqtterr._REFUSED

    @property
    def retriable(self):
        # 3 is transient; 4 and 5 need new credentials; 1 and 2 will not change on retry.
        return self.code == 3


class AuthenticationError(ConnectionRefused):
    """CONNACK 4 or 5: the hub refused the credentials. Not retried until they change."""


def connack_error(code):
    """The exception for a refused CONNACK return code."""
    return (AuthenticationError if code == 4 or code == 5 else ConnectionRefused)(code)
