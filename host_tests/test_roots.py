"""iothub.ROOT_G2 / ROOT_G3: the right DigiCert roots, byte for byte, on CPython and the unix port.

Expected fingerprints are the published ones (docs/protocol.md 1.3: Azure CA details,
Microsoft 365 encryption chains, OpenJDK VerifyCACerts); the second reference is Debian's
ca-certificates package (Mozilla store), read with `cryptography`, not with our code."""

import hashlib
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import iothub
import iothub.roots
import mpyrun

PUBLISHED = {
    "ROOT_G2": {
        "sha256": "CB:3C:CB:B7:60:31:E5:E0:13:8F:8D:D3:9A:23:F9:DE:47:FF:C3:5E:43:C1:14:4C:EA:27:D4:6A:5A:B1:CB:5F",
        "sha1": "DF:3C:24:F9:BF:D6:66:76:1B:26:80:73:FE:06:D1:CC:8D:4F:82:A4",
        "cn": "DigiCert Global Root G2",
        "debian": "DigiCert_Global_Root_G2.crt",
        "size": 914,
    },
    "ROOT_G3": {
        "sha256": "31:AD:66:48:F8:10:41:38:C7:38:F3:9E:A4:32:01:33:39:3E:3A:18:CC:02:29:6E:F9:7C:2A:C9:EF:67:31:D0",
        "sha1": "7E:04:DE:89:6A:3E:66:6D:00:E6:87:D3:3F:FA:D9:3B:E8:3D:34:9E",
        "cn": "DigiCert Global Root G3",
        "debian": "DigiCert_Global_Root_G3.crt",
        "size": 579,
    },
}
DEBIAN = pathlib.Path("/usr/share/ca-certificates/mozilla")


def _hex(s):
    return s.replace(":", "").lower()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_root_matches_published_fingerprints(name):
    der = getattr(iothub, name)  # through the package's lazy attribute
    assert der is getattr(iothub.roots, name)
    assert isinstance(der, bytes)
    assert len(der) == PUBLISHED[name]["size"]
    assert hashlib.sha256(der).hexdigest() == _hex(PUBLISHED[name]["sha256"])
    assert hashlib.sha1(der).hexdigest() == _hex(PUBLISHED[name]["sha1"])


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_root_matches_debian_copy(name):
    path = DEBIAN / PUBLISHED[name]["debian"]
    assert path.exists(), "%s missing: install Debian's ca-certificates (make setup does)" % path
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    assert cert.public_bytes(serialization.Encoding.DER) == getattr(iothub.roots, name)


def test_roots_are_what_they_claim():
    g2 = x509.load_der_x509_certificate(iothub.roots.ROOT_G2)
    g3 = x509.load_der_x509_certificate(iothub.roots.ROOT_G3)
    for cert, name in ((g2, "ROOT_G2"), (g3, "ROOT_G3")):
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn == PUBLISHED[name]["cn"]
        assert cert.subject == cert.issuer
        assert cert.not_valid_after_utc.year == 2038
    assert isinstance(g2.public_key(), rsa.RSAPublicKey) and g2.public_key().key_size == 2048
    assert isinstance(g3.public_key(), ec.EllipticCurvePublicKey)
    assert g3.public_key().curve.name == "secp384r1"


def test_nothing_else_built_in():
    public = {n for n in vars(iothub.roots) if not n.startswith("_")}
    assert public == {"ROOT_G2", "ROOT_G3"}


def test_roots_on_unix_port():
    out = mpyrun.run_json(
        "import json, hashlib, binascii, iothub\n"
        "h = lambda b: binascii.hexlify(hashlib.sha256(b).digest()).decode()\n"
        "print(json.dumps({'ROOT_G2': [len(iothub.ROOT_G2), h(iothub.ROOT_G2)],"
        " 'ROOT_G3': [len(iothub.ROOT_G3), h(iothub.ROOT_G3)]}))"
    )
    for name, (size, digest) in out.items():
        assert size == PUBLISHED[name]["size"]
        assert digest == _hex(PUBLISHED[name]["sha256"])


def test_unix_port_firmware_accepts_roots():
    # the firmware's own X.509 parser takes both DER literals as CA certificates
    out = mpyrun.run_json(
        "import json, tls, iothub\n"
        "c = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)\n"
        "c.load_verify_locations(iothub.ROOT_G2); c.load_verify_locations(iothub.ROOT_G3)\n"
        "print(json.dumps('ok'))"
    )
    assert out == "ok"
