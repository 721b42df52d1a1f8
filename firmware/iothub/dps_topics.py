# Device Provisioning Service (DPS) over MQTT: names, payloads and the decision what to do
# with each response (docs/protocol.md section 4). Pure: no socket, no clock, no sleep;
# the adapter (provisioning.py) owns the link and the waiting. Parsers return None for a
# topic that is not theirs and raise ProtocolError for one that is theirs but malformed
# (after azure-sdk-for-c az_iot_provisioning_client.c). Error bodies never crash the
# parser: a reply without operationId or with a body that is not JSON still gives a step.

import json

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError, IoTHubError, ProtocolError, StatusError
from .jsonc import dumps as _dumps
from .pct import unquote
from .topics import quote

API_VERSION = "2019-03-31"  # iot-dps-mqtt-support.md; azure-sdk-for-c, python SDK
DEFAULT_ENDPOINT = "global.azure-devices-provisioning.net"
RES_SUB = "$dps/registrations/res/#"
_RES = "$dps/registrations/res/"
_REGISTER = "$dps/registrations/PUT/iotdps-register/?$rid="
_QUERY = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="

# retry-after handling (seconds). azure-iot-sdk-c clamps to [1, 300]
# (PROV_GET_THROTTLE_TIME, MAX_PROV_GET_THROTTLE_TIME); the python SDK polls every 2 s when
# the service gives no retry-after (DEFAULT_POLLING_INTERVAL).
MIN_RETRY_S = const(1)
MAX_RETRY_S = const(300)
DEFAULT_POLL_S = const(2)

# Steps returned by next_step()
ASSIGNED = "assigned"
POLL = "poll"  # send the operation-status query after delay_ms
RETRY = "retry"  # throttled or server error: repeat the same request after delay_ms
REGISTER = "register"  # no operation id to poll with: register again after delay_ms

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class RegistrationError(StatusError):
    """DPS refused the request: 401 (bad key or certificate), 404 (unknown registration),
    400, 403... `status`, `error_code` (e.g. 401002), `message` and `tracking_id` come
    from the reply; `retriable` is False for these statuses."""

    def __init__(self, status, error_code=None, message=None, tracking_id=None):
        text = "DPS registration failed with status %d" % status
        if error_code is not None:
            text += ", errorCode %s" % (error_code,)
        if message:
            text += ": %s" % (message,)
        if status == 401:
            text += " (wrong key or certificate, or the registration id is not enrolled)"
        elif status == 404:
            text += " (the registration id is unknown to this ID scope)"
        super(StatusError, self).__init__(text)  # StatusError.__init__ fixes the text
        self.status = status
        self.body = None
        self.error_code = error_code
        self.message = message
        self.tracking_id = tracking_id


class ProvisioningError(IoTHubError):
    """The registration completed without an assignment: `status` is "failed" (e.g. no
    hub could be allocated, errorCode 400207/400208) or "disabled". Not retriable: the
    enrollment must change first."""

    retriable = False

    def __init__(self, status, error_code=None, message=None, state=None):
        self.status = status
        self.error_code = error_code
        self.message = message
        self.registration_state = state
        text = "DPS registration %s" % status
        if error_code is not None:
            text += ", errorCode %s" % (error_code,)
        if message:
            text += ": %s" % (message,)
        super().__init__(text)


class EnrollmentDisabled(ProvisioningError):
    """The device's enrollment (individual or group) is disabled on the DPS."""


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


def clamp_retry_s(retry_after, min_s=MIN_RETRY_S, max_s=MAX_RETRY_S, default_s=DEFAULT_POLL_S):
    """retry-after in seconds limited to [min_s, max_s]; default_s when absent (None)."""
    s = default_s if retry_after is None else retry_after
    if s < min_s:
        s = min_s
    if s > max_s:
        s = max_s
    return s


def backoff_ms(attempt, min_s=MIN_RETRY_S, max_s=MAX_RETRY_S, jitter_ms=0):
    """Exponential delay for throttling without retry-after: min_s * 2**attempt, capped at
    max_s, plus jitter while below the cap (azure-sdk-for-c az_iot_calculate_retry_delay)."""
    ms = max_s * 1000 if attempt > 20 else min(min_s * 1000 << attempt, max_s * 1000)
    if max_s * 1000 - ms > jitter_ms:
        ms += jitter_ms
    return ms


def parse_body(payload):
    """The reply body as a dict: {} when empty or not a JSON object (error bodies are free
    text on some paths; they must not crash the client)."""
    if not payload:
        return {}
    try:
        doc = json.loads(payload)
    except (ValueError, TypeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _str_or_none(v):
    return v if isinstance(v, str) and v else None


def next_step(
    status,
    body,
    retry_after,
    operation_id=None,
    attempt=0,
    min_s=MIN_RETRY_S,
    max_s=MAX_RETRY_S,
    jitter_ms=0,
):
    """What to do with one reply. status: from the topic; body: parse_body() of the
    payload; retry_after: from the topic (or None); operation_id: the one in use (None
    before the first 202); attempt: consecutive throttled/failed replies so far.

    Returns (ASSIGNED, registrationState) | (POLL, operation_id, delay_ms) |
    (RETRY, delay_ms) | (REGISTER, delay_ms). Raises RegistrationError for refused
    requests, ProvisioningError/EnrollmentDisabled for failed/disabled registrations and
    ProtocolError for replies that make no sense."""
    if status == 429 or status >= 500:
        if retry_after is None:
            return (RETRY, backoff_ms(attempt, min_s, max_s, jitter_ms))
        return (RETRY, clamp_retry_s(retry_after, min_s, max_s) * 1000)
    if status >= 300 or status < 200:
        code = body.get("errorCode")
        raise RegistrationError(
            status,
            code if isinstance(code, int) else None,
            _str_or_none(body.get("message")),
            _str_or_none(body.get("trackingId")),
        )
    state = body.get("registrationState")
    if not isinstance(state, dict):
        state = {}
    op_status = _str_or_none(body.get("status")) or _str_or_none(state.get("status"))
    if op_status == "assigned":
        if not _str_or_none(state.get("assignedHub")) or not _str_or_none(state.get("deviceId")):
            raise ProtocolError("DPS reported 'assigned' without assignedHub and deviceId")
        return (ASSIGNED, state)
    if op_status in ("assigning", "unassigned") or (op_status is None and status == 202):
        op = _str_or_none(body.get("operationId")) or operation_id
        delay = clamp_retry_s(retry_after, min_s, max_s) * 1000
        if op is None:
            # azure-sdk-for-c: a reply may lack operationId; without a cached one, start over
            return (REGISTER, delay)
        return (POLL, op, delay)
    if op_status == "failed":
        code = state.get("errorCode")
        raise ProvisioningError(
            "failed",
            code if isinstance(code, int) else None,
            _str_or_none(state.get("errorMessage")),
            state,
        )
    if op_status == "disabled":
        raise EnrollmentDisabled("disabled", None, "the enrollment is disabled", state)
    raise ProtocolError("DPS reply %d with unknown registration status %r" % (status, op_status))
