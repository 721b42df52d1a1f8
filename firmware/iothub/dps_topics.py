# Device Provisioning Service (DPS) over MQTT: user name, topics and the request payload, and
# the parser of reply topics (docs/protocol.md section 4). Pure: no socket, no clock, no sleep. What to do with a reply is
# dps_replies.py; the adapter (provisioning.py) owns the link and the waiting. The parser
# returns None for a topic that is not a DPS reply and raises ProtocolError for one that is
# but is malformed (after azure-sdk-for-c az_iot_provisioning_client.c).

import json

from .errors import ConfigError, ProtocolError
from .jsonc import dumps as _dumps
from .pct import unquote
from .topics import quote

API_VERSION = "2019-03-31"  # iot-dps-mqtt-support.md; azure-sdk-for-c, python SDK
DEFAULT_ENDPOINT = "global.azure-devices-provisioning.net"
RES_SUB = "$dps/registrations/res/#"
_RES = "$dps/registrations/res/"
_REGISTER = "$dps/registrations/PUT/iotdps-register/?$rid="
_QUERY = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _text(value, what):
    if not isinstance(value, str) or not value:
        raise ConfigError("%s must be a non-empty str" % what)
    return value


def check_registration_id(registration_id, x509=False):
    """Registration ids: alphanumerics and - . _ : (case-insensitive), last character
    alphanumeric or -, at most 128 characters (64 with X.509, as it is the certificate CN)."""
    rid = _text(registration_id, "registration id")
    limit = 64 if x509 else 128
    if len(rid) > limit:
        raise ConfigError(
            "registration id is %d characters; at most %d%s"
            % (len(rid), limit, " with X.509 (it is the certificate CN)" if x509 else "")
        )
    for c in rid:
        if c not in _ID_CHARS and c not in "-._:":
            raise ConfigError(
                "registration id %r: only letters, digits and - . _ : are allowed" % (rid,)
            )
    if rid[-1] not in _ID_CHARS and rid[-1] != "-":
        raise ConfigError("registration id %r must end with a letter, digit or -" % (rid,))
    return rid


def check_id_scope(id_scope):
    s = _text(id_scope, "ID scope")
    for c in "/?#&= ":
        if c in s:
            raise ConfigError("ID scope %r must not contain %r" % (s, c))
    return s


def username(id_scope, registration_id):
    """{idScope}/registrations/{registrationId}/api-version=2019-03-31"""
    return "%s/registrations/%s/api-version=%s" % (
        check_id_scope(id_scope),
        _text(registration_id, "registration id"),
        API_VERSION,
    )


def _rid(rid):
    rid = str(rid)
    if not rid or "&" in rid or "/" in rid:
        raise ConfigError("request id must be a non-empty token without & or /")
    return rid


def register_topic(rid):
    return _REGISTER + _rid(rid)


def query_topic(rid, operation_id):
    return _QUERY + _rid(rid) + "&operationId=" + quote(_text(operation_id, "operation id"))


def encode_payload(payload):
    """The JSON text of the custom payload, checked early (ConfigError if not JSON-able)."""
    if payload is None:
        return None
    try:
        text = _dumps(payload)
        json.loads(text)  # MicroPython writes repr() for what JSON cannot hold
    except (TypeError, ValueError) as e:
        raise ConfigError("DPS payload must be JSON-serialisable: %s" % (e,))
    return text


def register_body(registration_id, payload_json=None):
    """{"registrationId":"..."[,"payload":...]} as bytes; payload_json from encode_payload()."""
    body = '{"registrationId":' + _dumps(_text(registration_id, "registration id"))
    if payload_json is not None:
        body += ',"payload":' + payload_json
    return (body + "}").encode()


def parse_response_topic(topic):
    """$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}] (parameters in any
    order) -> (status, rid, retry_after or None); None if the topic is not a DPS reply.
    A retry-after that is not a decimal number of seconds is ignored (None)."""
    if not topic.startswith(_RES):
        return None
    rest = topic[len(_RES) :]
    slash = rest.find("/")
    if slash < 0:
        raise ProtocolError("DPS reply topic has no status segment")
    code = rest[:slash]
    if not code or len(code) > 3 or not code.isdigit():
        raise ProtocolError("DPS reply topic status %r is not a number" % (code[:8],))
    query = rest[slash + 1 :]
    if query.startswith("?"):
        query = query[1:]
    rid = None
    retry = None
    for part in query.split("&"):
        eq = part.find("=")
        if eq < 0:
            continue
        name = part[:eq]
        value = unquote(part[eq + 1 :])
        if name == "$rid":
            rid = value
        elif name == "retry-after":
            if value.isdigit() and len(value) <= 9:
                retry = int(value)
    if rid is None:
        raise ProtocolError("DPS reply topic has no $rid")
    return int(code), rid, retry
