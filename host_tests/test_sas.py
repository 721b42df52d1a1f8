"""SAS, HMAC-SHA256 and percent-encoding: the same cases on CPython and the unix port,
plus CPython-only cross-checks against independent implementations (hmac, urllib)."""

import base64
import hashlib
import hmac
import urllib.parse

import corerun
import coretest

from iothub import sas

corerun.install("cases_sas", globals())


def test_quote_matches_urllib_on_random_strings():
    pairs = coretest.run_case("cases_sas", "test_quote_random_strings")
    assert len(pairs) == 200
    for s, q in pairs:
        assert q == urllib.parse.quote(s, safe=""), s
        assert sas.unquote(q) == urllib.parse.unquote(q)


def test_sas_token_against_independent_implementation():
    key_b64 = base64.b64encode(bytes(range(32))).decode()
    for uri, se, skn in (
        ("hub.azure-devices.net/devices/d1", 1, None),
        ("hub.azure-devices.net/devices/d\u00e9v ice/modules/m~1", 2000000000, "device"),
        ("0ne00000001/registrations/reg-1", 1700000000, "registration"),
    ):
        sr = urllib.parse.quote(uri, safe="")
        mac = hmac.new(base64.b64decode(key_b64), (sr + "\n" + str(se)).encode(), hashlib.sha256)
        sig = urllib.parse.quote(base64.b64encode(mac.digest()).decode(), safe="")
        want = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, sig, se)
        if skn:
            want += "&skn=" + skn
        assert sas.sas_token(uri, key_b64, se, key_name=skn) == want


def test_hmac_against_stdlib_for_many_key_sizes():
    for n in (0, 1, 31, 32, 63, 64, 65, 128, 200):
        key = bytes((i * 7 + n) & 0xFF for i in range(n))
        msg = bytes(range(n % 50)) * 3
        assert sas.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
