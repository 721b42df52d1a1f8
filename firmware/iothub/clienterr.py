# What the resident client, its session and its link say when a send, a wait or the link
# fails, in words. Those modules stay loaded while a client runs, so they keep a number per
# message and ask error(code, args) for the exception only when it is raised
# (errors.explained: this module is loaded for that one message and dropped again).
from .errors import ConnectionLost, IoTHubError, Timeout

# Codes 0-9 are ConnectionLost, 10-13 Timeout, 14-15 IoTHubError.
_TEXTS = (
    # iothub.client
    "not connected (QoS 0 messages are not queued)",
    "not connected (auto_reconnect is off: nothing was queued)",
    "disconnect() was called: message %d stays queued until connect()",
    "the link failed before the PUBACK of message %d, which is larger than queue_bytes and "
    "was not queued: send it again",
    "%s: message %d stays queued",
    "link closed",
    # iothub.transport
    "not connected",
    "write failed: %s",
    "connection reset by the hub",
    "connection closed by the hub",
    # Timeout: iothub.client, iothub.transport, iothub.session
    "no PUBACK for message %d within %d ms",
    "no PUBACK for message %d within %d ms (it stays queued)",
    "write stalled for %d ms",
    "no %s from the hub in time",
    # IoTHubError: iothub.session, iothub.clientbase
    "no free MQTT packet id",
    "the offline queue is full (%d messages, policy %s)",
)


def error(code, args):
    cls = ConnectionLost if code < 10 else Timeout if code < 14 else IoTHubError
    return cls(_TEXTS[code] % args)
