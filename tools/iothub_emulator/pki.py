"""Test PKI for the local hub emulator, generated at run time (no private key is committed).

Two hierarchies stand in for Azure's (docs/protocol.md 1.3-1.4):

  profile "rsa":  RSA-2048 root ("DigiCert Global Root G2 stand-in", sha256WithRSA)
                  -> RSA-4096 intermediate ("Microsoft Azure RSA TLS Issuing CA" stand-in)
                  -> RSA-2048 leaf for the hub host name
  profile "ecc":  EC P-384 root ("DigiCert Global Root G3 stand-in", ecdsa-with-SHA384)
                  -> EC P-384 intermediate ("Microsoft Azure ECC TLS Issuing CA" stand-in)
                  -> EC P-384 leaf for the hub host name

Both leaves carry the same extensions, modelled on a public Azure server certificate:
key usage, extended key usage, certificate policies with a CPS URL, CRL distribution
points, authority information access (OCSP + CA issuers), SKI/AKI, a structurally valid
signed-certificate-timestamp list (3 SCTs of the usual size) and a long subjectAltName
list: the hub host name, `localhost`, `127.0.0.1` (IP) and filler wildcard names the way
Azure lists its many service names. None of the filler names matches `<hub>.azure-devices.net`
(no `*.azure-devices.net`), so host-name tests stay strict.

Sizes (DER) this module produces (they vary by a few bytes between runs), against Azure's
where a figure is known (RSA chain: leaf ~2 KB+ with many SANs, intermediate ~1.7 KB,
docs/protocol.md 1.4; roots from docs/protocol.md 1.3):
                 here      Azure
  RSA leaf       ~2370 B   ~2 KB+ (RSA-2048 key, signed by an RSA-4096 issuing CA)
  RSA inter      ~1625 B   ~1.7 KB (Microsoft Azure RSA TLS Issuing CA, RSA-4096 key)
  RSA root        ~990 B   914 B (DigiCert Global Root G2; never sent by the server)
  ECC leaf       ~1780 B   no public figure checked; same extensions as the RSA leaf
  ECC inter      ~1035 B   no public figure checked (Microsoft Azure ECC TLS Issuing CA, P-384)
  ECC root        ~655 B   579 B (DigiCert Global Root G3)
  chain sent: RSA ~3995 B, ECC ~2810 B (leaf + intermediate)
The stand-in roots are a little larger than DigiCert's (longer names, an extra extension);
clients hold them, they are not on the wire.
`TestPKI.sizes()` returns the exact figures of the generated set.

Negative-test material (all for the hub host name unless said otherwise):
  "third-root"  a valid chain (leaf + intermediate) to a third root nobody trusts
  "self-signed" a self-signed leaf
  "expired"     a leaf under the right intermediate that expired yesterday
  "wrong-host"  a leaf under the right intermediate for `wrong-host.example.net` only
Each exists for both profiles: `negative_credentials(kind, profile)`.

Client certificates for X.509 devices: `issue_client_cert()` makes a self-signed one (Azure
thumbprint authentication) or one signed by the device CA (`device_ca_*`, the CA a user would
register and verify on the hub).
"""

import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import write_private

PROFILES = ("rsa", "ecc")
NEGATIVE_KINDS = ("third-root", "self-signed", "expired", "wrong-host")
_FORMAT = 1  # bump when the generated set changes shape
_RENEW_MARGIN = datetime.timedelta(days=14)
_SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_WRONG_HOST = "wrong-host.example.net"

# Filler names, so the leaf carries a SAN list as long as Azure's. Wildcards one label
# below azure-devices.net never match "<hub>.azure-devices.net".
_FILLER_SANS = [
    "*.amqpws.azure-devices.net",
    "*.su.azure-devices.net",
    "*.device.azure-devices.net",
    "*.service.azure-devices.net",
    "*.management-azure-devices.net",
    "*.su.management-azure-devices.net",
    "*.azure-devices-provisioning.net",
    "*.global.azure-devices-provisioning.net",
    "*.eastus.emulated-iot.invalid",
    "*.westeurope.emulated-iot.invalid",
]


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _name(cn, org="iothub emulator test PKI", ou=None):
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
    ]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _new_key(kind):
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    raise ValueError("unknown key kind %r (expected rsa2048, rsa4096, ec256 or ec384)" % kind)


def _sig_hash(signer_key):
    # RSA roots and intermediates sign with SHA-256 (G2 style); P-384 keys with SHA-384 (G3 style).
    if isinstance(signer_key, ec.EllipticCurvePrivateKey) and signer_key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _sct_list(seed):
    """A structurally valid SignedCertificateTimestampList (RFC 6962 3.3) with 3 entries.

    The log ids and signatures are filler bytes (no CT log signed them); they give the leaf
    the size a real one has and parse as SCTs."""
    scts = b""
    for i in range(3):
        log_id = hashlib.sha256(seed + bytes([i])).digest()
        sig = b"\x30\x45\x02\x20" + hashlib.sha256(log_id).digest()
        sig += b"\x02\x21\x00" + hashlib.sha256(log_id + b"s").digest()
        body = b"\x00" + log_id + struct.pack(">Q", 1700000000000 + i)
        body += b"\x00\x00" + b"\x04\x03" + struct.pack(">H", len(sig)) + sig
        scts += struct.pack(">H", len(body)) + body
    tls_list = struct.pack(">H", len(scts)) + scts
    # extension value = OCTET STRING wrapping the TLS-encoded list
    n = len(tls_list)
    hdr = b"\x04" + (bytes([n]) if n < 128 else b"\x82" + struct.pack(">H", n))
    return hdr + tls_list


def _build(
    subject,
    issuer_name,
    public_key,
    signer_key,
    *,
    ca=False,
    path_len=None,
    days=365,
    not_before=None,
    sans=None,
    server=False,
    client=False,
    azure_like=False,
    issuer_public_key=None,
):
    nb = not_before or (_now() - datetime.timedelta(hours=1))
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(nb)
        .not_valid_after(nb + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_public_key is not None:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
        )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        ekus = []
        if server:
            ekus.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            ekus.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if ekus:
            b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if sans:
        names = []
        for s in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if azure_like:
        base = "http://pki.emulated-iot.invalid/"
        b = b.add_extension(
            x509.CertificatePolicies(
                [
                    x509.PolicyInformation(
                        x509.ObjectIdentifier("1.3.6.1.4.1.311.76.509.1.1"),
                        [base + "pkiops/Docs/Repository.htm"],
                    ),
                    x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.2"), None),
                ]
            ),
            critical=False,
        )
        b = b.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(base + "crl/issuing-ca.crl")],
                        None,
                        None,
                        None,
                    ),
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(base + "crl2/issuing-ca.crl")],
                        None,
                        None,
                        None,
                    ),
                ]
            ),
            critical=False,
        )
        b = b.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://oneocsp.emulated-iot.invalid/ocsp"),
                    ),
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(base + "certs/issuing-ca.crt"),
                    ),
                ]
            ),
            critical=False,
        )
        if not ca:
            b = b.add_extension(
                x509.UnrecognizedExtension(_SCT_OID, _sct_list(subject.public_bytes())),
                critical=False,
            )
    return b.sign(signer_key, _sig_hash(signer_key))


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def thumbprints(cert_der):
    """(SHA-1, SHA-256) of a DER certificate as upper-case hex without separators (Azure's format)."""
    return (
        hashlib.sha1(cert_der).hexdigest().upper(),
        hashlib.sha256(cert_der).hexdigest().upper(),
    )


class TestPKI:
    """The emulator's PKI, persisted as PEM files in a state directory and reused.

    Use `TestPKI.load_or_create(state_dir)`. Files are regenerated when missing, made for
    another hub name, or close to expiry."""

    __test__ = False  # not a pytest test class

    def __init__(self, state_dir, hub_name):
        self.state_dir = os.path.abspath(state_dir)
        self.hub_name = hub_name
        self.hub_hostname = "%s.azure-devices.net" % hub_name
        self.wrong_hostname = _WRONG_HOST
        self._dir = os.path.join(self.state_dir, "pki")

    # ---- creation -------------------------------------------------------------------------

    @classmethod
    def load_or_create(cls, state_dir, hub_name="emulated-hub"):
        self = cls(state_dir, hub_name)
        os.makedirs(self._dir, exist_ok=True)
        lock_path = os.path.join(self._dir, ".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # several processes may share a state dir
            try:
                if not self._usable():
                    self._generate()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return self

    def _manifest_path(self):
        return os.path.join(self._dir, "pki.json")

    def _usable(self):
        try:
            with open(self._manifest_path()) as f:
                m = json.load(f)
        except (OSError, ValueError):
            return False
        if m.get("format") != _FORMAT or m.get("hub_name") != self.hub_name:
            return False
        for name in m.get("files", []):
            if not os.path.exists(self._p(name)):
                return False
        try:
            for profile in PROFILES:
                leaf = x509.load_pem_x509_certificate(self._read(profile + "-leaf.pem"))
                if leaf.not_valid_after_utc - _now() < _RENEW_MARGIN:
                    return False
        except (OSError, ValueError):
            return False
        return True

    def _p(self, name):
        return os.path.join(self._dir, name)

    def _read(self, name):
        with open(self._p(name), "rb") as f:
            return f.read()

    def _write(self, name, data, secret=False):
        path = self._p(name)
        if secret:
            write_private(path, data)  # 0600 even over an older file or a left-over .tmp
            return name
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return name

    def _generate(self):
        files = []
        sans = [self.hub_hostname, "localhost", "127.0.0.1"] + _FILLER_SANS
        kinds = {
            "rsa": ("rsa2048", "rsa4096", "rsa2048"),
            "ecc": ("ec384", "ec384", "ec384"),
        }
        roots_cn = {
            "rsa": "Emulated Global Root G2 (RSA stand-in)",
            "ecc": "Emulated Global Root G3 (ECC stand-in)",
        }
        inter_cn = {
            "rsa": "Emulated Azure RSA TLS Issuing CA 03",
            "ecc": "Emulated Azure ECC TLS Issuing CA 03",
        }
        for profile in PROFILES:
            rk, ik, lk = kinds[profile]
            root_key = _new_key(rk)
            root_name = _name(roots_cn[profile], ou="www.emulated-iot.invalid")
            root = _build(
                root_name,
                root_name,
                root_key.public_key(),
                root_key,
                ca=True,
                days=365 * 20,
            )
            inter_key = _new_key(ik)
            inter = _build(
                _name(inter_cn[profile]),
                root_name,
                inter_key.public_key(),
                root_key,
                ca=True,
                path_len=0,
                days=365 * 5,
                azure_like=True,
                issuer_public_key=root_key.public_key(),
            )
            leaf_key = _new_key(lk)
            leaf = self._leaf(inter, inter_key, leaf_key, sans)
            files += [
                self._write(profile + "-root.pem", _pem_cert(root)),
                self._write(profile + "-root.der", root.public_bytes(serialization.Encoding.DER)),
                self._write(profile + "-intermediate.pem", _pem_cert(inter)),
                self._write(profile + "-leaf.pem", _pem_cert(leaf)),
                self._write(profile + "-chain.pem", _pem_cert(leaf) + _pem_cert(inter)),
                self._write(profile + "-leaf-key.pem", _pem_key(leaf_key), secret=True),
                self._write(profile + "-intermediate-key.pem", _pem_key(inter_key), secret=True),
            ]
            files += self._negatives(profile, lk, inter, inter_key, sans)
        # the device CA: the CA a user registers (and proves possession of) on the hub
        dca_key = _new_key("ec256")
        dca_name = _name("Emulated Device CA", org="iothub emulator device owner")
        dca = _build(dca_name, dca_name, dca_key.public_key(), dca_key, ca=True, days=365 * 10)
        files += [
            self._write("device-ca.pem", _pem_cert(dca)),
            self._write("device-ca.der", dca.public_bytes(serialization.Encoding.DER)),
            self._write("device-ca-key.pem", _pem_key(dca_key), secret=True),
        ]
        manifest = {"format": _FORMAT, "hub_name": self.hub_name, "files": files}
        self._write("pki.json", json.dumps(manifest, indent=1).encode())

    def _leaf(self, inter, inter_key, leaf_key, sans, **kw):
        return _build(
            _name(sans[0], org="iothub emulator hub"),
            inter.subject,
            leaf_key.public_key(),
            inter_key,
            sans=sans,
            server=True,
            client=True,
            azure_like=True,
            issuer_public_key=inter_key.public_key(),
            **kw,
        )

    def _negatives(self, profile, leaf_kind, inter, inter_key, sans):
        files = []
        p = profile + "-"
        # a complete, valid hierarchy under a root no client trusts
        t_root_key = _new_key("ec384" if profile == "ecc" else "rsa2048")
        t_root_name = _name("Untrusted Third Root (%s)" % profile, org="someone else")
        t_root = _build(
            t_root_name, t_root_name, t_root_key.public_key(), t_root_key, ca=True, days=3650
        )
        t_inter_key = _new_key(leaf_kind)
        t_inter = _build(
            _name("Untrusted Issuing CA (%s)" % profile, org="someone else"),
            t_root_name,
            t_inter_key.public_key(),
            t_root_key,
            ca=True,
            path_len=0,
            days=3650,
            issuer_public_key=t_root_key.public_key(),
        )
        t_leaf_key = _new_key(leaf_kind)
        t_leaf = self._leaf(t_inter, t_inter_key, t_leaf_key, sans)
        files += [
            self._write(p + "third-root.pem", _pem_cert(t_root)),
            self._write(p + "third-root.der", t_root.public_bytes(serialization.Encoding.DER)),
            self._write(p + "third-root-chain.pem", _pem_cert(t_leaf) + _pem_cert(t_inter)),
            self._write(p + "third-root-key.pem", _pem_key(t_leaf_key), secret=True),
        ]
        # self-signed leaf for the right host name
        s_key = _new_key(leaf_kind)
        s_name = _name(self.hub_hostname, org="iothub emulator hub")
        s_leaf = _build(
            s_name, s_name, s_key.public_key(), s_key, sans=sans[:3], server=True, days=365
        )
        files += [
            self._write(p + "self-signed-chain.pem", _pem_cert(s_leaf)),
            self._write(p + "self-signed-key.pem", _pem_key(s_key), secret=True),
        ]
        # expired leaf under the right intermediate
        e_key = _new_key(leaf_kind)
        e_leaf = self._leaf(
            inter,
            inter_key,
            e_key,
            sans,
            not_before=_now() - datetime.timedelta(days=31),
            days=30,
        )
        files += [
            self._write(p + "expired-chain.pem", _pem_cert(e_leaf) + _pem_cert(inter)),
            self._write(p + "expired-key.pem", _pem_key(e_key), secret=True),
        ]
        # right chain, wrong host name
        w_key = _new_key(leaf_kind)
        w_leaf = self._leaf(inter, inter_key, w_key, [_WRONG_HOST])
        files += [
            self._write(p + "wrong-host-chain.pem", _pem_cert(w_leaf) + _pem_cert(inter)),
            self._write(p + "wrong-host-key.pem", _pem_key(w_key), secret=True),
        ]
        return files

    # ---- accessors ------------------------------------------------------------------------

    @staticmethod
    def _check_profile(profile):
        if profile not in PROFILES:
            raise ValueError("unknown TLS profile %r (expected 'rsa' or 'ecc')" % (profile,))

    def root_pem_path(self, profile):
        self._check_profile(profile)
        return self._p(profile + "-root.pem")

    def root_der_path(self, profile):
        self._check_profile(profile)
        return self._p(profile + "-root.der")

    def root_der(self, profile):
        self._check_profile(profile)
        return self._read(profile + "-root.der")

    def intermediate_pem_path(self, profile):
        self._check_profile(profile)
        return self._p(profile + "-intermediate.pem")

    def server_credentials(self, profile):
        """(chain PEM path: leaf + intermediate, key PEM path) of the hub's server certificate."""
        self._check_profile(profile)
        return self._p(profile + "-chain.pem"), self._p(profile + "-leaf-key.pem")

    def negative_credentials(self, kind, profile="ecc"):
        """(chain PEM path, key PEM path) of a server certificate a client must refuse.

        kind: "third-root", "self-signed", "expired" or "wrong-host" (see the module docstring)."""
        self._check_profile(profile)
        if kind not in NEGATIVE_KINDS:
            raise ValueError(
                "unknown negative kind %r (expected one of %s)" % (kind, NEGATIVE_KINDS)
            )
        key = "third-root-key.pem" if kind == "third-root" else kind + "-key.pem"
        return self._p(profile + "-" + kind + "-chain.pem"), self._p(profile + "-" + key)

    def third_root_der(self, profile="ecc"):
        self._check_profile(profile)
        return self._read(profile + "-third-root.der")

    def third_root_pem_path(self, profile="ecc"):
        self._check_profile(profile)
        return self._p(profile + "-third-root.pem")

    @property
    def device_ca_pem_path(self):
        return self._p("device-ca.pem")

    @property
    def device_ca_der(self):
        return self._read("device-ca.der")

    def issue_client_cert(self, common_name, kind="ec256", ca="self", days=365):
        """A device certificate for mutual TLS.

        kind: "ec256" (EC P-256), "ec384" or "rsa2048"; ca: "self" (self-signed, for thumbprint
        authentication) or "device-ca" (signed by the device CA). The subject CN is the device
        id, as IoT Hub requires for CA-signed certificates.
        Returns (cert_pem, key_pem, sha1_hex, sha256_hex) with upper-case hex thumbprints."""
        if kind not in ("ec256", "ec384", "rsa2048"):
            raise ValueError("unknown client key kind %r (expected ec256, ec384 or rsa2048)" % kind)
        key = _new_key(kind)
        subject = _name(common_name, org="iothub emulator device")
        if ca == "self":
            issuer_name, signer, issuer_pub = subject, key, None
        elif ca == "device-ca":
            signer = serialization.load_pem_private_key(self._read("device-ca-key.pem"), None)
            issuer_name = x509.load_pem_x509_certificate(self._read("device-ca.pem")).subject
            issuer_pub = signer.public_key()
        else:
            raise ValueError("unknown issuer %r (expected 'self' or 'device-ca')" % (ca,))
        cert = _build(
            subject,
            issuer_name,
            key.public_key(),
            signer,
            client=True,
            days=days,
            issuer_public_key=issuer_pub,
        )
        sha1, sha256 = thumbprints(cert.public_bytes(serialization.Encoding.DER))
        return _pem_cert(cert), _pem_key(key), sha1, sha256

    def sizes(self):
        """DER sizes in bytes of the generated certificates, per profile."""
        out = {}
        for profile in PROFILES:
            row = {}
            for part in ("root", "intermediate", "leaf"):
                cert = x509.load_pem_x509_certificate(self._read("%s-%s.pem" % (profile, part)))
                row[part] = len(cert.public_bytes(serialization.Encoding.DER))
            row["chain_sent"] = row["leaf"] + row["intermediate"]
            out[profile] = row
        return out


def pem_to_der_list(pem):
    """All certificates of a PEM bundle as DER, in order."""
    return [
        c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)
    ]


if __name__ == "__main__":  # python -m iothub_emulator.pki STATE_DIR: print the sizes
    import sys

    pki = TestPKI.load_or_create(sys.argv[1] if len(sys.argv) > 1 else ".iothub-state")
    print(json.dumps(pki.sizes(), indent=1))
