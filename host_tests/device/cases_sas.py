# SAS, HMAC and percent-encoding cases: run on CPython and on the unix port (coretest.py).
# Known answers: RFC 4231 (HMAC-SHA256) and the SDK vectors P1-P8 of docs/protocol.md section 3.3.

import binascii

from coretest import Rng, eq, has, raises

import iothub.sas as sas
from iothub.errors import ConfigError, ProtocolError

QUOTE = [
    ("", ""),
    ("abcXYZ019", "abcXYZ019"),
    ("-_.~", "-_.~"),
    ("a b", "a%20b"),  # never "+"
    ("a+b", "a%2Bb"),
    ("a/b", "a%2Fb"),
    ("%", "%25"),
    ("=&?#", "%3D%26%3F%23"),
    ("$.ct", "%24.ct"),
    ("application/json;charset=utf-8", "application%2Fjson%3Bcharset%3Dutf-8"),
    ("\u00fc\u20ac\U0001f600", "%C3%BC%E2%82%AC%F0%9F%98%80"),
    ("dtmi:com:example:Thermostat;1", "dtmi%3Acom%3Aexample%3AThermostat%3B1"),
    ("\x00\x7f", "%00%7F"),
]

UNQUOTE = [
    ("", ""),
    ("plain", "plain"),
    ("a%20b", "a b"),
    ("a+b", "a+b"),  # "+" stays "+"
    ("%2f%2F", "//"),  # hex case-insensitive
    ("%24.mid", "$.mid"),
    ("%C3%BC", "\u00fc"),
    ("%c3%bc", "\u00fc"),
    ("100%", "100%"),  # malformed escapes are kept, like urllib
    ("%4", "%4"),
    ("%zz", "%zz"),
    ("%%41", "%A"),
    ("%F0%9F%98%80", "\U0001f600"),
]

# RFC 4231 section 4: (key, data, HMAC-SHA256 hex); case 5 compares the first 128 bits.
RFC4231 = [
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    ),
    (
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    ),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size data."
        b" The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
]


def _hex(b):
    return binascii.hexlify(b).decode()


def _fields(token):
    # "SharedAccessSignature a=1&b=2" -> {"a": "1", "b": "2"}
    head = "SharedAccessSignature "
    assert token.startswith(head)
    out = {}
    for part in token[len(head) :].split("&"):
        k, v = part.split("=", 1)
        out[k] = v
    return out


def test_quote_table():
    for s, want in QUOTE:
        eq(sas.quote(s), want, "quote(%r)" % s)
    eq(sas.quote(b"a b"), "a%20b", "quote(bytes)")


def test_quote_random_strings():
    # Observation compared across runtimes; CPython side also checks it against urllib.
    pool = "aZ09-_.~ +/%?&=#$;:@!*'()\u00e9\u00fc\u20ac\u4e2d\U0001f600\x01\x7f"
    rng = Rng(4231)
    out = []
    for _ in range(200):
        n = rng.below(12)
        s = "".join(pool[rng.below(len(pool))] for _ in range(n))
        q = sas.quote(s)
        eq(sas.unquote(q), s, "unquote(quote(%r))" % s)
        out.append([s, q])
    return out


def test_unquote_table():
    for s, want in UNQUOTE:
        eq(sas.unquote(s), want, "unquote(%r)" % s)


def test_unquote_invalid_utf8_is_protocol_error():
    # Including forms MicroPython's own decoder accepts: overlong, surrogate, > U+10FFFF.
    for s in ("%FF", "%C3", "%ED%A0%80x", "a%80", "%C0%80", "%E0%80%80", "%F5%80%80%80"):
        has(raises(ProtocolError, sas.unquote, s), "UTF-8", s)


def test_hmac_rfc4231():
    for i, (key, data, want) in enumerate(RFC4231):
        got = _hex(sas.hmac_sha256(key, data))
        eq(got[: len(want)], want, "RFC 4231 test case %d" % (i + 1))


def test_p1_python_signing_mechanism():
    key = sas.decode_key("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=")
    got = sas.b64encode(sas.hmac_sha256(key, b"sign this message"))
    eq(got, "8NJRMT83CcplGrAGaUVIUM/md5914KpWVNngSVoF9/M=", "P1")
    eq(sas.signature("NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg=", "sign this message"), got)


def test_p2_node_tokens():
    key = "cGFzc3dvcmQ="  # base64("password")
    tok = sas.sas_token("uri", key, 12345)
    eq(
        tok,
        "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D&se=12345",
        "P2",
    )
    eq(sas.sas_token("uri", b"password", 12345), tok, "raw key bytes")
    named = sas.sas_token("uri", key, 12345, key_name="encode('Me')")
    # Node orders the fields sr, sig, skn, se; ours puts skn last. Same fields, same values.
    node = (
        "SharedAccessSignature sr=uri&sig=kcWxXAK2OAaAoq2oCkaGzX2NMqDB8nCyNuq2fPYCDhk%3D"
        "&skn=encode%28%27Me%27%29&se=12345"
    )
    eq(_fields(named), _fields(node), "P2 with key name")
    eq(named, tok + "&skn=encode%28%27Me%27%29", "P2 with key name, our field order")


def test_p4_p5_java_raw_uri():
    # Java signs the raw URI (slashes not encoded): our signature() over the same message.
    msg = "sdktesthub.private.azure-devices-int.net/devices/test8\n1462333672"
    p4 = sas.quote(sas.signature("q+DKVojmMz014RjAwpNGZbAkdOocSVWMKPOccLfUmLE=", msg))
    eq(p4, "ZrTYgp6uRmbDl4lzzewxFD9FoaNKIK7G2bdivDbtc9A%3D", "P4")
    p5 = sas.quote(sas.signature(sas.b64encode(b"someKey"), msg))
    eq(p5, "muQ9Ny9BYertoUY%2BtyisIG16b67p8QHrDefXA4V1qLM%3D", "P5")


def test_p7_hub_format():
    host, dev, mod, se = "myiothub.azure-devices.net", "my_device", "my_module", 1578941692
    sig = "cS1eHM/lDjsRsrZV9508wOFrgmZk4g8FNg8NwHVSiSQ"
    uri = sas.device_resource_uri(host, dev)
    eq(uri, "myiothub.azure-devices.net/devices/my_device")
    eq(sas.string_to_sign(uri, se), "myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692")
    muri = sas.device_resource_uri(host, dev, mod)
    eq(
        sas.string_to_sign(muri, se),
        "myiothub.azure-devices.net%2Fdevices%2Fmy_device%2Fmodules%2Fmy_module\n1578941692",
    )
    want = (
        "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device"
        "&sig=cS1eHM%2FlDjsRsrZV9508wOFrgmZk4g8FNg8NwHVSiSQ&se=1578941692"
    )
    eq(sas.token_from_signature(sas.quote(uri), sig, se), want, "P7 password")
    eq(
        sas.token_from_signature(sas.quote(uri), sig, se, "iothubowner"),
        want + "&skn=iothubowner",
        "P7 with skn",
    )


def test_p8_dps_format():
    # azure-sdk-for-c writes a literal lowercase "%2f" for DPS; we encode uniformly with
    # uppercase hex (like the python SDK). The service decodes both: compare decoded.
    se = 1578941692
    uri = sas.dps_resource_uri("0neFEEDC0DE", "myRegistrationId")
    got = sas.string_to_sign(uri, se)
    want = "0neFEEDC0DE%2fregistrations%2fmyRegistrationId\n1578941692"
    eq(got, want.replace("%2f", "%2F"), "P8 string to sign, uppercase hex")
    eq(sas.unquote(got), sas.unquote(want), "P8 decoded")
    sig = "cS1eHM/lDjsRsrZV9508wOFrgmZk4g8FNg8NwHVSiSQ"
    tok = sas.token_from_signature(sas.quote(uri), sig, se)
    want_tok = (
        "SharedAccessSignature sr=0neFEEDC0DE%2fregistrations%2fmyRegistrationId"
        "&sig=cS1eHM%2FlDjsRsrZV9508wOFrgmZk4g8FNg8NwHVSiSQ&se=1578941692"
    )
    eq(tok, want_tok.replace("%2f", "%2F"), "P8 password")


def test_sas_token_signs_the_encoded_uri():
    key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
    uri = sas.device_resource_uri("h.azure-devices.net", "dev 1", "m/x")
    tok = sas.sas_token(uri, key, 1700000000)
    f = _fields(tok)
    eq(f["sr"], "h.azure-devices.net%2Fdevices%2Fdev%201%2Fmodules%2Fm%2Fx")
    eq(f["se"], "1700000000")
    eq(sas.unquote(f["sig"]), sas.signature(key, f["sr"] + "\n" + f["se"]), "sig")
    check_len = len(sas.unquote(f["sig"]))
    eq(check_len, 44, "base64 of 32 bytes")
    return tok


def test_derive_device_key_docs_example():
    # Example of MicrosoftDocs azure-docs articles/iot-dps/how-to-legacy-device-symm-key.md
    group = (
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
    )
    eq(
        sas.derive_device_key(group, "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"),
        "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=",
    )


BAD_KEYS = [
    ("", "empty"),
    ("abc", "multiple of 4"),
    ("ab$d", "not valid base64"),
    ("ab=d", "not valid base64"),
    ("a===", "padding"),
    ("abcd efg", "not valid base64"),
    ("\u00e9bcd", "not valid base64"),
    ("====", "padding"),
]


def test_decode_key_errors_never_echo_the_key():
    for key, sub in BAD_KEYS:
        msg = raises(ConfigError, sas.decode_key, key)
        has(msg, sub, repr(key))
        if key:
            assert key not in msg, "key echoed in %r" % msg
        msg = raises(ConfigError, sas.sas_token, "h/devices/d", key, 1)
        if key:
            assert key not in msg
    # A long, realistic-looking but broken key: no fragment of it in the message.
    key = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg"  # padding lost
    msg = raises(ConfigError, sas.derive_device_key, key, "reg")
    has(msg, "group enrollment key is not valid base64")
    for i in range(0, len(key) - 6):
        assert key[i : i + 6] not in msg


def test_bad_arguments():
    key = "cGFzc3dvcmQ="
    for expiry in (-1, -0.5, "12345", None, True, float("nan"), float("inf")):
        msg = raises(ConfigError, sas.sas_token, "uri", key, expiry)
        has(msg, "expiry", repr(expiry))
        has(msg, "iothub.clock.unix_time() + 3600", repr(expiry))  # says what to pass


def test_float_expiry_from_time_time():
    # time.time() is a float on the unix port: time.time() + 3600 is whole seconds, rounded down
    key = "cGFzc3dvcmQ="
    eq(sas.sas_token("uri", key, 12345.9), sas.sas_token("uri", key, 12345))
    has(sas.sas_token("uri", key, 12345.9), "&se=12345")
    eq(sas.string_to_sign("uri", 7.0), "uri\n7")
    has(raises(ConfigError, sas.sas_token, "", key, 1), "resource URI")
    has(raises(ConfigError, sas.sas_token, "uri", 12, 1), "key")
    has(raises(ConfigError, sas.sas_token, "uri", b"", 1), "empty")
    has(raises(ConfigError, sas.device_resource_uri, "", "d"), "hostname")
    has(raises(ConfigError, sas.device_resource_uri, "h", ""), "device id")
    has(raises(ConfigError, sas.device_resource_uri, "h", "d", ""), "module id")
    has(raises(ConfigError, sas.dps_resource_uri, "scope", ""), "registration id")
    has(raises(ConfigError, sas.derive_device_key, key, ""), "registration id")


def test_resource_uris():
    eq(sas.device_resource_uri("h", "d"), "h/devices/d")
    eq(sas.device_resource_uri("h", "d", "m"), "h/devices/d/modules/m")
    eq(sas.dps_resource_uri("0ne1", "r"), "0ne1/registrations/r")
