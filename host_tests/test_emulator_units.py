"""Unit tests of the emulator's pure parts: server MQTT codec, SAS verification, topics, twin,
registry. No sockets."""

import base64
import hashlib
import hmac
import json
import random
import struct
from urllib.parse import quote

import pytest

from iothub_emulator import auth, mqtt, sas, topics, twin
from iothub_emulator.registry import Registry, RegistryError, normalize_thumbprint

# ---- MQTT codec -------------------------------------------------------------------------------


def _s(x):
    b = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(b)) + b


def _pkt(first, body):
    n = len(body)
    rl = bytearray()
    while True:
        d, n = n % 128, n // 128
        rl.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes([first]) + bytes(rl) + body


def connect_bytes(cid="d1", user="u", password=b"p", clean=False, keepalive=60, will=None):
    flags = (
        (2 if clean else 0)
        | (0x80 if user is not None else 0)
        | (0x40 if password is not None else 0)
    )
    payload = _s(cid)
    if will:
        flags |= 4 | (will[2] << 3)
        payload += _s(will[0]) + _s(will[1])
    if user is not None:
        payload += _s(user)
    if password is not None:
        payload += _s(password)
    return _pkt(0x10, _s("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive) + payload)


SAMPLE = [
    connect_bytes(will=("devices/d1/messages/events/", b"bye", 1)),
    _pkt(0x32, _s("devices/d1/messages/events/a=b") + b"\x00\x07" + b"payload"),
    _pkt(0x30, _s("t/x") + b""),
    _pkt(0x40, b"\x00\x09"),
    _pkt(
        0x82,
        b"\x00\x05"
        + _s("$iothub/twin/res/#")
        + b"\x01"
        + _s("devices/d1/messages/devicebound/#")
        + b"\x02",
    ),
    _pkt(0xA2, b"\x00\x06" + _s("$iothub/twin/res/#")),
    bytes([0xC0, 0]),
    bytes([0xE0, 0]),
]


def _check_sample(pkts):
    assert [p.type for p in pkts] == [1, 3, 3, 4, 8, 10, 12, 14]
    c = pkts[0]
    assert (c.client_id, c.username, c.password, c.keepalive, c.clean_session) == (
        "d1",
        "u",
        b"p",
        60,
        False,
    )
    assert c.will == ("devices/d1/messages/events/", b"bye", 1, False)
    p = pkts[1]
    assert (p.topic, p.qos, p.packet_id, p.payload, p.dup, p.retain) == (
        "devices/d1/messages/events/a=b",
        1,
        7,
        b"payload",
        False,
        False,
    )
    assert pkts[2].qos == 0 and pkts[2].packet_id is None and pkts[2].payload == b""
    assert pkts[3].packet_id == 9
    assert pkts[4].topics == [("$iothub/twin/res/#", 1), ("devices/d1/messages/devicebound/#", 2)]
    assert pkts[5].topics == ["$iothub/twin/res/#"]


def test_reader_whole_bytewise_and_split_everywhere():
    data = b"".join(SAMPLE)
    _check_sample(mqtt.Reader().feed(data))
    r = mqtt.Reader()
    got = []
    for i in range(len(data)):
        got += r.feed(data[i : i + 1])
    _check_sample(got)
    rng = random.Random(5)
    for _ in range(50):
        r = mqtt.Reader()
        got = []
        i = 0
        while i < len(data):
            n = rng.randint(1, 40)
            got += r.feed(data[i : i + n])
            i += n
        _check_sample(got)


def test_reader_keeps_trailing_partial_packet():
    r = mqtt.Reader()
    assert [p.type for p in r.feed(bytes([0xC0, 0]) + bytes([0x30, 10, 0]))] == [12]
    assert r.feed(b"") == []
    assert [p.topic for p in r.feed(b"\x03abc" + b"hello")] == ["abc"]


@pytest.mark.parametrize(
    "data, words",
    [
        (bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), "more than four bytes"),
        (bytes([0x20, 2, 0, 0]), "not sent by clients"),  # CONNACK from a client
        (bytes([0x00, 0]), "not sent by clients"),  # reserved type 0
        (_pkt(0x36, _s("a/b") + b"\x00\x01"), "QoS 3"),
        (_pkt(0x38, _s("a/b")), "DUP set on a QoS 0"),
        (
            _pkt(0x80, b"\x00\x01" + _s("a") + b"\x01"),
            "reserved fixed-header flags",
        ),  # SUBSCRIBE flags 0
        (bytes([0x82, 2, 0, 1]), "without any topic filter"),
        (_pkt(0x82, b"\x00\x01" + _s("a") + b"\x03"), "requested QoS byte"),
        (_pkt(0x82, b"\x00\x01" + _s("a/#/b") + b"\x01"), "misplaced '#'"),
        (_pkt(0x32, _s("a/+") + b"\x00\x01"), "wildcard in topic name"),
        (_pkt(0x32, _s("a/b") + b"\x00\x00"), "packet identifier 0"),
        (bytes([0x40, 3, 0, 1, 0]), "trailing bytes"),
        (bytes([0x40, 1, 0]), "truncated"),
        (bytes([0xC0, 1, 0]), "trailing bytes"),
        (bytes([0x30, 4, 0, 2, 0xC3, 0x28]), "not valid UTF-8"),
        (connect_bytes(user=None, password=b"x"), "password flag set without the user name flag"),
    ],
)
def test_reader_rejects_malformed(data, words):
    with pytest.raises(mqtt.MQTTError, match=words.replace("(", r"\(").replace("+", r"\+")):
        mqtt.Reader().feed(data)


def test_reader_size_limit_before_body_arrives():
    r = mqtt.Reader(max_packet=1000)
    with pytest.raises(mqtt.MQTTError, match="exceeds the limit of 1000"):
        r.feed(bytes([0x30]) + bytes([0xE9, 0x07]))  # 1001, no body yet


def test_reader_old_protocol_marked_unsupported():
    body = _s("MQIsdp") + bytes([3, 2]) + b"\x00\x3c" + _s("x")
    (p,) = mqtt.Reader().feed(_pkt(0x10, body))
    assert p.unsupported and p.protocol == "MQIsdp" and p.level == 3


def test_reader_random_bytes_never_escape_as_other_errors():
    rng = random.Random(1)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
        try:
            mqtt.Reader(max_packet=4096).feed(data)
        except mqtt.MQTTError:
            pass


def test_encoders_exact_bytes():
    assert mqtt.connack(True, 0) == b"\x20\x02\x01\x00"
    assert mqtt.connack(False, 5) == b"\x20\x02\x00\x05"
    assert mqtt.puback(0x1234) == b"\x40\x02\x12\x34"
    assert mqtt.suback(7, [1, 0x80]) == b"\x90\x04\x00\x07\x01\x80"
    assert mqtt.unsuback(7) == b"\xb0\x02\x00\x07"
    assert mqtt.pingresp() == b"\xd0\x00"
    assert mqtt.publish("a/b", b"xy", 1, 3, dup=True) == b"\x3a\x09\x00\x03a/b\x00\x03xy"
    big = mqtt.publish("t", b"z" * 200)
    assert big[:3] == b"\x30\xcb\x01"  # 203 = 0x4b + 1*128


def test_topic_matches():
    assert mqtt.topic_matches(
        "devices/d/messages/devicebound/#", "devices/d/messages/devicebound/a=b"
    )
    assert mqtt.topic_matches("a/#", "a")
    assert mqtt.topic_matches("a/+/c", "a/b/c")
    assert not mqtt.topic_matches("a/+/c", "a/b/d")
    assert not mqtt.topic_matches("#", "$iothub/twin/res/200")


# ---- SAS --------------------------------------------------------------------------------------


def _token(sr, key, se, sig_case=None, order=("sr", "sig", "se"), skn=None):
    sig = base64.b64encode(
        hmac.new(base64.b64decode(key), ("%s\n%s" % (sr, se)).encode(), hashlib.sha256).digest()
    ).decode()
    qsig = quote(sig, safe="")
    if sig_case == "lower":
        qsig = qsig.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    f = {"sr": sr, "sig": qsig, "se": str(se)}
    if skn:
        f["skn"] = skn
        order = order + ("skn",)
    return "SharedAccessSignature " + "&".join("%s=%s" % (k, f[k]) for k in order)


KEY = base64.b64encode(b"k" * 32).decode()
HOST = "myhub.azure-devices.net"
PATH = ["devices", "dev1"]


def test_sas_java_vector_raw_slashes_accepted():
    # docs/protocol.md 3.3 P4: the Java SDK signs and sends the raw (unencoded) resource URI.
    token = "SharedAccessSignature sig=ZrTYgp6uRmbDl4lzzewxFD9FoaNKIK7G2bdivDbtc9A%3D&se=1462333672&sr=sdktesthub.private.azure-devices-int.net/devices/test8"
    f = sas.verify(
        token,
        "q+DKVojmMz014RjAwpNGZbAkdOocSVWMKPOccLfUmLE=",
        "sdktesthub.private.azure-devices-int.net",
        ["devices", "test8"],
        now=1462333000,
    )
    assert f["expiry"] == 1462333672
    with pytest.raises(sas.SASError, match="expired"):
        sas.verify(
            token,
            "q+DKVojmMz014RjAwpNGZbAkdOocSVWMKPOccLfUmLE=",
            "sdktesthub.private.azure-devices-int.net",
            ["devices", "test8"],
            now=1462333672,
        )


def test_sas_node_vector_signature():
    # P2: key base64("password"), resource "uri", expiry 12345 -> sig kcWx...hk%3D
    f = sas.parse(
        "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345"
    )
    assert sas.signature_ok(f, "cGFzc3dvcmQ=")
    assert not sas.signature_ok(f, base64.b64encode(b"passwore").decode())


@pytest.mark.parametrize(
    "sr",
    [
        quote(HOST + "/devices/dev1", safe=""),  # python / azure-sdk-for-c: %2F
        quote(HOST + "/devices/dev1", safe="").replace("%2F", "%2f"),  # doc / .NET style
        HOST + "/devices/dev1",  # Java: raw
        quote("MyHub.Azure-Devices.NET/devices/dev1", safe=""),  # host is case-insensitive
        quote(HOST + "/devices/dev1/", safe=""),  # trailing slash
    ],
)
def test_sas_accepts_every_sr_encoding(sr):
    for order in (("sr", "sig", "se"), ("sig", "se", "sr"), ("se", "sr", "sig")):
        for case in (None, "lower"):
            sas.verify(_token(sr, KEY, 2000, case, order), KEY, HOST, PATH, now=1000)


@pytest.mark.parametrize(
    "token, words",
    [
        ("Bearer x", "not a SharedAccessSignature"),
        ("SharedAccessSignature sr=a&se=5", "lacks 'sig'"),
        ("SharedAccessSignature sr=a&sig=b&se=5&sr=c", "duplicate"),
        ("SharedAccessSignature sr=a&sig=b&se=5&foo=1", "unknown token field"),
        ("SharedAccessSignature sr=a&sig=b&se", "has no '='"),
        ("SharedAccessSignature sr=a&sig=b&se=12x", "not a decimal"),
        (
            _token(
                quote(HOST + "/devices/dev1", safe=""), base64.b64encode(b"x" * 32).decode(), 2000
            ),
            "signature does not match",
        ),
        (
            _token(quote("otherhub.azure-devices.net/devices/dev1", safe=""), KEY, 2000),
            "not this hub",
        ),
        (_token(quote(HOST + "/devices/dev10", safe=""), KEY, 2000), "does not cover"),
        (
            _token(quote(HOST + "/devices", safe=""), KEY, 2000),
            "does not cover",
        ),  # device key: exact
        (_token(quote(HOST + "/devices/dev1/modules/m", safe=""), KEY, 2000), "does not cover"),
        (_token(quote(HOST + "/devices/dev1", safe=""), KEY, 1000), "expired"),
    ],
)
def test_sas_rejections(token, words):
    with pytest.raises(sas.SASError, match=words) as e:
        sas.verify(token, KEY, HOST, PATH, now=1000)
    assert KEY not in str(e.value)


def test_sas_policy_tokens_cover_by_segment_prefix():
    for sr in (HOST, HOST + "/devices", HOST + "/devices/dev1"):
        sas.verify(
            _token(quote(sr, safe=""), KEY, 2000, skn="device"),
            KEY,
            HOST,
            PATH,
            now=1000,
            exact=False,
        )
    with pytest.raises(sas.SASError, match="does not cover"):
        sas.verify(
            _token(quote(HOST + "/devices/dev", safe=""), KEY, 2000, skn="device"),
            KEY,
            HOST,
            PATH,
            now=1000,
            exact=False,
        )


def test_tool_tokens_verify_and_match_the_azure_sdk():
    from azure.iot.device.common.auth import sastoken, signing_mechanism

    from iothub_tool.sas import resource_uri, sas_token

    for module in (None, "mod1"):
        uri = resource_uri(HOST, "dev1", module)
        mine = sas_token(uri, KEY, 1999999999)
        # The official SDK's token for the same inputs, with its expiry pinned.
        tok = sastoken.RenewableSasToken(uri, signing_mechanism.SymmetricKeySigningMechanism(KEY))
        tok._expiry_time = 1999999999
        assert mine == tok._build_token()
        sas.verify(mine, KEY, HOST, PATH + (["modules", module] if module else []), now=1000)
    with_policy = sas_token(HOST, KEY, 1999999999, key_name="device")
    assert with_policy.endswith("&se=1999999999&skn=device")
    sas.verify(with_policy, KEY, HOST, PATH, now=1000, exact=False)


def test_tool_dps_key_vector():
    from iothub_tool.sas import derive_device_key

    group = base64.b64encode(b"group-key-0123456789abcdef").decode()
    want = base64.b64encode(
        hmac.new(base64.b64decode(group), b"reg-01", hashlib.sha256).digest()
    ).decode()
    assert derive_device_key(group, "reg-01") == want


# ---- user name ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "username, want",
    [
        ("h/d/?api-version=2021-04-12", ("h", "d", None, "2021-04-12")),
        ("h/d/api-version=2016-11-14", ("h", "d", None, "2016-11-14")),
        ("h/d", ("h", "d", None, None)),
        ("h/d/", ("h", "d", None, None)),
        (
            "h/d/m/?api-version=2020-09-30&DeviceClientType=azsdk-c%2F1.6.0",
            ("h", "d", "m", "2020-09-30"),
        ),
    ],
)
def test_parse_username_forms(username, want):
    host, d, m, q = auth.parse_username(username)
    assert (host, d, m, q.get("api-version")) == want


def test_parse_username_decodes_model_id_and_client_type_any_hex_case():
    _, _, _, q = auth.parse_username(
        "h/d/?api-version=2020-09-30&DeviceClientType=iothubclient%2f1.9.0%20(native%3b%20Linux)&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1"
    )
    assert q["model-id"] == "dtmi:com:example:Thermostat;1"
    assert q["DeviceClientType"] == "iothubclient/1.9.0 (native; Linux)"


@pytest.mark.parametrize(
    "username", ["", "h", "h//?api-version=1", "h/a/b/c/?x=1", "/d/?api-version=1"]
)
def test_parse_username_malformed(username):
    with pytest.raises(ValueError):
        auth.parse_username(username)


# ---- topics ---------------------------------------------------------------------------------


def test_decode_bag_forms():
    assert topics.decode_bag("?$.mid=1&a=b%20c") == [("$.mid", "1"), ("a", "b c")]
    assert topics.decode_bag("%24.ct=application%2fjson&k&e=&p=a+b") == [
        ("$.ct", "application/json"),
        ("k", None),
        ("e", ""),
        ("p", "a+b"),
    ]
    assert topics.decode_bag("") == []
    custom, system = topics.split_properties(topics.decode_bag("%24.mid=m1&$.cid=c&x=1"))
    assert system == {"mid": "m1", "cid": "c"} and custom == {"x": "1"}


def test_encode_bag_roundtrip_keeps_one_topic_level():
    pairs = [
        ("$.mid", "m 1"),
        ("$.to", "/devices/d/messages/deviceBound"),
        ("k/ey", "v&=x"),
        ("flag", None),
        ("e", ""),
    ]
    s = topics.encode_bag(pairs)
    assert "/" not in s and s.startswith("$.mid=m%201&$.to=%2Fdevices")
    assert topics.decode_bag(s) == pairs


def test_classify_publish_and_filters():
    ident = topics.Identity("d1")
    assert ident.classify_publish("devices/d1/messages/events/")[0] == "telemetry"
    assert ident.classify_publish("devices/d1/messages/events")[0] == "telemetry"
    assert ident.classify_publish("$iothub/twin/GET/?$rid=7") == ("twin_get", {"$rid": "7"})
    assert (
        ident.classify_publish("$iothub/twin/PATCH/properties/reported/?$rid=x%20y")[1]["$rid"]
        == "x y"
    )
    assert ident.classify_publish("$iothub/methods/res/200/?$rid=1") == ("method_res", (200, "1"))
    for bad in (
        "devices/d2/messages/events/",
        "devices/d1/messages/devicebound/",
        "foo",
        "$iothub/twin/GET/",
        "$iothub/methods/res/abc/?$rid=1",
        "$iothub/twin/PATCH/properties/desired/?$rid=1",
    ):
        assert ident.classify_publish(bad)[0] is None, bad
    assert ident.classify_filter("devices/d1/messages/devicebound/#") == ("c2d", None)
    assert ident.classify_filter("devices/+/messages/devicebound/#") == ("c2d", None)
    assert ident.classify_filter("devices/d2/messages/devicebound/#")[1].startswith("foreign")
    assert ident.classify_filter("$iothub/#")[1].startswith("unknown")
    mod = topics.Identity("d1", "m1")
    assert mod.classify_publish("devices/d1/modules/m1/messages/events/a=1")[0] == "telemetry"
    assert mod.classify_publish("devices/d1/messages/events/")[0] is None
    assert mod.classify_filter("devices/d1/modules/m1/inputs/#") == ("inputs", None)
    assert mod.classify_filter("devices/d1/modules/m2/inputs/#")[1].startswith("foreign")


# ---- twin -----------------------------------------------------------------------------------


def test_twin_versions_merge_and_null_deletes():
    t = twin.Twin()
    assert t.document() == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    assert t.patch_reported({"a": {"b": 1, "c": 2}, "x": 1}) == 2
    assert t.patch_reported({"a": {"b": None, "d": [1, 2]}, "x": None}) == 3
    assert t.document()["reported"] == {"a": {"c": 2, "d": [1, 2]}, "$version": 3}
    assert t.patch_desired({"rate": 5}) == 2
    for bad in ([], "x", {"$version": 1}, {"a.b": 1}, {"a": {"b c": 1}}):
        with pytest.raises(twin.TwinError) as e:
            t.patch_reported(bad)
        assert e.value.status == 400
    with pytest.raises(twin.TwinError) as e:
        t.patch_reported({"big": "x" * 40000})
    assert e.value.status == 413
    assert t.reported_version == 3  # refused patches change nothing


# ---- registry -------------------------------------------------------------------------------


def test_registry_persists_and_validates(tmp_path):
    r = Registry(str(tmp_path))
    key = r.add("dev1")
    assert len(base64.b64decode(key)) == 32
    r.add("dev2", x509_thumbprint="aa:bb" + "0" * 36)
    r.add("dev1", module_id="m1", key=KEY)
    r.add_policy("device", key=KEY)
    again = Registry(str(tmp_path))
    assert again.get("dev1")["key"] == key and again.get("dev1", "m1")["key"] == KEY
    assert again.get("dev2")["thumbprints"] == ["AABB" + "0" * 36]
    assert again.policy("device")["key"] == KEY
    assert (
        json.load(open(tmp_path / "registry.json"))["devices"]["dev1"]["modules"]["m1"]["auth"]
        == "sas"
    )
    for kw in (
        {"key": "not base64!"},
        {"key": base64.b64encode(b"short").decode()},
        {"x509_thumbprint": "abc"},
        {"key": KEY, "x509_ca": True},
    ):
        with pytest.raises(RegistryError):
            r.add("dev3", **kw)
    with pytest.raises(RegistryError):
        r.add("bad id with spaces")
    assert normalize_thumbprint("a" * 64) == "A" * 64
    # Another process (the CLI) edits the file: a running registry sees it and does not overwrite it.
    again.add("cli-dev", key=KEY)
    assert r.get("cli-dev")["key"] == KEY
    r.add("dev4")
    assert Registry(str(tmp_path)).get("cli-dev") is not None
