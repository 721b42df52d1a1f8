# The SDK's small error model (after h11 and azure-sdk-for-c):
#   ConfigError    local misuse or bad input from the application (a ValueError)
#   IoTHubError    anything that went wrong with the hub or the link; subclasses say what
# Messages name the problem and what was expected. They never contain key material,
# tokens or signatures.
#
# RAM: the classes every client can raise live here; StatusError and ProxyError (twin, DPS
# and proxy answers) are in iothub.errstatus, loaded the first time one is named. Long
# explanations live in cold modules (explained() loads one for a single message).


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


def explained(m, fn, *args):
    """iothub.<m>.<fn>(*args) from a module of explanations that is loaded for this one
    call and dropped again: a device that failed once does not keep the texts in RAM."""
    import sys

    try:
        return getattr(__import__("iothub." + m, None, None, (fn,)), fn)(*args)
    finally:
        sys.modules.pop("iothub." + m, None)
        try:
            delattr(sys.modules["iothub"], m)
        except (AttributeError, KeyError):
            pass


def __getattr__(name):
    # StatusError, ProxyError: defined once in iothub.errstatus, which then stays loaded.
    if name == "StatusError" or name == "ProxyError":
        from . import errstatus

        return getattr(errstatus, name)
    raise AttributeError(name)
