# PEM/DER handling and the key-to-certificate check for mutual TLS and custom roots.
# Loaded only when a client certificate or custom roots are given. A minimal DER walker:
# just enough ASN.1 to find the public key in a certificate and in a private key.
import binascii

from .errors import ConfigError

_OID_EC = b"\x2a\x86\x48\xce\x3d\x02\x01"
_OID_RSA = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"
_CURVES = {b"\x2a\x86\x48\xce\x3d\x03\x01\x07": "P-256", b"\x2b\x81\x04\x00\x22": "P-384"}


def client_credentials(cert, key):
    certs = _certs(cert, "cert")
    if len(certs) != 1:
        raise ConfigError(
            "cert= holds %d certificates; give the device certificate only (the firmware sends one)"
            % len(certs)
        )
    cert_der = certs[0]
    key_der = _key(key)
    ck = _cert_public_key(cert_der, "cert")
    kk = _private_key_public(key_der)
    if ck[0] != kk[0]:
        raise ConfigError(
            "key= is an %s key but cert= holds an %s key: they do not belong together"
            % (kk[0].upper(), ck[0].upper())
        )
    if ck[0] == "rsa":
        bits = len(ck[2]) * 8
        if bits < 2048 or bits > 4096:
            raise ConfigError("cert= holds an RSA-%d key; RSA-2048 to 4096 is supported" % bits)
        if ck[2] != kk[2]:
            raise ConfigError("key= does not match cert= (different RSA modulus)")
        return cert_der, key_der, "RSA-%d" % bits
    curve = _CURVES.get(ck[1])
    if curve is None:
        raise ConfigError(
            "cert= holds an EC key on an unsupported curve; EC P-256 or P-384 is supported"
        )
    if kk[1] is not None and kk[1] != ck[1]:
        raise ConfigError("key= is on another curve than cert=: they do not belong together")
    if kk[2] is not None and kk[2] != ck[2]:
        raise ConfigError("key= does not match cert= (different EC public key)")
    return cert_der, key_der, "EC " + curve


def _as_bytes(data, what):
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise ConfigError("%s must be bytes or str (PEM or DER), got %s" % (what, type(data).__name__))


def _is_pem(b):
    return b.lstrip()[:10] == b"-----BEGIN"


def _pem_blocks(b, what):
    """[(label, der)] of a PEM text. Errors name the block, never its content."""
    out = []
    pos = 0
    while True:
        start = b.find(b"-----BEGIN ", pos)
        if start < 0:
            break
        eol = b.find(b"-----", start + 11)
        if eol < 0:
            raise ConfigError("%s: malformed PEM header" % what)
        label = b[start + 11 : eol]
        end_marker = b"-----END " + label + b"-----"
        end = b.find(end_marker, eol + 5)
        if end < 0:
            raise ConfigError("%s: PEM block %s has no END line" % (what, label.decode()))
        body = b[eol + 5 : end]
        if b"Proc-Type:" in body or b"ENCRYPTED" in label:
            raise ConfigError(
                "%s: encrypted PEM is not supported; give the key without a passphrase" % what
            )
        try:
            der = binascii.a2b_base64(b"".join(body.split()))
        except ValueError:
            raise ConfigError("%s: PEM block %s is not valid base64" % (what, label.decode()))
        out.append((label.decode(), der))
        pos = end + len(end_marker)
    if not out:
        raise ConfigError("%s: no PEM block found" % what)
    return out


def _certs(data, what):
    """DER certificates from one PEM (one or more CERTIFICATE blocks) or DER input."""
    b = _as_bytes(data, what)
    if _is_pem(b):
        ders = [der for label, der in _pem_blocks(b, what) if label == "CERTIFICATE"]
        if not ders:
            raise ConfigError("%s: PEM without a CERTIFICATE block" % what)
    else:
        ders = []
        pos = 0
        try:
            while pos < len(b):
                tag, s, e = _tlv(b, pos)
                if tag != 0x30:
                    raise ValueError
                ders.append(b[pos:e])
                pos = e
        except (ValueError, IndexError):
            raise ConfigError("%s: neither PEM nor a DER certificate" % what)
        if not ders:
            raise ConfigError("%s: empty" % what)
    for der in ders:
        _cert_public_key(der, what)
    return ders


def _key(data):
    b = _as_bytes(data, "key")
    if _is_pem(b):
        blocks = [(lb, d) for lb, d in _pem_blocks(b, "key") if lb.endswith("PRIVATE KEY")]
        if len(blocks) != 1:
            raise ConfigError("key: expected one PEM PRIVATE KEY block, found %d" % len(blocks))
        b = blocks[0][1]
    try:
        tag, s, e = _tlv(b, 0)
        if tag != 0x30 or e != len(b):
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError("key: neither PEM nor a DER private key")
    return b


# ---- a little DER -----------------------------------------------------------------------


def _tlv(b, i):
    tag = b[i]
    n = b[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if k < 1 or k > 3:
            raise ValueError
        n = int.from_bytes(b[i : i + k], "big")
        i += k
    if i + n > len(b):
        raise ValueError
    return tag, i, i + n


def _items(b, s, e):
    out = []
    while s < e:
        t, cs, ce = _tlv(b, s)
        out.append((t, cs, ce))
        s = ce
    return out


def _int_bytes(b, s, e):
    while s < e - 1 and b[s] == 0:
        s += 1
    return b[s:e]


def _spki(b, s, e):
    # SubjectPublicKeyInfo -> ("ec", curve oid, point) | ("rsa", None, modulus)
    alg, bits = _items(b, s, e)[:2]
    a = _items(b, alg[1], alg[2])
    oid = b[a[0][1] : a[0][2]]
    key = b[bits[1] + 1 : bits[2]]  # skip the unused-bits byte
    if oid == _OID_EC:
        return ("EC", b[a[1][1] : a[1][2]], key)
    if oid == _OID_RSA:
        n = _items(key, 0, len(key))
        n = _items(key, n[0][1], n[0][2])[0]
        return ("RSA", None, _int_bytes(key, n[1], n[2]))
    raise ValueError


def _cert_public_key(der, what):
    try:
        cert = _items(der, 0, len(der))[0]
        tbs = _items(der, cert[1], cert[2])[0]
        f = _items(der, tbs[1], tbs[2])
        if f[0][0] == 0xA0:  # explicit version
            f = f[1:]
        r = _spki(der, f[5][1], f[5][2])
    except (ValueError, IndexError):
        raise ConfigError("%s: not a valid X.509 certificate with an RSA or EC key" % what)
    return (r[0].lower(), r[1], r[2])


def _private_key_public(der):
    """("rsa", None, modulus) or ("ec", curve oid or None, public point or None)."""
    try:
        top = _items(der, 0, len(der))[0]
        f = _items(der, top[1], top[2])
        if f[1][0] == 0x30:  # PKCS#8: version, algorithm, OCTET STRING key
            a = _items(der, f[1][1], f[1][2])
            oid = der[a[0][1] : a[0][2]]
            inner = der[f[2][1] : f[2][2]]
            if oid == _OID_RSA:
                return _rsa_private(inner)
            if oid == _OID_EC:
                curve = der[a[1][1] : a[1][2]] if len(a) > 1 and a[1][0] == 0x06 else None
                kind, c2, pub = _ec_private(inner)
                return (kind, curve or c2, pub)
            raise ConfigError("key: unsupported key algorithm; RSA or EC keys are supported")
        if f[1][0] == 0x04:  # SEC1 ECPrivateKey
            return _ec_private(der)
        if f[1][0] == 0x02:  # PKCS#1 RSAPrivateKey
            return _rsa_private(der)
    except (ValueError, IndexError):
        pass
    raise ConfigError("key: not a valid private key (PKCS#8, SEC1 EC or PKCS#1 RSA expected)")


def _rsa_private(der):
    f = _items(der, *_items(der, 0, len(der))[0][1:])
    return ("rsa", None, _int_bytes(der, f[1][1], f[1][2]))


def _ec_private(der):
    f = _items(der, *_items(der, 0, len(der))[0][1:])
    curve = pub = None
    for t, s, e in f[2:]:
        if t == 0xA0:
            c = _items(der, s, e)[0]
            curve = der[c[1] : c[2]]
        elif t == 0xA1:
            bs = _items(der, s, e)[0]
            pub = der[bs[1] + 1 : bs[2]]
    return ("ec", curve, pub)


def certs(data, what):
    return _certs(data, what)
