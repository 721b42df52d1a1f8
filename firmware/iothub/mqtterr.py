# What went wrong in MQTT encoding or decoding, in words. iothub.mqtt keeps only the checks
# and a number per message; the texts are here, loaded for one message when something is
# wrong (iothub.errors.explained) and dropped again. The numbers are iothub.mqtt's _E_*
# constants (ConfigError below _E_PROTOCOL, ProtocolError from it on), then three requests
# that are not a message of the table: a packet name, a CONNACK refusal, a bad header.
from .errors import ConfigError, ProtocolError

_E_PROTOCOL = 14
_NAME = 26  # args (packet type,): its name
_REFUSED = 27  # args (CONNACK return code,): the text of ConnectionRefused
_HEADER = 28  # args (first byte, total size, max_packet): the ProtocolError
# 29..31: iothub.session's ProtocolErrors, args (packet type,) where a %s names it
_SESSION = (
    "%s before CONNACK",
    "a second CONNACK on an established connection",
    "unexpected %s packet from the hub",
)
_TEXTS = (
    "%s must be str or bytes",
    "packet too large for MQTT: remaining length %d > %d",
    "%s needs %d bytes, the buffer has %d",
    "packet id must be an int in 1..65535",
    "%s: QoS 2 is not supported (IoT Hub closes the connection)",
    "%s: QoS must be 0 or 1",
    "topic must not be empty",
    "a PUBLISH topic must not contain the wildcards # or +",
    "topic is longer than 65535 bytes",
    "DUP must be 0 for QoS 0 (MQTT-3.3.1-2)",
    "payload length must be a non-negative int",
    "packet data was overwritten: read .topic/.payload before feed()",
    "max_packet must be an int >= 2",
    "bufsize must be an int >= 8",
    # ProtocolError
    "MQTT decoder stopped after an earlier error: %s",
    "malformed remaining length (more than 4 bytes)",
    "%s remaining length %d, expected 2",
    "%s with packet id 0",
    "CONNACK acknowledge flags 0x%02x: reserved bits set",
    "SUBACK remaining length %d, expected at least 3",
    "SUBACK return code 0x%02x is invalid",
    "PINGRESP remaining length %d, expected 0",
    "PUBLISH truncated: no room for the topic length",
    "PUBLISH truncated: topic length %d exceeds the packet",
    "PUBLISH truncated: no room for the packet id",
    "PUBLISH QoS %d with packet id 0",
)

_NAMES = (
    "reserved(0)",
    "CONNECT",
    "CONNACK",
    "PUBLISH",
    "PUBACK",
    "PUBREC",
    "PUBREL",
    "PUBCOMP",
    "SUBSCRIBE",
    "SUBACK",
    "UNSUBSCRIBE",
    "UNSUBACK",
    "PINGREQ",
    "PINGRESP",
    "DISCONNECT",
    "reserved(15)",
)

_REASONS = (
    "unacceptable protocol version",
    "identifier rejected",
    "server unavailable",
    "bad user name or password",
    "not authorized",
)


def error(code, args):
    """The exception for message `code` formatted with args (or what _NAME, _REFUSED and
    _HEADER ask for)."""
    if code == _NAME:
        return _NAMES[args[0] & 15]
    if code == _REFUSED:
        rc = args[0]
        why = _REASONS[rc - 1] if 1 <= rc <= 5 else "unknown return code"
        return "connection refused by the hub: CONNACK %d (%s)" % (rc, why)
    if code == _HEADER:
        return _header(*args)
    if code > _HEADER:
        text = _SESSION[code - _HEADER - 1]
        return ProtocolError(text % _NAMES[args[0] & 15] if "%" in text else text)
    text = _TEXTS[code] % args if args else _TEXTS[code]
    return (ConfigError if code < _E_PROTOCOL else ProtocolError)(text)


def _header(b0, total, max_packet):
    """The ProtocolError for a fixed header the decoder does not accept (the checks in
    order: flags of a PUBLISH, QoS 2 flow packets, reserved flags, packets only a client
    sends, reserved types, then the size limit)."""
    t = b0 >> 4
    f = b0 & 15
    if t == 3:
        if f & 6 == 6:
            msg = "PUBLISH with QoS 3 (invalid)"
        elif f & 6 == 4:
            msg = "PUBLISH with QoS 2: QoS 2 is not supported by this client"
        elif f & 8 and not f & 6:
            msg = "PUBLISH with DUP set on QoS 0 (MQTT-3.3.1-2)"
        else:
            msg = None
    elif 5 <= t <= 7:
        msg = "%s received: QoS 2 is not supported by this client" % _NAMES[t]
    elif t in (2, 4, 9, 11, 13):
        msg = "%s with reserved flags 0x%x (must be 0)" % (_NAMES[t], f) if f else None
    elif t in (1, 8, 10, 12, 14):
        msg = "%s received: a server never sends it to a client" % _NAMES[t]
    else:
        msg = "reserved packet type %d" % t
    if msg is None:
        msg = "%s of %d bytes exceeds the limit of %d bytes" % (_NAMES[t], total, max_packet)
    return ProtocolError(msg)
