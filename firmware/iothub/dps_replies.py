# What to do with each DPS reply (Microsoft's iot-dps-mqtt-support doc): poll again, retry after a
# delay, register again, or stop with the assignment or an error. Pure: no socket, no clock,
# no sleep; the adapter (provisioning.py) owns the link and the waiting. Error bodies never
# crash the decision: a reply without operationId or with a body that is not JSON still
# gives a step.
import json

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .dps_errors import EnrollmentDisabled, ProvisioningError, RegistrationError
from .errors import ProtocolError

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


def clamp_retry_s(retry_after, min_s=MIN_RETRY_S, max_s=MAX_RETRY_S, default_s=DEFAULT_POLL_S):
    """retry-after in seconds limited to [min_s, max_s]; default_s when absent (None)."""
    s = default_s if retry_after is None else retry_after
    if s < min_s:
        s = min_s
    if s > max_s:
        s = max_s
    return s


def throttle_backoff(min_s=MIN_RETRY_S, max_s=MAX_RETRY_S, max_jitter_ms=1000, rand=None):
    """The Backoff for throttled requests without retry-after: min_s * 2**n seconds, capped
    at max_s, plus up to 1 s of jitter while below the cap (azure-sdk-for-c's
    az_iot_calculate_retry_delay; the jitter is smaller than the hub reconnect's 5 s as the
    service usually sends retry-after)."""
    from .backoff import Backoff

    return Backoff(min_s * 1000, max_s * 1000, max_jitter_ms, rand)


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
    backoff=None,
    min_s=MIN_RETRY_S,
    max_s=MAX_RETRY_S,
):
    """What to do with one reply. status: from the topic; body: parse_body() of the
    payload; retry_after: from the topic (or None); operation_id: the one in use (None
    before the first 202); backoff: the Backoff (see throttle_backoff) that gives the delay
    of a throttled request without retry-after; it counts those attempts, and the caller
    resets it on progress. Without one, such a delay is min_s.

    Returns (ASSIGNED, registrationState) | (POLL, operation_id, delay_ms) |
    (RETRY, delay_ms) | (REGISTER, delay_ms). Raises RegistrationError for refused
    requests, ProvisioningError/EnrollmentDisabled for failed/disabled registrations and
    ProtocolError for replies that make no sense."""
    if status == 429 or status >= 500:
        if retry_after is not None:
            return (RETRY, clamp_retry_s(retry_after, min_s, max_s) * 1000)
        if backoff is None:
            return (RETRY, min_s * 1000)
        return (RETRY, backoff.next_delay_ms())
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
