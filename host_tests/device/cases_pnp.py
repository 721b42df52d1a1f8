# IoT Plug and Play helpers (iothub/pnp.py): run on CPython and on the unix port (coretest.py).
# Expected JSON texts are the ones azure-sdk-for-c's property writer produces for the same
# calls (its unit tests, sdk/tests/iot/hub/test_az_iot_hub_client_properties.c), so a hub or
# IoT Central reads our reports exactly as it reads the C SDK's.

from coretest import eq, has, raises

import iothub.pnp as pnp
from iothub.errors import ConfigError, ProtocolError

# (calls on a new Patch, encoded JSON). A call is (method, args, kwargs).
PATCHES = [
    # azure-sdk-for-c: begin_response_status("targetTemperature", 200, 29, "success") + 50
    (
        [("ack", ("targetTemperature", 50, 29, 200, "success"), {})],
        '{"targetTemperature":{"ac":200,"av":29,"ad":"success","value":50}}',
    ),
    # ... the same inside component_one
    (
        [("ack", ("targetTemperature", 23, 5, 200, "success", "component_one"), {})],
        '{"component_one":{"__t":"c","targetTemperature":{"ac":200,"av":5,"ad":"success",'
        '"value":23}}}',
    ),
    # ... two acks in one component
    (
        [
            ("ack", ("targetTemperature", 23, 5, 200, "success"), {"component": "component_one"}),
            ("ack", ("targetHumidity", 95, 8, 200, "success"), {"component": "component_one"}),
        ],
        '{"component_one":{"__t":"c","targetTemperature":{"ac":200,"av":5,"ad":"success",'
        '"value":23},"targetHumidity":{"ac":200,"av":8,"ad":"success","value":95}}}',
    ),
    # begin_component + "prop":100 + end_component
    (
        [("report", ({"prop": 100}, "component_one"), {})],
        '{"component_one":{"__t":"c","prop":100}}',
    ),
    # an empty component is just its marker
    ([("report", ({}, "component_one"), {})], '{"component_one":{"__t":"c"}}'),
    # no description: no "ad"
    ([("ack", ("t", 21.5, 3), {})], '{"t":{"ac":200,"av":3,"value":21.5}}'),
    # a refused value, with a description that needs escaping
    (
        [("ack", ("t", -300, 7, 400, 'below "absolute zero"'), {})],
        '{"t":{"ac":400,"av":7,"ad":"below \\"absolute zero\\"","value":-300}}',
    ),
    # root properties sorted by name, then components in first-use order; None deletes
    (
        [
            ("report", ({"serialNumber": "A1", "fw": None},), {}),
            ("report", ({"maxTempSinceLastReboot": 30.5},), {"component": "thermostat2"}),
            ("ack", ("targetTemperature", 22, 4), {"component": "thermostat1"}),
            ("report", ({"online": True},), {}),
        ],
        '{"fw":null,"serialNumber":"A1","online":true,'
        '"thermostat2":{"__t":"c","maxTempSinceLastReboot":30.5},'
        '"thermostat1":{"__t":"c","targetTemperature":{"ac":200,"av":4,"value":22}}}',
    ),
    # structured values go through unchanged; a name given twice keeps the last value
    (
        [
            ("report", ({"cfg": {"a": [1, 2], "b": "x"}},), {}),
            ("ack", ("mode", "eco", 2), {}),
            ("ack", ("mode", "auto", 3), {}),
        ],
        '{"cfg":{"a":[1,2],"b":"x"},"mode":{"ac":200,"av":3,"value":"auto"}}',
    ),
    # a name that needs escaping
    ([("report", ({'say"hi"': 1},), {})], '{"say\\"hi\\"":1}'),
    ([], "{}"),
]


def _build(calls):
    p = pnp.Patch()
    for method, args, kw in calls:
        getattr(p, method)(*args, **kw)
    return p


def test_patch_encoding_matches_azure_sdk_for_c():
    out = []
    for calls, want in PATCHES:
        got = _build(calls).encode()
        eq(got, want.encode(), repr(calls))
        out.append(len(got))
    return out


def test_patch_rejects_bad_application_input():
    p = pnp.Patch()
    cases = [
        (p.report, ([1, 2],), "dict"),
        (p.report, ({"a b": 1},), "space"),
        (p.report, ({"a.b": 1},), "'.'"),
        (p.report, ({"$x": 1},), "'$'"),
        (p.report, ({"__t": "c"},), "marker"),
        (p.report, ({"x": 1}, "1comp"), "component name"),
        (p.report, ({"x": 1}, "comp_"), "component name"),
        (p.report, ({"x": 1}, "a" * 65), "1..64"),
        (p.report, ({"x": 1}, "th\u00e9rmo"), "component name"),
        (p.report, ({"x": float("nan")},), "JSON value"),
        (p.report, ({"x": b"bytes"},), "JSON value"),
        (p.report, ({"x": {1: 2}},), "JSON value"),
        (p.ack, ("t", 1, -1), "version"),
        (p.ack, ("t", 1, True), "version"),
        (p.ack, ("t", 1, "3"), "version"),
        (p.ack, ("t", 1, 3, "200"), "status"),
        (p.ack, ("t", 1, 3, 200, 5), "description"),
        (p.ack, ("", 1, 3), "property name"),
    ]
    msgs = []
    for fn, args, sub in cases:
        msg = raises(ConfigError, fn, *args)
        has(msg, sub, repr(args))
        msgs.append(msg)
    eq(len(p), 0, "nothing was added by a refused call")
    return len(msgs)


def test_component_telemetry_property():
    eq(pnp.telemetry_property("thermostat1"), "$.sub=thermostat1")
    eq(
        pnp.add_component("devices/d/messages/events/", "thermostat1"),
        "devices/d/messages/events/$.sub=thermostat1",
    )
    eq(
        pnp.add_component("devices/d/messages/events/$.ct=application%2Fjson", "t2"),
        "devices/d/messages/events/$.ct=application%2Fjson&$.sub=t2",
    )
    for bad in ("", None, "a/b", "a b", "a*b", "_a", 3):
        raises(ConfigError, pnp.telemetry_property, bad)


# (desired patch or section, declared components, expected [(component, name, value)])
DESIRED = [
    # azure-sdk-for-c test payload two: a marked component
    (
        {"thermostat1": {"__t": "c", "targetTemperature": 47}, "$version": 4},
        (),
        [("thermostat1", "targetTemperature", 47)],
    ),
    # components declared by the model need no marker (how the C SDK is told them)
    (
        {
            "component_one": {"prop_one": 1, "prop_two": "string"},
            "component_two": {"prop_three": 45, "prop_four": "string"},
            "not_component": 42,
            "$version": 5,
        },
        ("component_one", "component_two"),
        [
            ("component_one", "prop_one", 1),
            ("component_one", "prop_two", "string"),
            ("component_two", "prop_four", "string"),
            ("component_two", "prop_three", 45),
            (None, "not_component", 42),
        ],
    ),
    # missing marker and not declared: a root property whose value is an object
    (
        {"component_one": {"prop_one": 1}, "$version": 5},
        (),
        [(None, "component_one", {"prop_one": 1})],
    ),
    # a marker other than "c" does not make a component
    ({"x": {"__t": "z", "a": 1}}, (), [(None, "x", {"__t": "z", "a": 1})]),
    # root and component properties with the same name stay apart
    (
        {
            "thermostat2": {"__t": "c", "targetTemperature": 50},
            "thermostat1": {"__t": "c", "targetTemperature": 47},
            "targetTemperature": 54,
            "$version": 30,
        },
        (),
        [
            (None, "targetTemperature", 54),
            ("thermostat1", "targetTemperature", 47),
            ("thermostat2", "targetTemperature", 50),
        ],
    ),
    # nulls delete: a root property, a component property; a declared component set to null
    # takes its properties with it (nothing to hand out)
    (
        {"a": None, "t1": {"__t": "c", "b": None, "c": 0}, "t2": None, "$version": 9},
        ("t2",),
        [(None, "a", None), ("t1", "b", None), ("t1", "c", 0)],
    ),
    # $version, $metadata and other $ members are skipped, also inside a component
    (
        {
            "$version": 3,
            "$metadata": {"$lastUpdated": "2026-01-01T00:00:00Z"},
            "t1": {"__t": "c", "$metadata": {}, "v": [1, 2]},
        },
        (),
        [("t1", "v", [1, 2])],
    ),
    ({"$version": 1}, ("t1",), []),
    # an empty component
    ({"t1": {"__t": "c"}, "$version": 2}, (), []),
]


def test_writable_properties():
    out = []
    for desired, components, want in DESIRED:
        got = pnp.writable_properties(desired, components)
        eq([list(x) for x in got], [list(x) for x in want], repr(desired))
        out.append(len(got))
    return out


def test_malformed_desired_is_a_protocol_error():
    msgs = []
    for desired, components, sub in [
        ([1, 2], (), "not a JSON object"),
        ("x", (), "not a JSON object"),
        (None, (), "not a JSON object"),
        ({"t1": 5, "$version": 2}, ("t1",), "component 't1'"),
        ({"t1": [1], "$version": 2}, ("t1",), "component 't1'"),
    ]:
        msg = raises(ProtocolError, pnp.writable_properties, desired, components)
        has(msg, sub, repr(desired))
        msgs.append(msg)
    return len(msgs)


TWIN_REPORTED = {
    "t1": {
        "__t": "c",
        "targetTemperature": {"ac": 200, "av": 6, "ad": "ok", "value": 21},
        "maxTemp": 30,
    },
    "mode": {"ac": 200, "av": 4, "value": "eco"},
    "fan": {"value": 1},  # not an ack: no av
    "$version": 12,
}


def test_unacknowledged_after_reconnect():
    twin = {
        "desired": {
            "t1": {"__t": "c", "targetTemperature": 21},
            "t2": {"__t": "c", "targetTemperature": 18},
            "mode": "eco",
            "fan": 2,
            "gone": None,
            "$version": 6,
        },
        "reported": TWIN_REPORTED,
    }
    version, items = pnp.unacknowledged(twin)
    eq(version, 6)
    # t1 acked at av 6: done. mode acked at av 4 < 6, fan has no real ack, t2 none at all.
    eq(
        [list(x) for x in items],
        [[None, "fan", 2], [None, "mode", "eco"], ["t2", "targetTemperature", 18]],
    )
    # everything acknowledged at the current version: nothing to do
    done = {"desired": {"mode": "eco", "$version": 4}, "reported": TWIN_REPORTED}
    eq(pnp.unacknowledged(done), (4, []))
    # a twin without reported properties: everything is unacknowledged
    eq(pnp.unacknowledged({"desired": {"a": 1, "$version": 2}}), (2, [(None, "a", 1)]))
    for bad, sub in [
        ([], "not a JSON object"),
        ({"reported": {}}, "no desired"),
        ({"desired": {"a": 1}}, "$version"),
        ({"desired": {"a": 1, "$version": "7"}}, "$version"),
    ]:
        has(raises(ProtocolError, pnp.unacknowledged, bad), sub, repr(bad))
    return [version, len(items)]


def test_ack_of():
    eq(pnp.ack_of(TWIN_REPORTED, "mode"), {"ac": 200, "av": 4, "value": "eco"})
    eq(pnp.ack_of(TWIN_REPORTED, "targetTemperature", "t1")["av"], 6)
    eq(pnp.ack_of(TWIN_REPORTED, "fan"), None)
    eq(pnp.ack_of(TWIN_REPORTED, "maxTemp", "t1"), None)
    eq(pnp.ack_of(TWIN_REPORTED, "targetTemperature", "t9"), None)
    eq(pnp.ack_of({"t": {"ac": True, "av": 1}}, "t"), None)


def test_acknowledge_calls_the_handler_and_builds_one_patch():
    seen = []
    log = []

    def on_writable(component, name, value, version):
        seen.append([component, name, value, version])
        if name == "targetTemperature" and value < -273:
            return 400, "below absolute zero"
        if name == "boom":
            raise RuntimeError("sensor offline")
        if name == "bad":
            return "yes"
        if name == "code":
            return 202
        return None

    items = [
        (None, "boom", 1),
        (None, "code", 2),
        ("t1", "targetTemperature", 21),
        ("t2", "targetTemperature", -300),
        (None, "bad", 3),
        (None, "gone", None),
    ]
    patch = pnp.acknowledge(on_writable, items, 8, lambda lvl, text: log.append(text))
    eq(len(seen), 6)
    eq(seen[-1], [None, "gone", None, 8])
    eq(
        patch.encode(),
        b'{"boom":{"ac":500,"av":8,"ad":"RuntimeError: sensor offline","value":1},'
        b'"code":{"ac":202,"av":8,"value":2},'
        b'"bad":{"ac":500,"av":8,"ad":"ValueError: on_writable returned \'yes\', not a status '
        b'or (status, description)","value":3},'
        b'"t1":{"__t":"c","targetTemperature":{"ac":200,"av":8,"value":21}},'
        b'"t2":{"__t":"c","targetTemperature":{"ac":400,"av":8,"ad":"below absolute zero",'
        b'"value":-300}}}',
    )
    eq(len(log), 2)
    has(log[0], "sensor offline")
    # only deletions: nothing to acknowledge
    eq(pnp.acknowledge(on_writable, [(None, "gone", None)], 9), None)
    eq(pnp.acknowledge(on_writable, [], 9), None)
    return len(patch.encode())


COMMANDS = [
    ("thermostat1*getMaxMinReport", ("thermostat1", "getMaxMinReport")),
    ("reboot", (None, "reboot")),
    ("a*b*c", ("a", "b*c")),  # split at the first "*"
    ("*reboot", (None, "reboot")),
    ("t1*", ("t1", "")),
    ("", (None, "")),
]


def test_split_command():
    for name, want in COMMANDS:
        eq(pnp.split_command(name), want, name)
    eq(pnp.command_method("getMaxMinReport", "thermostat1"), "thermostat1*getMaxMinReport")
    eq(pnp.command_method("reboot"), "reboot")
    for name, want in COMMANDS[:2]:
        eq(pnp.command_method(want[1], want[0]), name)
    raises(ConfigError, pnp.command_method, "", "t1")
    raises(ConfigError, pnp.command_method, "x", "t 1")


def test_command_handler_routes_and_answers_unknown():
    calls = []

    def on_command(component, command, payload):
        calls.append([component, command, payload])
        if command == "getMaxMinReport":
            return 200, {"maxTemp": 30, "component": component}
        if command == "plain":
            return {"just": "payload"}
        return None

    def on_method(name, payload):
        return 201, {"method": name}

    h = pnp.handler(on_command)
    eq(
        h("thermostat1*getMaxMinReport", {"since": "x"}),
        (200, {"maxTemp": 30, "component": "thermostat1"}),
    )
    eq(h("plain", None), {"just": "payload"})
    eq(
        h("t2*selfDestruct", None),
        (404, {"error": "unknown command 'selfDestruct' of component 't2'"}),
    )
    eq(h("selfDestruct", None), (404, {"error": "unknown command 'selfDestruct'"}))
    # with on_method: what on_command does not know goes there, name unchanged
    h2 = pnp.handler(on_command, on_method)
    eq(h2("t2*legacy", 5), (201, {"method": "t2*legacy"}))
    eq(calls[0], ["thermostat1", "getMaxMinReport", {"since": "x"}])
    return len(calls)


class _FakeClient:
    # What iothub.inbound.Twin and pnp.writable use of a DeviceClient, recorded.
    def __init__(self, **handlers):
        self._handlers = handlers
        self.components = ("thermostat1",)
        self.is_connected = True
        self.published = []
        self.reports = []
        self.stats = {"poison": 0}
        self._s = self  # the session: publish() below

    def publish(self, topic, payload):
        self.published.append((topic, bytes(payload)))

    # iothub.reports.report passes what it reports to on_error through _callback
    def on_error(self, kind, detail):
        self.reports.append(kind)

    def _callback(self, fn, what, kind, detail):
        fn(kind, detail)

    def _log_line(self, level, text):
        pass

    def _lost(self, err):
        self.is_connected = False


def test_desired_patch_acknowledged_and_malformed_ones_skipped():
    from iothub.inbound import Twin

    seen = []
    desired = []
    c = _FakeClient(
        writable=lambda comp, name, value, version: seen.append([comp, name, value, version]),
        desired=lambda patch, version: desired.append(version),
    )
    tw = Twin(c)
    # a body that is not an object (Twin.patch refuses it before any handler), and a declared
    # component that is not one (the PnP split refuses it): reported, nothing acknowledged
    tw.patch(b"[1,2]", 3)
    tw.patch(b'"text"', 4)
    eq(desired, [])
    tw.patch(b'{"thermostat1":5,"$version":5}', 5)
    eq(desired, [5])
    eq((seen, c.published, c.reports), ([], [], ["twin"] * 3))
    # a good patch: on_writable per property, one reported PATCH with the acks at $version 6
    tw.patch(b'{"thermostat1":{"targetTemperature":21},"fan":true,"$version":6}', 6)
    eq(seen, [[None, "fan", True, 6], ["thermostat1", "targetTemperature", 21, 6]])
    eq(len(c.published), 1)
    topic, body = c.published[0]
    eq(topic, "$iothub/twin/PATCH/properties/reported/?$rid=1")
    eq(
        body,
        b'{"fan":{"ac":200,"av":6,"value":true},'
        b'"thermostat1":{"__t":"c","targetTemperature":{"ac":200,"av":6,"value":21}}}',
    )
    # an older or repeated version is not delivered again
    tw.patch(b'{"fan":false,"$version":6}', 6)
    eq(len(seen), 2)
    return len(body)
