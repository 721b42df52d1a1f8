"""The emulator's hub TLS endpoint and test PKI, exercised from CPython (ssl module, openssl CLI).

These check the tool the device tests stand on: policy (TLS 1.2 only, enforced suites,
legacy mode), client certificates and thumbprints, max fragment length honoured, wire
accounting, fault injection, and the PKI's shape and persistence."""

import datetime
import hashlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tlslite.messages import ClientHello, RecordHeader3
from tlslite.utils.codec import Parser

from iothub_emulator.pki import NEGATIVE_KINDS, TestPKI
from iothub_emulator.tlsserver import TLSEndpoint


def client_ctx(pki, profile, ciphers=None, cert=None, tmp_path=None):
    ctx = ssl.create_default_context(cafile=pki.root_pem_path(profile))
    if ciphers:
        ctx.set_ciphers(ciphers)
    if cert:
        cert_pem, key_pem = cert
        (tmp_path / "c.pem").write_bytes(cert_pem)
        (tmp_path / "k.pem").write_bytes(key_pem)
        ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


def connect(ep, ctx, host=None):
    s = socket.create_connection(("127.0.0.1", ep.port), timeout=10)
    return ctx.wrap_socket(s, server_hostname=host or ep.hostname)


def _load_chain(path):
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificates(f.read())


# ---- PKI ------------------------------------------------------------------------------


def test_pki_shapes_and_sizes(pki):
    sizes = pki.sizes()
    # Azure's RSA chain: leaf ~2 KB+ with many SANs, intermediate ~1.7 KB (module docstring)
    assert 2000 <= sizes["rsa"]["leaf"] <= 2700
    assert 1500 <= sizes["rsa"]["intermediate"] <= 1900
    assert sizes["ecc"]["chain_sent"] < sizes["rsa"]["chain_sent"]
    for profile, key_type, curve in (
        ("rsa", rsa.RSAPublicKey, None),
        ("ecc", ec.EllipticCurvePublicKey, "secp384r1"),
    ):
        leaf, inter = _load_chain(pki.server_credentials(profile)[0])
        root = x509.load_der_x509_certificate(pki.root_der(profile))
        assert isinstance(root.public_key(), key_type)
        if curve:
            assert root.public_key().curve.name == curve
        leaf.verify_directly_issued_by(inter)
        inter.verify_directly_issued_by(root)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert pki.hub_hostname in sans.get_values_for_type(x509.DNSName)
        assert "localhost" in sans.get_values_for_type(x509.DNSName)
        assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert "*.azure-devices.net" not in sans.get_values_for_type(x509.DNSName)
    assert x509.load_der_x509_certificate(pki.root_der("rsa")).public_key().key_size == 2048


def test_pki_negative_material(pki):
    now = datetime.datetime.now(datetime.timezone.utc)
    for profile in ("rsa", "ecc"):
        good_inter = _load_chain(pki.server_credentials(profile)[0])[1]
        root = x509.load_der_x509_certificate(pki.root_der(profile))
        for kind in NEGATIVE_KINDS:
            chain = _load_chain(pki.negative_credentials(kind, profile)[0])
            leaf = chain[0]
            if kind == "third-root":
                third = x509.load_der_x509_certificate(pki.third_root_der(profile))
                chain[1].verify_directly_issued_by(third)
                assert chain[1].issuer != root.subject
            elif kind == "self-signed":
                assert len(chain) == 1 and leaf.issuer == leaf.subject
                leaf.verify_directly_issued_by(leaf)
            elif kind == "expired":
                leaf.verify_directly_issued_by(good_inter)
                assert leaf.not_valid_after_utc < now
            else:
                leaf.verify_directly_issued_by(good_inter)
                sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert pki.hub_hostname not in sans.get_values_for_type(x509.DNSName)
    with pytest.raises(ValueError, match="unknown negative kind"):
        pki.negative_credentials("nope")
    with pytest.raises(ValueError, match="unknown TLS profile"):
        pki.server_credentials("dsa")


@pytest.mark.parametrize(
    "kind,ca", [("ec256", "self"), ("rsa2048", "device-ca"), ("ec384", "device-ca")]
)
def test_client_certificates(pki, kind, ca):
    cert_pem, key_pem, sha1, sha256 = pki.issue_client_cert("dev-1", kind, ca=ca)
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert sha1 == hashlib.sha1(der).hexdigest().upper() and len(sha1) == 40
    assert sha256 == hashlib.sha256(der).hexdigest().upper() and len(sha256) == 64
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "dev-1"
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    issuer = cert if ca == "self" else x509.load_der_x509_certificate(pki.device_ca_der)
    cert.verify_directly_issued_by(issuer)
    with open(pki.device_ca_pem_path, "rb") as f:
        assert (
            x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
            == pki.device_ca_der
        )


def test_pki_persists_and_regenerates(tmp_path):
    a = TestPKI.load_or_create(tmp_path).root_der("ecc")
    assert TestPKI.load_or_create(tmp_path).root_der("ecc") == a  # reused, not regenerated
    c = TestPKI.load_or_create(tmp_path, hub_name="other-hub")
    assert c.hub_hostname == "other-hub.azure-devices.net"
    c_root = c.root_der("rsa")
    assert c.root_der("ecc") != a  # made for another hub name
    (tmp_path / "pki" / "rsa-leaf-key.pem").unlink()
    d = TestPKI.load_or_create(tmp_path, hub_name="other-hub")
    assert (tmp_path / "pki" / "rsa-leaf-key.pem").exists()
    assert d.root_der("rsa") != c_root
    assert (tmp_path / "pki" / "ecc-leaf-key.pem").stat().st_mode & 0o077 == 0


# ---- policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile,family", [("ecc", "ECDHE-ECDSA-"), ("rsa", "ECDHE-RSA-")])
def test_tls13_client_gets_tls12_and_profile_suite(pki, endpoint, profile, family):
    ep = endpoint(profile)
    ctx = client_ctx(pki, profile)
    assert ctx.maximum_version in (ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_3)
    with connect(ep, ctx) as t:
        assert t.version() == "TLSv1.2"
        assert t.cipher()[0].startswith(family)
    info = ep.wait_connection(0)
    assert info.version == "TLSv1.2" and info.cipher.startswith(family)
    assert info.sni == pki.hub_hostname


@pytest.mark.parametrize(
    "profile,other",
    [("ecc", "ECDHE-RSA-AES128-GCM-SHA256"), ("rsa", "ECDHE-ECDSA-AES128-GCM-SHA256")],
)
def test_suite_enforced(pki, endpoint, profile, other):
    ep = endpoint(profile)
    ctx = client_ctx(pki, profile, ciphers=other)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        connect(ep, ctx)
    assert "no shared cipher" in ep.wait_connection(0).handshake_error


def test_weak_suite_refused(pki, endpoint):
    ep = endpoint("rsa")
    ctx = client_ctx(pki, "rsa", ciphers="AES128-GCM-SHA256:ECDHE-RSA-AES128-SHA")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        connect(ep, ctx)


def test_legacy_mode_speaks_only_tls10_11(pki, endpoint):
    ep = endpoint("ecc", legacy=True)
    with pytest.raises(ssl.SSLError):
        connect(ep, client_ctx(pki, "ecc"))  # a TLS 1.2+ client is refused
    assert ep.wait_connection(0).handshake_error
    old = client_ctx(pki, "ecc", ciphers="DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point here
        old.minimum_version = ssl.TLSVersion.TLSv1_1
    try:
        t = connect(ep, old)
    except ssl.SSLError as e:  # a CPython build that cannot speak TLS 1.1 at all
        pytest.skip("this CPython/OpenSSL refuses to offer TLS 1.0/1.1: %s" % e)
    with t:
        assert t.version() in ("TLSv1", "TLSv1.1")
    assert ep.wait_connection(1).version in ("TLSv1", "TLSv1.1")


@pytest.mark.parametrize("kind", ["ec256", "rsa2048"])
def test_client_certificate_recorded(pki, endpoint, tmp_path, kind):
    cert_pem, key_pem, sha1, sha256 = pki.issue_client_cert("dev-" + kind, kind)
    ep = endpoint("ecc")
    with connect(ep, client_ctx(pki, "ecc", cert=(cert_pem, key_pem), tmp_path=tmp_path)):
        pass
    info = ep.wait_connection(0)
    assert info.client_cert_sha1 == sha1 and info.client_cert_sha256 == sha256
    assert info.client_cert_chain_der[0] == info.client_cert_der


def test_client_certificate_not_requested(pki, endpoint, tmp_path):
    cert_pem, key_pem, _, _ = pki.issue_client_cert("dev", "ec256")
    ep = endpoint("ecc", request_client_cert=False)
    with connect(ep, client_ctx(pki, "ecc", cert=(cert_pem, key_pem), tmp_path=tmp_path)):
        pass
    assert ep.wait_connection(0).client_cert_der is None


@pytest.mark.skipif(
    not shutil.which("openssl"), reason="needs the openssl command (Debian package openssl)"
)
@pytest.mark.parametrize("mfl", [512, 1024, 2048, 4096])
def test_max_fragment_length_honoured(pki, endpoint, mfl):
    # OpenSSL's own client asks for MFL; the endpoint must echo it and keep records small
    payload = bytes(range(256)) * 40  # 10 KB

    def handler(conn):
        conn.sendall(payload)

    ep = endpoint("ecc", handler=handler)
    cmd = [
        "openssl", "s_client", "-connect", "127.0.0.1:%d" % ep.port, "-servername", ep.hostname,
        "-CAfile", pki.root_pem_path("ecc"), "-verify_return_error", "-maxfraglen", str(mfl),
        "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-tls1_2", "-ign_eof", "-quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    assert proc.stdout == payload, proc.stderr[-500:]
    info = ep.wait_connection(0)
    info.closed.wait(5)
    assert info.negotiated_mfl == mfl
    # GCM record overhead: 8-byte explicit nonce + 16-byte tag
    assert info.max_record_out <= mfl + 24, info.record_sizes_out
    assert info.handshake_records_out > 4  # the 2.8 KB Certificate message was split too


def test_no_mfl_without_request(pki, endpoint):
    ep = endpoint("ecc", handler=lambda conn: conn.sendall(b"x" * 20000))
    with connect(ep, client_ctx(pki, "ecc")) as t:
        got = b""
        while len(got) < 20000:
            got += t.recv(65536)
    info = ep.wait_connection(0)
    assert info.negotiated_mfl is None
    assert info.max_record_out > 4096


# ---- accounting and fault injection ---------------------------------------------------


def test_wire_accounting(pki, endpoint):
    def handler(conn):
        while True:
            data = conn.recv(1000, timeout=10)
            if not data:
                return
            conn.sendall(data)

    ep = endpoint("rsa", handler=handler)
    with connect(ep, client_ctx(pki, "rsa")) as t:
        t.sendall(b"a" * 100)
        assert t.recv(1000) == b"a" * 100
    info = ep.wait_connection(0)
    assert info.closed.wait(5)
    assert info.bytes_out == sum(info.record_sizes_out) + 5 * info.records_out
    assert info.bytes_in == sum(info.record_sizes_in) + 5 * info.records_in
    assert info.handshake_bytes_out < info.bytes_out and info.handshake_records_in >= 3
    assert info.handshake_bytes_out > pki.sizes()["rsa"]["chain_sent"]
    assert info.handshake_seconds is not None and info.handshake_seconds < 10
    # the recorded ClientHello, read by tlslite-ng
    p = Parser(bytearray(info.client_hello))
    hdr = RecordHeader3().parse(p)
    body = p.getFixBytes(hdr.length)
    assert hdr.type == 22 and body[0] == 1
    assert ClientHello().parse(Parser(body[1:])).server_name == pki.hub_hostname.encode()


def test_close_from_another_thread_and_recv_timeout(pki, endpoint):
    seen = []
    ready = threading.Event()

    def handler(conn):
        try:
            conn.recv(10, timeout=0.2)
        except socket.timeout:
            seen.append("timeout")
        ready.set()
        seen.append(conn.recv(10, timeout=10))

    ep = endpoint("ecc", handler=handler)
    with connect(ep, client_ctx(pki, "ecc")) as t:
        assert ready.wait(5)
        conn = ep._conns[0]
        t0 = time.monotonic()
        conn.close()
        info = ep.wait_connection(0)
        assert info.closed.wait(5) and time.monotonic() - t0 < 2
        assert seen == ["timeout", b""]
        assert info.close_reason == "closed by the hub"
        t.settimeout(5)
        assert t.recv(10) == b""  # close_notify reached the client


def test_abort_and_send_raw(pki, endpoint):
    def handler(conn):
        conn.sendall(b"hello")
        conn.send_raw(b"\x17\x03\x03\x00\x05junk!")  # a bogus application-data record
        conn.recv(10, timeout=5)

    ep = endpoint("ecc", handler=handler)
    with connect(ep, client_ctx(pki, "ecc")) as t:
        assert t.recv(5) == b"hello"
        with pytest.raises(ssl.SSLError):
            t.recv(10)
    info = ep.wait_connection(0)
    assert info.closed.wait(5)
    assert info.records_out >= 1 and info.bytes_out > info.handshake_bytes_out

    def idle(conn):
        conn.recv(10, timeout=10)

    ep2 = endpoint("ecc", handler=idle)
    with connect(ep2, client_ctx(pki, "ecc")) as t:
        ep2.wait_connection(0)
        time.sleep(0.1)
        ep2._conns[0].abort()
        t.settimeout(5)
        try:
            data = t.recv(10)
        except (ssl.SSLError, OSError):
            data = None  # EOF without close_notify
        assert not data
    assert ep2.wait_connection(0).close_reason == "aborted by the hub"


def test_stop_is_bounded_with_open_connections(pki):
    ep = TLSEndpoint(pki, "ecc").start()
    t = connect(ep, client_ctx(pki, "ecc"))
    ep.wait_connection(0)
    t0 = time.monotonic()
    ep.stop()
    assert time.monotonic() - t0 < 3
    assert ep.connections[0].closed.wait(2)
    t.close()
