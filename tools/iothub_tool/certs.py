"""Device certificates for X.509 authentication: EC P-256 (default) or RSA-2048, self-signed (for
thumbprint registration) or signed by a CA the user holds (CA registration; CN = device id)."""

import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .sas import ToolError


def thumbprints(cert_der):
    return hashlib.sha1(cert_der).hexdigest().upper(), hashlib.sha256(cert_der).hexdigest().upper()


def _spki(pub):
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def create(cn, rsa_key=False, ca_cert_pem=None, ca_key_pem=None, days=365):
    """-> (cert_pem, key_pem, sha1, sha256)."""
    if not cn or len(cn) > 64:
        raise ToolError("--cn must be 1..64 characters (the device id)")
    key = (
        rsa.generate_private_key(65537, 2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    if (ca_cert_pem is None) != (ca_key_pem is None):
        raise ToolError("--ca-cert and --ca-key go together")
    if ca_cert_pem is not None:
        try:
            ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
            signer = serialization.load_pem_private_key(ca_key_pem, None)
        except (ValueError, TypeError) as e:
            raise ToolError("cannot load the CA certificate or key: %s" % e) from None
        if _spki(signer.public_key()) != _spki(ca_cert.public_key()):
            raise ToolError("--ca-key does not belong to --ca-cert")
        issuer = ca_cert.subject
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    else:
        signer, issuer = key, subject
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
    )
    algo = hashes.SHA256()
    if isinstance(signer, ec.EllipticCurvePrivateKey) and signer.curve.key_size > 256:
        algo = hashes.SHA384()
    cert = b.sign(signer, algo)
    der = cert.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, *thumbprints(der)
