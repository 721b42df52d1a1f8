# Connection-string cases: run on CPython and on the unix port (coretest.py).

from coretest import eq, has, raises

from iothub.connstr import parse_connection_string as parse
from iothub.errors import ConfigError

KEY = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
H = "HostName=hub.azure-devices.net"

GOOD = [
    (
        H + ";DeviceId=dev1;SharedAccessKey=" + KEY,
        {"HostName": "hub.azure-devices.net", "DeviceId": "dev1", "SharedAccessKey": KEY},
    ),
    (
        # any order, module, gateway, trailing ";" and blanks around segments
        " DeviceId=dev1;ModuleId=mod-a;SharedAccessKey="
        + KEY
        + "; "
        + H
        + ";GatewayHostName=edge;",
        {
            "HostName": "hub.azure-devices.net",
            "DeviceId": "dev1",
            "ModuleId": "mod-a",
            "SharedAccessKey": KEY,
            "GatewayHostName": "edge",
        },
    ),
    (H + ";DeviceId=dev1;x509=true", {"HostName": "hub.azure-devices.net", "DeviceId": "dev1"}),
    (H + ";DeviceId=dev1;x509=True", {"HostName": "hub.azure-devices.net", "DeviceId": "dev1"}),
    (
        H + ";DeviceId=d;SharedAccessKeyName=device;SharedAccessKey=" + KEY + ";x509=false",
        {
            "HostName": "hub.azure-devices.net",
            "DeviceId": "d",
            "SharedAccessKeyName": "device",
            "SharedAccessKey": KEY,
        },
    ),
    # "=" inside a value (base64 padding) splits on the first "=" only
    (H + ";DeviceId=a=b;SharedAccessKey=" + KEY, None),
]

BAD = [
    ("", "empty"),
    ("   ", "empty"),
    (";;", "missing HostName"),
    (H + ";DeviceId", "segment 2 has no '='"),
    (H + ";=x;DeviceId=d", "empty field name"),
    ("DeviceId=d;SharedAccessKey=" + KEY, "missing HostName"),
    (H + ";SharedAccessKey=" + KEY, "missing DeviceId"),
    (H + ";DeviceId=d", "missing SharedAccessKey"),
    (H + ";DeviceId=d;x509=false", "missing SharedAccessKey"),
    (H + ";DeviceId=d;x509=true;SharedAccessKey=" + KEY, "mutually exclusive"),
    (H + ";DeviceId=d;DeviceId=e;SharedAccessKey=" + KEY, "duplicate field DeviceId"),
    (H + ";DeviceId=d;SharedAccessKey=" + KEY + ";Colour=blue", "segment 4 is not a known field"),
    (H + ";deviceid=d;SharedAccessKey=" + KEY, "did you mean DeviceId?"),
    (H + ";DeviceId=d;x509=yes", "x509 must be true or false"),
    (H + ";DeviceId=;SharedAccessKey=" + KEY, "field DeviceId is empty"),
    (H + ";DeviceId=d;SharedAccessKey=" + KEY[:-1], "SharedAccessKey is not valid base64"),
    (H + ";DeviceId=d;SharedAccessKey=" + KEY[:20] + "!" + KEY[21:], "not valid base64"),
]


def test_good_connection_strings():
    for cs, want in GOOD:
        got = parse(cs)
        if want is None:
            eq(got["DeviceId"], "a=b", cs)
            continue
        want = dict(want)
        want["x509"] = cs.lower().find("x509=true") >= 0
        eq(got, want, cs)


def test_bad_connection_strings_name_the_problem_without_the_key():
    for cs, sub in BAD:
        msg = raises(ConfigError, parse, cs)
        has(msg, sub, repr(cs))
        has(msg, "connection string")
        # Never any piece of the key value in the message.
        for i in range(0, len(KEY) - 8):
            assert KEY[i : i + 8] not in msg, "key fragment in %r" % msg


def test_segment_without_equals_is_not_echoed():
    # A stray key fragment with no "=" must not be echoed either.
    msg = raises(ConfigError, parse, H + ";DeviceId=d;" + KEY[:40])
    has(msg, "segment 3")
    assert KEY[:40] not in msg


def test_semicolon_inside_the_key_is_not_echoed():
    # "abc;def=ghi" as a key: the piece after ";" looks like a field and must not be shown.
    cut = 12
    cs = H + ";DeviceId=d;SharedAccessKey=" + KEY[:cut] + ";" + KEY[cut:]
    msg = raises(ConfigError, parse, cs)
    has(msg, "a ';' inside SharedAccessKey?")
    for i in range(0, len(KEY) - 6):
        assert KEY[i : i + 6] not in msg, "key fragment in %r" % msg


def test_not_a_string():
    has(raises(ConfigError, parse, None), "expected a str")
    has(raises(ConfigError, parse, b"HostName=h"), "expected a str")
