# DPS names, payloads (iothub.dps_topics) and reply decisions (iothub.dps_replies): run on
# CPython and on the unix port (coretest.py). Expected strings from Microsoft's
# iot-dps-mqtt-support doc (its examples; docs/protocol.md section 4) and azure-sdk-for-c's provisioning tests.

import json

from coretest import eq, has, raises

import iothub.dps_replies as r
import iothub.dps_topics as d
from iothub.backoff import Backoff
from iothub.errors import ConfigError, ProtocolError, StatusError

OP = "4.d0a671905ea5b2c8.e7173b7b-0e54-4aa0-9d20-aeb1b89e6c7d"


def test_username_and_topics():
    eq(d.API_VERSION, "2019-03-31")
    eq(
        d.username("0neFEEDC0DE", "myRegistrationId"),
        "0neFEEDC0DE/registrations/myRegistrationId/api-version=2019-03-31",
    )
    eq(d.RES_SUB, "$dps/registrations/res/#")
    eq(d.register_topic(1), "$dps/registrations/PUT/iotdps-register/?$rid=1")
    eq(
        d.query_topic("7", OP),
        "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=" + OP,
    )
    # an operation id with characters that would break the query is percent-encoded
    eq(d.query_topic(2, "a&b c").split("operationId=")[1], "a%26b%20c")
    raises(ConfigError, d.query_topic, 1, "")
    raises(ConfigError, d.register_topic, "a&b")
    raises(ConfigError, d.username, "", "r")
    raises(ConfigError, d.username, "scope/x", "r")
    return d.username("s", "r")


def test_register_body():
    eq(d.register_body("dev-1"), b'{"registrationId":"dev-1"}')
    body = d.register_body("dev-1", d.encode_payload({"modelId": "dtmi:com:example:T;1"}))
    eq(body, b'{"registrationId":"dev-1","payload":{"modelId":"dtmi:com:example:T;1"}}')
    eq(json.loads(body)["payload"]["modelId"], "dtmi:com:example:T;1")
    eq(
        d.register_body("r", d.encode_payload([1, "x", None])),
        b'{"registrationId":"r","payload":[1,"x",null]}',
    )
    # a quote in the id stays valid JSON
    eq(json.loads(d.register_body('a"b'))["registrationId"], 'a"b')
    raises(ConfigError, d.encode_payload, {"x": object()})
    return body.decode()


def test_registration_id_rules():
    for ok in ("a", "dev-1", "Dev.1_2:3", "x-", "a" * 128):
        eq(d.check_registration_id(ok), ok)
    eq(d.check_registration_id("c" * 64, x509=True), "c" * 64)
    for bad in ("", "dev 1", "dev/1", "dev#", "dev.", "dev_", "a" * 129, None, 5):
        raises(ConfigError, d.check_registration_id, bad)
    has(raises(ConfigError, d.check_registration_id, "c" * 65, True), "64")


def test_parse_response_topic():
    p = d.parse_response_topic
    eq(p("$dps/registrations/res/202/?$rid=1&retry-after=3"), (202, "1", 3))
    # parameters in any order (azure-sdk-for-c test topic)
    eq(p("$dps/registrations/res/202/?retry-after=120&$rid=1"), (202, "1", 120))
    eq(p("$dps/registrations/res/200/?$rid=17"), (200, "17", None))
    eq(p("$dps/registrations/res/401/?$rid=1"), (401, "1", None))
    eq(p("$dps/registrations/res/429/?$rid=x&retry-after=5&other=1"), (429, "x", 5))
    # a retry-after that is not a number of seconds is ignored, not fatal
    eq(p("$dps/registrations/res/202/?$rid=1&retry-after=soon"), (202, "1", None))
    eq(p("$dps/registrations/res/202/?$rid=1&retry-after=-4"), (202, "1", None))
    # not ours
    eq(p("$iothub/twin/res/200/?$rid=1"), None)
    eq(p("devices/d/messages/devicebound/"), None)
    for bad in (
        "$dps/registrations/res/",
        "$dps/registrations/res/abc/?$rid=1",
        "$dps/registrations/res/2000/?$rid=1",
        "$dps/registrations/res/200/?retry-after=1",
        "$dps/registrations/res/200",
    ):
        raises(ProtocolError, p, bad)


def test_clamp_and_backoff():
    eq(r.clamp_retry_s(3), 3)
    eq(r.clamp_retry_s(None), r.DEFAULT_POLL_S)
    eq(r.clamp_retry_s(0), 1)
    eq(r.clamp_retry_s(100000), 300)
    eq(r.clamp_retry_s(5, 0, 2), 2)
    eq(r.clamp_retry_s(0, 0, 2), 0)
    # throttling without retry-after: the SDK's one Backoff, in seconds of the DPS range
    b = r.throttle_backoff(rand=lambda n: 0)
    eq([b.next_delay_ms() for _ in range(4)], [1000, 2000, 4000, 8000])
    eq([b.next_delay_ms() for _ in range(5)][-1], 256000)
    eq(b.next_delay_ms(), 300000)
    eq(isinstance(b, Backoff), True)
    draws = []
    b = r.throttle_backoff(rand=lambda n: draws.append(n) or 700)
    eq(b.next_delay_ms(), 1700)
    eq(draws, [1000], "jitter drawn in [0, 1000] ms")
    b.attempt = 9
    eq(b.next_delay_ms(), 300000)  # no jitter once capped
    eq(r.throttle_backoff(0, 2, rand=lambda n: 0).next_delay_ms(), 0)


def _body(obj):
    return r.parse_body(json.dumps(obj).encode())


ASSIGNED_STATE = {
    "x509": {},
    "registrationId": "dev-1",
    "createdDateTimeUtc": "2020-04-10T03:11:13.0276997Z",
    "assignedHub": "contoso.azure-devices.net",
    "deviceId": "dev-1",
    "status": "assigned",
    "substatus": "initialAssignment",
    "lastUpdatedDateTimeUtc": "2020-04-10T03:11:13.2096201Z",
    "etag": "IjYxMDA4ZDQ2LTAwMDAtMDEwMC0wMDAwLTVlOGZlM2QxMDAwMCI=",
}


def test_next_step_flow():
    s = r.next_step
    eq(s(202, _body({"operationId": OP, "status": "assigning"}), 3), ("poll", OP, 3000))
    # 202 without retry-after: default poll interval
    eq(s(202, _body({"operationId": OP, "status": "assigning"}), None), ("poll", OP, 2000))
    # retry-after clamped to the client's range
    eq(
        s(202, _body({"operationId": OP, "status": "assigning"}), 9999, None, None, 1, 60),
        ("poll", OP, 60000),
    )
    eq(s(202, _body({"operationId": OP, "status": "assigning"}), 0), ("poll", OP, 1000))
    # 202 whose body lacks operationId: keep the cached one, or start over without one
    eq(s(202, _body({"status": "assigning"}), 1, OP), ("poll", OP, 1000))
    eq(s(202, {}, 1, OP), ("poll", OP, 1000))
    eq(s(202, {}, 1, None), ("register", 1000))
    eq(
        s(
            200,
            _body(
                {
                    "operationId": OP,
                    "status": "assigning",
                    "registrationState": {"status": "assigning"},
                }
            ),
            2,
        ),
        ("poll", OP, 2000),
    )
    kind, state = s(
        200,
        _body({"operationId": OP, "status": "assigned", "registrationState": ASSIGNED_STATE}),
        None,
        OP,
    )
    eq(kind, "assigned")
    eq(state["assignedHub"], "contoso.azure-devices.net")
    # status only inside registrationState still counts
    eq(s(200, _body({"registrationState": ASSIGNED_STATE}), None)[0], "assigned")
    # assigned without hub/device is nonsense
    raises(
        ProtocolError,
        s,
        200,
        _body({"status": "assigned", "registrationState": {"status": "assigned"}}),
        None,
    )
    raises(ProtocolError, s, 200, _body({"status": "weird"}), None)
    raises(ProtocolError, s, 200, {}, None)


def test_next_step_throttle():
    s = r.next_step
    eq(s(429, {}, 7), ("retry", 7000))
    eq(s(429, {}, None, OP), ("retry", 1000))  # no backoff given: min_s
    b = r.throttle_backoff(rand=lambda n: 250)
    eq([s(429, {}, None, OP, b)[1] for _ in range(3)], [1250, 2250, 4250])
    eq(s(503, {}, None, OP, b), ("retry", 8250))
    eq(b.attempt, 4)
    eq(s(429, {}, 3, OP, b), ("retry", 3000))  # retry-after wins; the backoff is not drawn
    eq(b.attempt, 4)
    eq(s(500, _body({"errorCode": 500000}), 1000, OP), ("retry", 300000))


def test_next_step_errors():
    s = r.next_step
    body = _body(
        {
            "errorCode": 401002,
            "trackingId": "8ad0463c-6427-4479-9dfa-3e8bb7003e9b",
            "message": "Invalid certificate.",
            "timestampUtc": "2020-04-10T05:24:22.4718526Z",
        }
    )
    try:
        s(401, body, None)
        raise AssertionError("no error")
    except r.RegistrationError as e:
        eq(e.status, 401)
        eq(e.error_code, 401002)
        eq(e.message, "Invalid certificate.")
        eq(e.tracking_id, "8ad0463c-6427-4479-9dfa-3e8bb7003e9b")
        eq(isinstance(e, StatusError), True)
        eq(e.retriable, False)
        has(str(e), "401002")
        has(str(e), "Invalid certificate")
        msg401 = str(e)
    # an error body that is not JSON, or JSON without fields, never crashes the client
    for payload in (b"", b"not json", b"[1,2]", b'{"errorCode":"x"}', b"\xff\xfe"):
        try:
            s(404, r.parse_body(payload), None)
            raise AssertionError("no error")
        except r.RegistrationError as e:
            eq(e.status, 404)
            eq(e.error_code, None)
    raises(r.RegistrationError, s, 400, {}, None)
    raises(r.RegistrationError, s, 302, {}, None)
    raises(r.RegistrationError, s, 100, {}, None)
    return msg401


def test_next_step_failed_and_disabled():
    s = r.next_step
    failed = {
        "operationId": OP,
        "status": "failed",
        "registrationState": {
            "registrationId": "dev-1",
            "status": "failed",
            "errorCode": 400207,
            "errorMessage": "Custom allocation failed with status code: 400",
        },
    }
    try:
        s(200, _body(failed), None, OP)
        raise AssertionError("no error")
    except r.ProvisioningError as e:
        eq(e.status, "failed")
        eq(e.error_code, 400207)
        has(str(e), "Custom allocation failed")
        eq(e.retriable, False)
        eq(isinstance(e, r.EnrollmentDisabled), False)
    disabled = {"operationId": "", "status": "disabled"}
    try:
        s(200, _body(disabled), None)
        raise AssertionError("no error")
    except r.EnrollmentDisabled as e:
        eq(e.status, "disabled")
        has(str(e), "disabled")
    raises(r.EnrollmentDisabled, s, 200, _body({"registrationState": {"status": "disabled"}}), None)


def test_parse_body():
    eq(r.parse_body(b""), {})
    eq(r.parse_body(None), {})
    eq(r.parse_body(b"{"), {})
    eq(r.parse_body(b'"text"'), {})
    eq(r.parse_body(b'{"a":1}'), {"a": 1})
