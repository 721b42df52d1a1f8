# Topic, user-name and property-bag cases: run on CPython and on the unix port (coretest.py).
# Expected strings from docs/protocol.md section 2 (doc examples and SDK test topics).

import sys

from coretest import eq, has, raises

import iothub.clientx as clientx
import iothub.inbound as r
import iothub.topics as t
import iothub.twin as tw
from iothub.errors import ConfigError, ProtocolError


def _kind(kind, topic, device_id="d", module_id=None):
    # inbound.parse's result without its kind when it is that kind, else None
    got = r.parse(topic, device_id, module_id)
    if got is None or got[0] != kind:
        return None
    return got[1] if len(got) == 2 else got[1:]


class _Publisher:
    # what inbound.respond() needs of a client: the PUBLISH it sends, the lines it logs
    def __init__(self):
        self.published = []
        self.logged = []
        self._s = self  # the session: publish() below

    def publish(self, topic, payload):
        self.published.append((topic, payload))

    def _log_line(self, level, text):
        self.logged.append(text)


def test_client_id_and_username():
    eq(t.API_VERSION, "2021-04-12")
    eq(t.client_id("dev1"), "dev1")
    eq(t.client_id("dev1", "mod1"), "dev1/mod1")
    eq(
        t.username("hub.azure-devices.net", "dev1"),
        "hub.azure-devices.net/dev1/?api-version=2021-04-12",
    )
    eq(
        t.username("hub.azure-devices.net", "dev1", "mod1"),
        "hub.azure-devices.net/dev1/mod1/?api-version=2021-04-12",
    )
    eq(
        t.username("h", "d", model_id="dtmi:com:example:Thermostat;1"),
        "h/d/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
    )
    for bad in ("", "a/b", "a#", "a+b", None, 5):
        raises(ConfigError, t.client_id, bad)
    raises(ConfigError, t.username, "", "d")
    raises(ConfigError, t.username, "h", "d", None, "")


BAGS = [
    # (properties, encoded)
    ({}, ""),
    ([("a", "1")], "a=1"),
    ([("b", "2"), ("a", "1")], "b=2&a=1"),  # a list keeps its order
    ({"b": "2", "a": "1"}, "a=1&b=2"),  # a dict is sorted
    ([("k", None)], "k"),
    ([("k", "")], "k="),
    ([("sp ace", "a b"), ("amp&", "x=y&z")], "sp%20ace=a%20b&amp%26=x%3Dy%26z"),
    ([("plus", "1+1"), ("pct", "100%")], "plus=1%2B1&pct=100%25"),
    ([("u", "\u00fc\u20ac")], "u=%C3%BC%E2%82%AC"),
    ([("n", 5), ("f", 1.5)], "n=5&f=1.5"),
]


def test_encode_property_bag():
    for props, want in BAGS:
        eq(t.encode_property_bag(props), want, repr(props))
    eq(t.encode_property_bag(None), "")
    raises(ConfigError, t.encode_property_bag, "a=1")
    raises(ConfigError, t.encode_property_bag, [("", "x")])
    raises(ConfigError, t.encode_property_bag, [("a", b"bytes")])
    raises(ConfigError, t.encode_property_bag, [("a", True)])
    raises(ConfigError, t.encode_property_bag, [("a",)])
    # The texts come from iothub.topicserr, loaded for each message and dropped again.
    has(raises(ConfigError, t.encode_property_bag, [("a", [])]), "property values must be")
    eq("iothub.topicserr" in sys.modules, False)


def test_decode_inverts_encode():
    for props, enc in BAGS:
        want = {}
        for k, v in props.items() if isinstance(props, dict) else props:
            want[k] = v if v is None or isinstance(v, str) else str(v)
        eq(r.decode(enc), want, enc)
        eq(r.decode("?" + enc), want, "?" + enc)


DECODE = [
    # doc example: null, empty, value
    ("?prop1&prop2=&prop3=a%20string", {"prop1": None, "prop2": "", "prop3": "a string"}),
    ("a=1&&b=2&", {"a": "1", "b": "2"}),  # empty segments tolerated
    ("%24.mid=1&%24.to=%2Fdevices%2Fd", {"$.mid": "1", "$.to": "/devices/d"}),
    ("$.to=/devices/d/messages/deviceBound&iothub-ack=full", None),
    ("x=a=b", {"x": "a=b"}),  # split on the first "=" only
    ("x=1+1", {"x": "1+1"}),  # "+" is not a space
    ("x=%zz", {"x": "%zz"}),
    ("", {}),
    ("?", {}),
]


def test_decode_table():
    for s, want in DECODE:
        if want is None:
            want = {"$.to": "/devices/d/messages/deviceBound", "iothub-ack": "full"}
        eq(r.decode(s), want, s)
    has(raises(ProtocolError, r.decode, "x=%FF"), "UTF-8")


TELEMETRY = [
    ({"device_id": "d"}, "devices/d/messages/events/"),
    ({"device_id": "d", "module_id": "m"}, "devices/d/modules/m/messages/events/"),
    (
        {"device_id": "d", "content_type": "application/json;charset=utf-8"},
        "devices/d/messages/events/$.ct=application%2Fjson%3Bcharset%3Dutf-8",
    ),
    (
        {
            "device_id": "my_device",
            "module_id": "my_module_id",
            "properties": [("key", "value"), ("key_two", "value2")],
        },
        "devices/my_device/modules/my_module_id/messages/events/key=value&key_two=value2",
    ),
    (
        {
            "device_id": "d",
            "properties": {"z": "last", "a b": "x&y", "empty": "", "null": None},
            "message_id": "m 1",
            "correlation_id": "c/1",
            "user_id": "u",
            "content_type": "application/json",
            "content_encoding": "utf-8",
        },
        "devices/d/messages/events/$.mid=m%201&$.cid=c%2F1&$.uid=u&$.ct=application%2Fjson"
        "&$.ce=utf-8&a%20b=x%26y&empty=&null&z=last",
    ),
]


def test_telemetry_topic():
    for kw, want in TELEMETRY:
        eq(t.telemetry_topic(**kw), want, repr(kw))
    # The bag round-trips through the decoder (as the hub would decode it).
    topic = TELEMETRY[-1][1]
    props = r.decode(topic[len("devices/d/messages/events/") :])
    eq(props["$.mid"], "m 1")
    eq(props["a b"], "x&y")
    eq(props["null"], None)
    raises(ConfigError, t.telemetry_topic, "d", message_id=5)
    raises(ConfigError, t.telemetry_topic, "d/x")


C2D = [
    # (topic, device, expected)
    ("devices/d/messages/devicebound/", "d", {}),
    ("devices/d/messages/devicebound", "d", {}),
    (
        "devices/useragent_c/messages/devicebound/%24.to=%2Fdevices%2Fuseragent_c%2Fmessages%2FdeviceBound&abc=123",
        "useragent_c",
        {"$.to": "/devices/useragent_c/messages/deviceBound", "abc": "123"},
    ),
    (
        "devices/useragent_c/messages/devicebound/$.mid=79eadb01-bd0d-472d-bd35-ccb76e70eab8"
        "&$.to=/devices/useragent_c/messages/deviceBound&iothub-ack=full",
        "useragent_c",
        {
            "$.mid": "79eadb01-bd0d-472d-bd35-ccb76e70eab8",
            "$.to": "/devices/useragent_c/messages/deviceBound",
            "iothub-ack": "full",
        },
    ),
    ("devices/d/messages/devicebound/?prop1&prop2=&prop3=a%20string", "d", None),
    # not mine
    ("devices/other/messages/devicebound/a=1", "d", "none"),
    ("devices/dd/messages/devicebound/", "d", "none"),
    ("devices/d/messages/deviceboundx", "d", "none"),
    ("devices/d/messages/events/", "d", "none"),
    ("$iothub/twin/res/200/?$rid=1", "d", "none"),
]


def test_c2d_topics():
    eq(clientx.c2d_subscribe_topic("d"), "devices/d/messages/devicebound/#")
    for topic, dev, want in C2D:
        got = _kind("message", topic, dev)
        if got is not None:
            eq(got[1], None, topic)  # no input name
            got = got[0]
        if want == "none":
            eq(got, None, topic)
        elif want is None:
            eq(got, {"prop1": None, "prop2": "", "prop3": "a string"}, topic)
        else:
            eq(got, want, topic)


def test_module_inputs():
    eq(clientx.module_inputs_subscribe_topic("d", "m"), "devices/d/modules/m/inputs/#")

    def inp(topic):
        return _kind("message", topic, "d", "m")

    eq(inp("devices/d/modules/m/inputs/in1/a=1&b"), ({"a": "1", "b": None}, "in1"))
    eq(inp("devices/d/modules/m/inputs/in1/"), ({}, "in1"))
    eq(inp("devices/d/modules/m/inputs/in1"), ({}, "in1"))
    eq(inp("devices/d/modules/m/inputs/in%201/"), ({}, "in 1"))
    eq(inp("devices/d/modules/n/inputs/in1/"), None)
    eq(inp("devices/d/messages/devicebound/"), None)
    has(
        raises(ProtocolError, r.parse, "devices/d/modules/m/inputs//x=1", "d", "m"),
        "input name",
    )


TWIN_RES = [
    ("$iothub/twin/res/200/?$rid=id_one", (200, "id_one", None)),
    ("$iothub/twin/res/204/?$rid=id_one&$version=16", (204, "id_one", 16)),
    ("$iothub/twin/res/204/?$version=6&$rid=1", (204, "1", 6)),  # any order
    ("$iothub/twin/res/429/?$rid=7&extra=x", (429, "7", None)),  # trailing property
    ("$iothub/twin/res/500/?$rid=a%20b", (500, "a b", None)),
    ("$iothub/twin/res/200/$rid=3", (200, "3", None)),  # without "?"
    # not mine
    ("$iothub/twin/PATCH/properties/desired/?$version=3", None),
    ("$iothub/twin/resx/200/?$rid=1", None),
    ("devices/d/messages/devicebound/", None),
    ("$iothub/methods/POST/m/?$rid=1", None),
]

TWIN_RES_BAD = [
    ("$iothub/twin/res/abc/?$rid=1", "status"),
    ("$iothub/twin/res/+200/?$rid=1", "status"),
    ("$iothub/twin/res//?$rid=1", "status"),
    ("$iothub/twin/res/", "status"),
    ("$iothub/twin/res/200/?x=1", "$rid"),
    ("$iothub/twin/res/200", "$rid"),
    ("$iothub/twin/res/200/?$rid", "$rid"),
    ("$iothub/twin/res/204/?$rid=1&$version=x", "$version"),
    ("$iothub/twin/res/204/?$rid=1&$version", "$version"),
    ("$iothub/twin/res/204/?$rid=1&$version=-1", "$version"),
]


def test_twin_topics():
    eq(clientx.TWIN_RES_SUB, "$iothub/twin/res/#")
    eq(clientx.TWIN_DESIRED_SUB, "$iothub/twin/PATCH/properties/desired/#")
    # request topics, completed by the request id (a decimal number)
    eq(tw.GET + "1", "$iothub/twin/GET/?$rid=1")
    eq(tw.PATCH + "42", "$iothub/twin/PATCH/properties/reported/?$rid=42")
    eq(tw.body({"a": 1}), b'{"a":1}')
    has(raises(ConfigError, tw.body, [1]), "reported properties must be a dict")
    for topic, want in TWIN_RES:
        eq(_kind("twin", topic), want, topic)
    for topic, sub in TWIN_RES_BAD:
        has(raises(ProtocolError, r.parse, topic, "d"), sub, topic)
    # The texts come from iothub.inerr, loaded for each message and dropped again.
    eq("iothub.inerr" in sys.modules, False)


def test_desired_topics():
    eq(_kind("desired", "$iothub/twin/PATCH/properties/desired/?$version=8"), 8)
    eq(_kind("desired", "$iothub/twin/PATCH/properties/desired/?$version=8&x=y"), 8)
    eq(_kind("desired", "$iothub/twin/PATCH/properties/desired/"), 0)
    eq(r.parse("$iothub/twin/PATCH/properties/reported/?$rid=1", "d"), None)
    eq(_kind("desired", "$iothub/twin/res/200/?$rid=1"), None)
    has(
        raises(ProtocolError, r.parse, "$iothub/twin/PATCH/properties/desired/?$version=id_1", "d"),
        "$version",
    )


def test_method_topics():
    eq(clientx.METHODS_SUB, "$iothub/methods/POST/#")

    def method(topic):
        return _kind("method", topic)

    eq(method("$iothub/methods/POST/TestMethod/?$rid=1"), ("TestMethod", "1"))
    eq(method("$iothub/methods/POST/comp*cmd/?$rid=ab&x=1"), ("comp*cmd", "ab"))
    eq(method("$iothub/methods/POST/a%20b/?$rid=9"), ("a b", "9"))
    eq(r.parse("$iothub/methods/res/200/?$rid=1", "d"), None)
    eq(method("$iothub/twin/res/200/?$rid=1"), None)
    has(raises(ProtocolError, r.parse, "$iothub/methods/POST/m", "d"), "method")
    has(raises(ProtocolError, r.parse, "$iothub/methods/POST//?$rid=1", "d"), "method")
    has(raises(ProtocolError, r.parse, "$iothub/methods/POST/m/?x=1", "d"), "$rid")


def test_method_responses():
    # (handler result, status and body on the wire)
    for result, status, body in (
        ((200, None), 200, b""),
        ({"a": 1}, 200, b'{"a":1}'),  # a payload alone is answered with 200
        ((65535, [1]), 65535, b"[1]"),
        ((404, "x"), 404, b'"x"'),
        (None, 200, b""),
    ):
        c = _Publisher()
        r.respond(c, "m", "2", result)
        eq(c.published, [("$iothub/methods/res/%d/?$rid=2" % status, body)], repr(result))
        eq(c.logged, [])
    # A rid parsed from a request goes back unchanged on the wire.
    name, rid = _kind("method", "$iothub/methods/POST/m/?$rid=r%2F1")
    c = _Publisher()
    r.respond(c, name, rid, (200, None))
    eq(c.published[0][0], "$iothub/methods/res/200/?$rid=r%2F1")
    # A status that is not an int in 0..65535, or an exception: answered 500 with the
    # error's name, and logged.
    for result, err in (
        ((-1, None), "ValueError"),
        ((65536, None), "ValueError"),
        (("200", None), "ValueError"),
        ((True, None), "ValueError"),
    ):
        c = _Publisher()
        r.respond(c, "m", "3", result)
        eq(c.published[0][0], "$iothub/methods/res/500/?$rid=3", repr(result))
        has(c.published[0][1].decode(), err, repr(result))
        has(c.logged[0], "method m raised", repr(result))
    c = _Publisher()
    r.respond(c, "m", "4", None, RuntimeError("boom"))
    eq(c.published, [("$iothub/methods/res/500/?$rid=4", b'{"error":"RuntimeError: boom"}')])
    has(c.logged[0], "method m raised RuntimeError")
    eq("iothub.inerr" in sys.modules, False)  # loaded for the answer, dropped again
