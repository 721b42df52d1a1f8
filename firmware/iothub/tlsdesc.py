# What describes a TLS configuration: the cipher suites of each profile, the certificates
# a roots= setting stands for, and the full record tls_info() and ctx.iothub_info hold.
# iothub.tlsconf builds contexts with it (the clients load both at construction and drop
# them when the context is made); a client's tls_info() loads this module alone to rebuild
# its full record, not the configuration code.
#
# Facts behind the choices: docs/protocol.md section 1 (suites 1.2, roots 1.3).

import binascii
import hashlib

from .errors import explained, unload

# mbedTLS spelling, AES-128-GCM first (cheapest on a microcontroller; the hub follows the
# client's order). RSA: the hub's four recommended suites (1.2a); ECC: the four ECDSA
# suites of the ECC server certificate (1.2c), nothing with RSA.
SUITES = {
    "rsa": (
        "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
        "TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256",
        "TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384",
    ),
    "ecc": (
        "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
        "TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384",
    ),
}


def roots(profile, value):
    """[(name, DER)] of a roots= value: the profile's DigiCert root when None, else each
    certificate given (DER as it is, PEM decoded). ConfigError for anything else."""
    if value is None:
        from .roots import ROOT_G2, ROOT_G3

        if profile == "rsa":
            return [("DigiCert Global Root G2", ROOT_G2)]
        return [("DigiCert Global Root G3", ROOT_G3)]
    if isinstance(value, (bytes, bytearray, str)):
        value = [value]
    out = []
    try:
        items = list(value)
    except TypeError:
        raise explained("tlstexts", "error", 7, (type(value).__name__,))
    for i, r in enumerate(items):
        # SEQUENCE with a two-byte length spanning exactly the input: one DER certificate
        if (
            isinstance(r, (bytes, bytearray))
            and len(r) > 4
            and r[0] == 0x30
            and r[1] == 0x82
            and 4 + (r[2] << 8 | r[3]) == len(r)
        ):
            # One DER certificate: the firmware checks it when it loads it; the PEM/ASN.1
            # helpers (7-14 KB of heap) are loaded only for PEM or unusual input.
            out.append(("custom", bytes(r)))
            continue
        from .pem import certs

        for der in certs(r, "roots[%d]" % i):
            out.append(("custom", der))
    if not out:
        raise explained("tlstexts", "error", 8, ())
    return out


def full(profile, suites, roots, client, mfl):
    """The full record of a configuration: roots [(name, DER)] (of roots()), client (DER,
    key, kind) of pem.client_credentials or None, mfl the dict tlsconf's request made."""
    info = {
        "profile": profile,
        "verify": "CERT_REQUIRED",
        "suites": suites,
        "roots": [{"name": n, "sha256": _hex(hashlib.sha256(der).digest())} for n, der in roots],
        "client_cert": None,
        "mfl": mfl,
        "negotiated": None,
    }
    if client is not None:
        cert_der, _, kind = client
        cc = {"key": kind, "sha256": _hex(hashlib.sha256(cert_der).digest())}
        if hasattr(hashlib, "sha1"):
            cc["sha1"] = _hex(hashlib.sha1(cert_der).digest())
        info["client_cert"] = cc
    return info


def describe(info, value=None, cert=None, key=None):
    """The full record of a context tlsconf.configure(..., plain=True) made, from the
    minimal one it keeps (the offered suites a bit mask of the profile's) and the settings
    it was made from (value: roots=; the roots are hashed, the certificate parsed again).
    Runs once, on request (clientrare.tls_info, which loads this module for the call:
    errors.explained); pem and roots go again afterwards."""
    profile = info["profile"]
    mask = info.get("suites", -1)  # absent: all of them (tlsconf.configure)
    client = None
    try:
        if cert is not None:
            from .pem import client_credentials

            client = client_credentials(cert, key)
        return full(
            profile,
            [s for i, s in enumerate(SUITES[profile]) if mask >> i & 1],
            roots(profile, value),
            client,
            info["mfl"],
        )
    finally:
        unload("pem", "roots")


def _hex(b):
    return binascii.hexlify(b).decode().upper()
