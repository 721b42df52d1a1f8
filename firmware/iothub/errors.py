# The SDK's small error model (after h11 and azure-sdk-for-c):
#   ConfigError    local misuse or bad input from the application (a ValueError)
#   IoTHubError    anything that went wrong with the hub or the link; subclasses say what
# Messages name the problem and what was expected. They never contain key material,
# tokens or signatures.
#
# RAM: the classes every client can raise live here; StatusError and ProxyError (twin, DPS
# and proxy answers) and ConnectionRefused/AuthenticationError (a refused CONNACK) are in
# iothub.errstatus, loaded the first time one is named (connection code names them in its
# except clauses, which Python evaluates only when an exception gets there). Long
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


def explained(m, fn, *args):
    """iothub.<m>.<fn>(*args) from a module of explanations that is loaded for this one
    call and dropped again: a device that failed once does not keep the texts in RAM. A
    module that was loaded already stays (dropping it would load a second copy later)."""
    import sys

    name = "iothub." + m
    if name in sys.modules:
        return getattr(sys.modules[name], fn)(*args)
    try:
        return getattr(__import__(name, None, None, (fn,)), fn)(*args)
    finally:
        unload(m)


def unload(*names):
    """Drop package modules needed only to build or explain something (what was built keeps
    no reference to them): their bytecode is freed at the next collection. The one place
    that unloads; resident, so unloading never loads a module first."""
    import sys

    pkg = sys.modules.get("iothub")
    for n in names:
        if sys.modules.pop("iothub." + n, None) is not None and pkg is not None:
            try:
                delattr(pkg, n)
            except AttributeError:
                pass


def __getattr__(name):
    # StatusError, ProxyError, ConnectionRefused, AuthenticationError: defined once in
    # iothub.errstatus, which then stays loaded (an except clause needs the same class).
    if name in (
        "StatusError",
        "ProxyError",
        "ConnectionRefused",
        "AuthenticationError",
        "connack_error",
    ):
        from . import errstatus

        return getattr(errstatus, name)
    raise AttributeError(name)
