# Errors that carry a status from the other side: twin and DPS responses (StatusError) and
# HTTP proxies (ProxyError). Loaded the first time one is named (iothub.errors.__getattr__),
# then kept: the classes must stay the same objects for `except` clauses.
from .errors import IoTHubError


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
