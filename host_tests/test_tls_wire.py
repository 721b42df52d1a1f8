"""iothub.tls_context on the MicroPython unix port against the emulator's hub TLS endpoint.

Every assertion reads the wire: ClientHellos are parsed with tlslite-ng (an independent
parser), the endpoint reports what OpenSSL negotiated and which client certificate it saw."""

import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tlslite.constants import CipherSuite, ExtensionType
from tlslite.messages import ClientHello, RecordHeader3
from tlslite.utils.codec import Parser

import mpyrun

ECDSA_SUITES = [
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
    CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
]
RSA_SUITES = [
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
    CipherSuite.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384,
]
SCSV = CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV
EXPECTED = {"ecc": ECDSA_SUITES, "rsa": RSA_SUITES}


def echo_handler(conn):
    data = conn.recv(4096, timeout=10)
    if data:
        conn.sendall(data.upper())


def _input_buffer():
    # a firmware build with tlsx may have a small input buffer; stock MicroPython (no tlsx,
    # detected by its ImportError) has mbedTLS's 16 KB. A probe that crashes fails the test.
    caps = mpyrun.tlsx_caps()
    return 16384 if caps is None else caps["in"]


def device(ep, profile, host=None, **cfg):
    """Run host_tests/device/tls_client.py on the unix port against `ep`; returns its JSON."""
    chain = ep.pki.sizes()[ep.profile]["chain_sent"]
    if _input_buffer() < chain + 20:
        pytest.skip(
            "the %s hub's chain (%d B) does not fit this firmware's TLS input buffer (%d B)"
            % (ep.profile, chain, _input_buffer())
        )
    cfg = dict(cfg, port=ep.port, host=host or ep.hostname, profile=profile)
    proc = mpyrun.run("import tls_client; tls_client.main(%r)" % (cfg,), timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0 and lines, "device run failed:\n%s\n%s" % (proc.stdout, proc.stderr)
    return json.loads(lines[-1])


def parse_client_hello(raw):
    """tlslite-ng's view of the raw ClientHello record(s) the endpoint captured."""
    p = Parser(bytearray(raw))
    body = bytearray()
    while p.getRemainingLength():
        hdr = RecordHeader3().parse(p)
        assert hdr.type == 22, "ClientHello not in a handshake record"
        assert hdr.version in ((3, 1), (3, 3)), hdr.version
        body += p.getFixBytes(hdr.length)
    assert body[0] == 1, "first handshake message is not a ClientHello"
    return ClientHello().parse(Parser(body[1:]))


def root_path(pki, profile):
    return [pki.root_der_path(profile)]


# ---- profiles on the wire -------------------------------------------------------------


@pytest.mark.parametrize("profile", ["ecc", "rsa"])
def test_client_hello_and_handshake(pki, endpoint, profile):
    ep = endpoint(profile, handler=echo_handler)
    out = device(ep, profile, roots=root_path(pki, profile), send="ping", expect="PING")
    assert out["ok"], out
    info = ep.wait_connection(0)
    ch = parse_client_hello(info.client_hello)

    offered = [s for s in ch.cipher_suites if s != SCSV]
    assert offered == EXPECTED[profile]  # exactly the four, AES-128-GCM first, in our order
    other = RSA_SUITES if profile == "ecc" else ECDSA_SUITES
    assert not set(ch.cipher_suites) & set(other)
    assert ch.client_version == (3, 3)
    sv = ch.getExtension(ExtensionType.supported_versions)
    assert sv is None or (3, 4) not in sv.versions, "TLS 1.3 offered"
    assert ch.server_name == pki.hub_hostname.encode()
    assert info.sni == pki.hub_hostname
    groups = ch.getExtension(ExtensionType.supported_groups)
    assert groups is not None and groups.groups, "ECDHE needs supported_groups (IoT Hub 2026 doc)"
    mfl_ext = ch.getExtension(ExtensionType.max_fragment_length)
    assert (mfl_ext is not None) == out["configured"]["mfl"]["requested"]

    # what was negotiated, seen from both ends
    assert info.version == "TLSv1.2"
    assert info.cipher_id in EXPECTED[profile]
    assert info.cipher_iana.startswith("TLS_ECDHE_ECDSA_" if profile == "ecc" else "TLS_ECDHE_RSA_")
    assert out["version"] == "TLSv1.2"
    assert out["cipher"] == info.cipher_iana.replace("_", "-")
    assert out["cipher"] == "TLS-ECDHE-%s-WITH-AES-128-GCM-SHA256" % (
        "ECDSA" if profile == "ecc" else "RSA"
    )  # the hub follows the client's preference
    assert out["received"] == "PING"
    conf = out["configured"]
    assert conf["profile"] == profile and conf["verify"] == "CERT_REQUIRED"
    assert conf["negotiated"]["cipher"] == out["cipher"]


@pytest.mark.parametrize("profile,hub", [("ecc", "rsa"), ("rsa", "ecc")])
def test_cross_profile_fails_clearly(pki, endpoint, profile, hub):
    ep = endpoint(hub)
    out = device(ep, profile, roots=root_path(pki, hub))
    assert not out["ok"] and out["stage"] == "handshake"
    assert out["error"] == "TLSError" and out["reason"] == "refused"
    want = (
        "an RSA hub (use profile 'rsa')" if profile == "ecc" else "an ECC hub (use profile 'ecc')"
    )
    assert want in out["message"], out["message"]
    assert pki.hub_hostname in out["message"]
    assert "no shared cipher" in ep.wait_connection(0).handshake_error


# ---- pinning and verification ---------------------------------------------------------


@pytest.mark.parametrize("profile", ["ecc", "rsa"])
def test_default_roots_refuse_a_chain_to_another_root(pki, endpoint, profile):
    # the default (DigiCert G2/G3 only) must not accept the emulator's stand-in roots
    ep = endpoint(profile)
    out = device(ep, profile)
    assert out["error"] == "TLSError" and out["reason"] == "untrusted", out
    name = "DigiCert Global Root %s" % ("G3" if profile == "ecc" else "G2")
    assert out["configured"]["roots"][0]["name"] == name
    assert name in out["message"]
    # the same mbedTLS failure is what a heap too small for the verification gives
    assert "heap may be too small" in out["message"], out["message"]
    assert ep.wait_connection(0).handshake_error  # the client aborted with an alert


@pytest.mark.parametrize(
    "case",
    ["third-root", "self-signed", "roots-without-its-root", "expired", "wrong-host", "wrong-sni"],
)
@pytest.mark.parametrize("profile", ["ecc", "rsa"])
def test_refused_server_certificates(pki, endpoint, profile, case):
    kw = {}
    host = None
    roots = root_path(pki, profile)
    reason = {"expired": "expired", "wrong-host": "hostname", "wrong-sni": "hostname"}.get(
        case, "untrusted"
    )
    if case in ("third-root", "self-signed", "expired", "wrong-host"):
        kw["server_cert"] = pki.negative_credentials(case, profile)
    elif case == "roots-without-its-root":
        other = "rsa" if profile == "ecc" else "ecc"
        roots = [pki.root_der_path(other), pki.third_root_pem_path(profile)]
    else:
        host = "other-hub.azure-devices.net"
    ep = endpoint(profile, **kw)
    out = device(ep, profile, host=host, roots=roots)
    assert not out["ok"] and out["error"] == "TLSError", out
    assert out["reason"] == reason, out["message"]
    if reason == "hostname":
        assert repr(host or pki.hub_hostname) in out["message"]
    info = ep.wait_connection(0)
    assert info.handshake_error and info.handshake_error.startswith("TLS")


def test_roots_replace_the_default_and_accept_several(pki, endpoint, tmp_path):
    # a PEM bundle with two roots; the hub's root is the second one
    bundle = open(pki.third_root_pem_path("ecc")).read() + open(pki.root_pem_path("ecc")).read()
    (tmp_path / "bundle.pem").write_text(bundle)
    ep = endpoint("ecc")
    out = device(ep, "ecc", roots=[str(tmp_path / "bundle.pem")])
    assert out["ok"], out
    assert [r["name"] for r in out["configured"]["roots"]] == ["custom", "custom"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_gateway_style_host_names_verify(pki, endpoint, host):
    ep = endpoint("ecc")
    out = device(ep, "ecc", host=host, roots=root_path(pki, "ecc"))
    assert out["ok"], out
    assert ep.wait_connection(0).ok


def test_legacy_tls_server_refused(pki, endpoint):
    ep = endpoint("ecc", legacy=True)
    out = device(ep, "ecc", roots=root_path(pki, "ecc"))
    assert not out["ok"] and out["error"] == "TLSError", out
    assert "TLS 1.0/1.1" in out["message"]
    info = ep.wait_connection(0)
    assert info.handshake_error and info.version is None
    ch = parse_client_hello(info.client_hello)
    assert ch.client_version == (3, 3)  # the client never offered less than TLS 1.2


# ---- mutual TLS -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,ca,fmt",
    [
        ("ec256", "self", "pem"),
        ("rsa2048", "self", "der"),
        ("ec256", "device-ca", "der"),
        ("ec384", "self", "pem"),
    ],
)
def test_mutual_tls_endpoint_sees_client_certificate(pki, endpoint, tmp_path, kind, ca, fmt):
    cert_pem, key_pem, sha1, sha256 = pki.issue_client_cert("device-%s" % kind, kind, ca=ca)
    if fmt == "der":
        cert = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
        key = serialization.load_pem_private_key(key_pem, None).private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    else:
        cert, key = cert_pem, key_pem
    (tmp_path / "c").write_bytes(cert)
    (tmp_path / "k").write_bytes(key)
    ep = endpoint("ecc", handler=echo_handler)
    out = device(
        ep, "ecc", roots=root_path(pki, "ecc"), cert=str(tmp_path / "c"), key=str(tmp_path / "k"),
        send="x", expect="X",
    )  # fmt: skip
    assert out["ok"], out
    info = ep.wait_connection(0)
    assert info.client_cert_sha1 == sha1 and info.client_cert_sha256 == sha256
    seen = x509.load_der_x509_certificate(info.client_cert_der)
    assert (
        seen.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "device-" + kind
    )
    cc = out["configured"]["client_cert"]
    assert cc["sha1"] == sha1 and cc["sha256"] == sha256  # the device can print its thumbprint
    assert cc["key"] == {"ec256": "EC P-256", "ec384": "EC P-384", "rsa2048": "RSA-2048"}[kind]


def test_no_client_certificate_without_cert(pki, endpoint):
    ep = endpoint("ecc")
    out = device(ep, "ecc", roots=root_path(pki, "ecc"))
    assert out["ok"]
    info = ep.wait_connection(0)
    assert info.client_cert_der is None and info.client_cert_sha1 is None
