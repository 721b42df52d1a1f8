"""iothub.tls_context: configuration, bad input and the MFL fallback, on the unix port
(real `tls` module) and, for everything decided before the firmware is touched, on CPython.

Wire behaviour is in test_tls_wire.py; MFL on the wire in test_tls_mfl.py."""

import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import iothub
import mpyrun
from iothub.errors import ConfigError, TLSError

G3_SHA256 = "31AD6648F8104138C738F39EA4320133393E3A18CC02296EF97C2AC9EF6731D0"
G2_SHA256 = "CB3CCBB76031E5E0138F8DD39A23F9DE47FFC35E43C1144CEA27D46A5AB1CB5F"
SUITES = {
    "ecc": [
        "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
        "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384",
    ],
    "rsa": [
        "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
        "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
        "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384",
    ],
}


def _self_signed(key, cn="odd"):
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(key, algo).public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="session")
def material(pki):
    ec_cert, ec_key, _, _ = pki.issue_client_cert("dev-ec", "ec256")
    _, other_ec_key, _, _ = pki.issue_client_cert("dev-ec2", "ec256")
    _, p384_key, _, _ = pki.issue_client_cert("dev-p384", "ec384")
    rsa_cert, rsa_key, _, _ = pki.issue_client_cert("dev-rsa", "rsa2048")
    k521 = ec.generate_private_key(ec.SECP521R1())
    k1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    ked = ed25519.Ed25519PrivateKey.generate()
    enc_key = serialization.load_pem_private_key(ec_key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-pass"),
    )
    lines = ec_cert.decode().splitlines()
    return {
        "ec_cert": ec_cert,
        "ec_key": ec_key,
        "other_ec_key": other_ec_key,
        "p384_key": p384_key,
        "rsa_cert": rsa_cert,
        "rsa_key": rsa_key,
        "p521_cert": _self_signed(k521),
        "p521_key": _key_pem(k521),
        "rsa1024_cert": _self_signed(k1024),
        "rsa1024_key": _key_pem(k1024),
        "ed_cert": _self_signed(ked),
        "enc_key": enc_key,
        "no_end": "\n".join(lines[:-1]).encode(),
        "bad_b64": ("\n".join(lines[:2] + ["!!!not base64!!!"] + lines[-1:])).encode(),
        "chain": ec_cert + rsa_cert,
        "truncated_der": x509.load_pem_x509_certificate(ec_cert).public_bytes(
            serialization.Encoding.DER
        )[:-20],
    }


# (name, kwargs builder, error class, text the message must contain)
BAD = [
    ("unknown profile", lambda m: ("ecdsa", {}), "ConfigError", "unknown TLS profile 'ecdsa'"),
    ("profile not a string", lambda m: (None, {}), "ConfigError", "unknown TLS profile None"),
    ("mfl 1000", lambda m: ("ecc", {"max_fragment_length": 1000}), "ConfigError", "512, 1024, 2048 or 4096"),
    ("mfl 16384", lambda m: ("ecc", {"max_fragment_length": 16384}), "ConfigError", "got 16384"),
    ("mfl str", lambda m: ("ecc", {"max_fragment_length": "1024"}), "ConfigError", "got '1024'"),
    ("require_mfl alone", lambda m: ("ecc", {"require_mfl": True}), "ConfigError", "require_mfl=True needs max_fragment_length="),
    ("cert without key", lambda m: ("ecc", {"cert": m["ec_cert"]}), "ConfigError", "needs both cert= and key= (got only cert)"),
    ("key without cert", lambda m: ("ecc", {"key": m["ec_key"]}), "ConfigError", "(got only key)"),
    ("cert garbage", lambda m: ("ecc", {"cert": b"hello", "key": m["ec_key"]}), "ConfigError", "cert: neither PEM nor a DER certificate"),
    ("cert truncated DER", lambda m: ("ecc", {"cert": m["truncated_der"], "key": m["ec_key"]}), "ConfigError", "cert: neither PEM nor a DER certificate"),
    ("cert PEM without END", lambda m: ("ecc", {"cert": m["no_end"], "key": m["ec_key"]}), "ConfigError", "PEM block CERTIFICATE has no END line"),
    ("cert PEM bad base64", lambda m: ("ecc", {"cert": m["bad_b64"], "key": m["ec_key"]}), "ConfigError", "PEM block CERTIFICATE is not valid base64"),
    ("cert is a key", lambda m: ("ecc", {"cert": m["ec_key"], "key": m["ec_key"]}), "ConfigError", "cert: PEM without a CERTIFICATE block"),
    ("cert is a chain", lambda m: ("ecc", {"cert": m["chain"], "key": m["ec_key"]}), "ConfigError", "cert= holds 2 certificates"),
    ("cert not bytes", lambda m: ("ecc", {"cert": 42, "key": m["ec_key"]}), "ConfigError", "cert must be bytes or str"),
    ("cert Ed25519", lambda m: ("ecc", {"cert": m["ed_cert"], "key": m["ec_key"]}), "ConfigError", "not a valid X.509 certificate with an RSA or EC key"),
    ("cert P-521", lambda m: ("ecc", {"cert": m["p521_cert"], "key": m["p521_key"]}), "ConfigError", "unsupported curve; EC P-256 or P-384"),
    ("cert RSA-1024", lambda m: ("rsa", {"cert": m["rsa1024_cert"], "key": m["rsa1024_key"]}), "ConfigError", "RSA-1024 key; RSA-2048 to 4096"),
    ("key garbage", lambda m: ("ecc", {"cert": m["ec_cert"], "key": b"\x01\x02\x03"}), "ConfigError", "key: neither PEM nor a DER private key"),
    ("key is a cert", lambda m: ("ecc", {"cert": m["ec_cert"], "key": m["ec_cert"]}), "ConfigError", "expected one PEM PRIVATE KEY block, found 0"),
    ("key encrypted", lambda m: ("ecc", {"cert": m["ec_cert"], "key": m["enc_key"]}), "ConfigError", "encrypted PEM is not supported"),
    ("key not bytes", lambda m: ("ecc", {"cert": m["ec_cert"], "key": 1.5}), "ConfigError", "key must be bytes or str"),
    ("key other EC key", lambda m: ("ecc", {"cert": m["ec_cert"], "key": m["other_ec_key"]}), "ConfigError", "key= does not match cert= (different EC public key)"),
    ("key other curve", lambda m: ("ecc", {"cert": m["ec_cert"], "key": m["p384_key"]}), "ConfigError", "key= is on another curve than cert="),
    ("key RSA for EC cert", lambda m: ("ecc", {"cert": m["ec_cert"], "key": m["rsa_key"]}), "ConfigError", "key= is an RSA key but cert= holds an EC key"),
    ("key EC for RSA cert", lambda m: ("rsa", {"cert": m["rsa_cert"], "key": m["ec_key"]}), "ConfigError", "key= is an EC key but cert= holds an RSA key"),
    ("roots empty", lambda m: ("ecc", {"roots": []}), "ConfigError", "roots= is empty"),
    ("roots garbage", lambda m: ("ecc", {"roots": [b"junk"]}), "ConfigError", "roots[0]: neither PEM nor a DER certificate"),
    ("roots second bad", lambda m: ("ecc", {"roots": [m["ec_cert"], "-----BEGIN CERTIFICATE-----\nAAAA"]}), "ConfigError", "roots[1]: PEM block CERTIFICATE has no END line"),
    ("roots not a list", lambda m: ("ecc", {"roots": 42}), "ConfigError", "roots= must be a list"),
]  # fmt: skip

LONG_B64 = re.compile(r"[A-Za-z0-9+/=]{24,}")


def _check_message(msg, material):
    # never echo key material: no long base64/hex run, no PEM body line of any key
    assert not LONG_B64.search(msg), msg
    for name, value in material.items():
        if "key" in name and isinstance(value, bytes):
            for line in value.decode().splitlines():
                if line and not line.startswith("-----"):
                    assert line[:16] not in msg


@pytest.mark.parametrize("name,build,err,text", BAD, ids=[b[0] for b in BAD])
def test_bad_input_cpython(material, name, build, err, text):
    profile, kw = build(material)
    with pytest.raises((ConfigError, TLSError)) as ei:
        iothub.tls_context(profile, **kw)
    assert type(ei.value).__name__ == err
    assert text in str(ei.value), str(ei.value)
    _check_message(str(ei.value), material)


def test_bad_input_unix_port(material):
    cases = [(name,) + build(material) for name, build, _, _ in BAD]
    code = (
        "import json, iothub\n"
        "out = {}\n"
        "for name, profile, kw in %r:\n"
        "    try:\n"
        "        iothub.tls_context(profile, **kw)\n"
        "        out[name] = ['no error', '']\n"
        "    except Exception as e:\n"
        "        out[name] = [type(e).__name__, str(e)]\n"
        "print(json.dumps(out))\n" % (cases,)
    )
    out = mpyrun.run_json(code)
    for name, _, err, text in BAD:
        got_type, msg = out[name]
        assert got_type == err, (name, got_type, msg)
        assert text in msg, (name, msg)
        _check_message(msg, material)


def test_cpython_has_no_tls_module():
    # all input was fine: the only problem is the runtime
    with pytest.raises(TLSError, match="no `tls` module: MicroPython 1.23 or newer"):
        iothub.tls_context("ecc")


# ---- what a context is and says -------------------------------------------------------


def _device(code):
    return mpyrun.run_json("import json, tls, iothub\n" + code)


def _has_tlsx():
    return mpyrun.tlsx_caps() is not None and mpyrun.tlsx_caps()["set_mfl"]


@pytest.mark.parametrize("profile", ["ecc", "rsa"])
def test_default_context(profile):
    out = _device(
        "ctx = iothub.tls_context(%r)\n"
        "print(json.dumps({'info': ctx.iothub_info, 'is_ctx': isinstance(ctx, tls.SSLContext),"
        " 'verify': ctx.verify_mode == tls.CERT_REQUIRED}))" % profile
    )
    assert out["is_ctx"] and out["verify"]
    info = out["info"]
    assert info["profile"] == profile and info["verify"] == "CERT_REQUIRED"
    assert info["suites"] == SUITES[profile]
    assert info["roots"] == [
        {
            "name": "DigiCert Global Root %s" % ("G3" if profile == "ecc" else "G2"),
            "sha256": G3_SHA256 if profile == "ecc" else G2_SHA256,
        }
    ]
    assert info["client_cert"] is None and info["negotiated"] is None
    assert info["mfl"]["size"] in (None, 512, 1024, 2048, 4096)


def test_wrap_socket_insists_on_server_hostname():
    out = _device(
        "import socket\n"
        "ctx = iothub.tls_context('ecc')\n"
        "res = []\n"
        "for kw in ({}, {'server_hostname': ''}, {'server_hostname': 'h', 'server_side': True}):\n"
        "    s = socket.socket()\n"
        "    try:\n"
        "        ctx.wrap_socket(s, **kw); res.append('no error')\n"
        "    except Exception as e:\n"
        "        res.append([type(e).__name__, str(e)])\n"
        "    s.close()\n"
        "print(json.dumps(res))"
    )
    assert out[0][0] == "ConfigError" and "server_hostname is required" in out[0][1]
    assert out[1][0] == "ConfigError" and "server_hostname is required" in out[1][1]
    assert out[2][0] == "ConfigError" and "client contexts" in out[2][1]


def test_mfl_on_stock_firmware_warns_once_and_records():
    if _has_tlsx():
        pytest.skip("this MicroPython binary has tlsx: see test_tls_mfl.py")
    proc = mpyrun.run(
        "import json, iothub\n"
        "a = iothub.tls_context('ecc', max_fragment_length=1024)\n"
        "b = iothub.tls_context('rsa', max_fragment_length=512)\n"
        "print(json.dumps([a.iothub_info['mfl'], b.iothub_info['mfl']]))",
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    warnings = [ln for ln in lines if "warning" in ln]
    assert len(warnings) == 1, proc.stdout
    assert "max fragment length 1024 not requested" in warnings[0]
    assert "no tlsx module" in warnings[0]
    a, b = json.loads(lines[-1])
    assert a == {
        "requested": False,
        "size": 1024,
        "reason": "this firmware cannot request it (no tlsx module; stock MicroPython)",
    }
    assert b["requested"] is False and b["size"] == 512


def test_mfl_warning_goes_to_log_when_given():
    if _has_tlsx():
        pytest.skip("this MicroPython binary has tlsx: see test_tls_mfl.py")
    proc = mpyrun.run(
        "import iothub\n"
        "seen = []\n"
        "iothub.tls_context('ecc', max_fragment_length=1024, log=lambda l, t: seen.append((l, t)))\n"
        "print('LOGGED', len(seen), seen[0][1])",
        check=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("LOGGED 1 warning:"), proc.stdout
    assert "max fragment length 1024 not requested" in lines[0]


def test_require_mfl_on_stock_firmware_raises():
    if _has_tlsx():
        pytest.skip("this MicroPython binary has tlsx: see test_tls_mfl.py")
    out = _device(
        "try:\n"
        "    iothub.tls_context('ecc', max_fragment_length=1024, require_mfl=True)\n"
        "    r = 'no error'\n"
        "except Exception as e:\n"
        "    r = [type(e).__name__, str(e)]\n"
        "print(json.dumps(r))"
    )
    assert out[0] == "TLSError"
    assert out[1].startswith("max_fragment_length=1024 required but not possible")
    assert "no tlsx module" in out[1]


# ---- firmware variants (tiny fakes of `tls` and `tlsx` installed in sys.modules) --------


def _with_fakes(setup, call="iothub.tls_context('ecc')"):
    return _device(
        "import tls_fakes\n" + setup + "\n"
        "try:\n"
        "    ctx = " + call + "\n"
        "    r = ['ok', ctx.iothub_info]\n"
        "except Exception as e:\n"
        "    r = [type(e).__name__, str(e)]\n"
        "print(json.dumps(r))"
    )


def test_old_micropython_without_set_ciphers():
    out = _with_fakes("tls_fakes.fake_tls(set_ciphers=False)")
    assert out == [
        "TLSError",
        "this MicroPython's tls.SSLContext has no set_ciphers(): version 1.23 or newer is needed",
    ]


def test_firmware_without_the_profiles_suites():
    out = _with_fakes("tls_fakes.fake_tls(suites=tls_fakes.ALL_SUITES[4:])")
    assert out[0] == "TLSError"
    assert "this firmware's mbedTLS has none of the 'ecc' profile's cipher suites" in out[1]


def test_firmware_with_some_of_the_suites_offers_those():
    out = _with_fakes("tls_fakes.fake_tls(suites=tls_fakes.ALL_SUITES[:2])")
    assert out[0] == "ok" and out[1]["suites"] == SUITES["ecc"][:2]


@pytest.mark.parametrize("have", [(0, 4), (1, 3)])
def test_client_record_names_the_suites_offered(have):
    # A client keeps a minimal record of its context: the suites it offered are a bit mask
    # of the profile's, kept only when the firmware lacks some; tls_info() names them.
    lo, hi = have
    out = _device(
        "import tls_fakes\n"
        "tls_fakes.fake_tls(suites=tls_fakes.ALL_SUITES[%d:%d])\n"
        "c = iothub.DeviceClient.from_connection_string("
        "'HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=YWJjZGVmZ2hpamtsbW5vcA==',"
        " tls='ecc', host='127.0.0.1', port=1)\n"
        "print(json.dumps([c._tlsinfo.get('suites'), c.tls_info()['configured']['suites']]))"
        % (lo, hi)
    )
    assert out[1] == list(SUITES["ecc"][lo:hi])
    assert out[0] == (None if hi - lo == 4 else 0b0110)


def test_tlsx_requests_mfl():
    out = _device(
        "import tls_fakes\n"
        "x = tls_fakes.fake_tlsx()\n"
        "ctx = iothub.tls_context('ecc', max_fragment_length=2048, require_mfl=True)\n"
        "print(json.dumps([x.calls, ctx.iothub_info['mfl']]))"
    )
    assert out[0] == [2048]
    assert out[1] == {"requested": True, "size": 2048, "reason": "requested through tlsx"}


@pytest.mark.parametrize(
    "exc", ["RuntimeError('layout mismatch')", "ValueError('too big')", "OSError(-1)"]
)
def test_tlsx_that_cannot_counts_as_not_requested(exc):
    out = _with_fakes(
        "tls_fakes.fake_tlsx(fail=%s)" % exc, "iothub.tls_context('ecc', max_fragment_length=1024)"
    )
    assert out[0] == "ok"
    assert out[1]["mfl"]["requested"] is False
    assert out[1]["mfl"]["reason"].startswith("tlsx could not set it")
    out = _with_fakes(
        "tls_fakes.fake_tlsx(fail=%s)" % exc,
        "iothub.tls_context('ecc', max_fragment_length=1024, require_mfl=True)",
    )
    assert out[0] == "TLSError" and "tlsx could not set it" in out[1]


def test_tlsx_board_default_is_reported():
    out = _with_fakes("tls_fakes.fake_tlsx(default=4096)")
    assert out[1]["mfl"] == {"requested": True, "size": 4096, "reason": "board default (tlsx)"}


def test_tlsx_refusal_keeps_the_board_default():
    # e.g. 4096 asked on a board whose buffers allow 2048: the ClientHello carries 2048
    call = "iothub.tls_context('ecc', max_fragment_length=4096)"
    out = _with_fakes("tls_fakes.fake_tlsx(fail=ValueError('too big'), default=2048)", call)
    assert out[0] == "ok" and out[1]["mfl"]["requested"] is True and out[1]["mfl"]["size"] == 2048
    assert "board default" in out[1]["mfl"]["reason"]
    call = "iothub.tls_context('ecc', max_fragment_length=4096, require_mfl=True)"
    out = _with_fakes("tls_fakes.fake_tlsx(fail=ValueError('too big'), default=2048)", call)
    assert out[0] == "TLSError" and "max_fragment_length=4096 required" in out[1]
