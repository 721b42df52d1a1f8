# TLS profiles for Azure IoT Hub: one configured tls.SSLContext per call.
#
#   ctx = tls_context("ecc")                      # ECC hub: trusts G3, offers ECDHE-ECDSA only
#   sock = ctx.wrap_socket(raw, server_hostname="myhub.azure-devices.net")
#   print(ctx.iothub_info)                        # what was configured (and negotiated)
#
# Facts behind the choices: iothub-protocol.md section 1 (suites 1.2/1.3, roots 1.4/1.5,
# max fragment length 1.8); MicroPython's tls module: extmod/modtls_mbedtls.c.
#
# The context is the built-in tls.SSLContext (not micropython-lib's ssl wrapper, whose
# constructor turns verification off), subclassed only to hold `iothub_info` and to make
# wrap_socket() insist on server_hostname and explain handshake failures. Verification is
# always CERT_REQUIRED; nothing turns it off.
#
# Max fragment length (RFC 6066): stock MicroPython cannot request it. Firmware built with
# our C module `tlsx` can (tlsx.set_max_fragment_length). Without it the request is
# recorded as not made, with one warning per boot, or TLSError when require_mfl=True.

import binascii
import hashlib

from .errors import ConfigError, TLSError

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
_DEFAULT_ROOT = {
    "rsa": ("ROOT_G2", "DigiCert Global Root G2"),
    "ecc": ("ROOT_G3", "DigiCert Global Root G3"),
}
MFL_SIZES = (512, 1024, 2048, 4096)

_OID_EC = b"\x2a\x86\x48\xce\x3d\x02\x01"
_OID_RSA = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"
_CURVES = {b"\x2a\x86\x48\xce\x3d\x03\x01\x07": "P-256", b"\x2b\x81\x04\x00\x22": "P-384"}

_mfl_warned = False  # one warning per boot
_ctx_class = None  # (tls.SSLContext, our subclass), made on first use


def tls_context(
    profile, *, roots=None, max_fragment_length=None, require_mfl=False, cert=None, key=None
):
    """A tls.SSLContext configured for an IoT Hub TLS profile ("rsa" or "ecc").

    roots: list of DER or PEM certificates replacing the profile's default root.
    cert, key: client certificate and private key (PEM or DER) for mutual TLS.
    max_fragment_length: 512, 1024, 2048 or 4096, requested when the firmware can.
    require_mfl: raise TLSError instead of warning when it cannot.
    The result has `iothub_info`, a dict describing the configuration."""
    global _mfl_warned
    suites = SUITES.get(profile) if isinstance(profile, str) else None
    if suites is None:
        raise ConfigError(
            "unknown TLS profile %r: expected 'rsa' (RSA hub) or 'ecc' (ECC hub)" % (profile,)
        )
    if max_fragment_length is not None and max_fragment_length not in MFL_SIZES:
        raise ConfigError(
            "max_fragment_length must be 512, 1024, 2048 or 4096 (RFC 6066), got %r"
            % (max_fragment_length,)
        )
    if require_mfl and max_fragment_length is None:
        raise ConfigError("require_mfl=True needs max_fragment_length= (512, 1024, 2048 or 4096)")
    if (cert is None) != (key is None):
        raise ConfigError(
            "mutual TLS needs both cert= and key= (got only %s)"
            % ("cert" if key is None else "key")
        )

    # Parse everything before touching the firmware, so bad input fails the same everywhere.
    root_list = _roots(profile, roots)
    client = None
    if cert is not None:
        client = _client_credentials(cert, key)

    tls = _tls_module()
    ctx = _context_type(tls)(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
    offered = _set_suites(ctx, profile, suites)
    info = {
        "profile": profile,
        "verify": "CERT_REQUIRED",
        "suites": offered,
        "roots": [],
        "client_cert": None,
        "mfl": None,
        "negotiated": None,
    }
    for i, (name, der) in enumerate(root_list):
        try:
            ctx.load_verify_locations(der)
        except (ValueError, OSError) as e:
            raise ConfigError("roots[%d]: the firmware rejected the certificate (%s)" % (i, e))
        info["roots"].append({"name": name, "sha256": _hex(hashlib.sha256(der).digest())})
    if client is not None:
        cert_der, key_der, kind = client
        try:
            ctx.load_cert_chain(cert_der, key_der)
        except (ValueError, OSError) as e:
            raise ConfigError("client certificate or key rejected by the firmware: %s" % _short(e))
        cc = {"key": kind, "sha256": _hex(hashlib.sha256(cert_der).digest())}
        if hasattr(hashlib, "sha1"):
            cc["sha1"] = _hex(hashlib.sha1(cert_der).digest())
        info["client_cert"] = cc

    mfl = _request_mfl(ctx, max_fragment_length)
    info["mfl"] = mfl
    if max_fragment_length is not None and (
        not mfl["requested"] or mfl["size"] != max_fragment_length
    ):
        if require_mfl:
            raise TLSError(
                "max_fragment_length=%d required but not possible: %s"
                % (max_fragment_length, mfl["reason"])
            )
        if not _mfl_warned:
            _mfl_warned = True
            print(
                "iothub: warning: TLS max fragment length %d not requested (%s); the hub may "
                "send larger records" % (max_fragment_length, mfl["reason"])
            )
    ctx.iothub_info = info
    return ctx


class TLSInfo:
    """What a connection negotiated, plus what its context configured.

    TLSInfo(sock, ctx=None): cipher and version from sock.cipher(); profile, suites offered
    and the max fragment length requested from ctx.iothub_info. `mfl_negotiated` is None:
    an mbedTLS client keeps no record of the server's echo (only that it matched)."""

    def __init__(self, sock, ctx=None):
        c = None
        try:
            c = sock.cipher()
        except (AttributeError, OSError):
            pass
        self.cipher = c[0] if c else None
        self.version = c[1] if c and len(c) > 1 else None
        conf = getattr(ctx, "iothub_info", None) or {}
        self.profile = conf.get("profile")
        self.suites_offered = conf.get("suites")
        mfl = conf.get("mfl") or {}
        self.mfl_requested = mfl.get("size") if mfl.get("requested") else None
        self.mfl_negotiated = None

    def as_dict(self):
        return {
            "cipher": self.cipher,
            "version": self.version,
            "profile": self.profile,
            "mfl_requested": self.mfl_requested,
            "mfl_negotiated": self.mfl_negotiated,
        }

    def __repr__(self):
        return "<TLSInfo %s %s profile=%s mfl=%s>" % (
            self.version,
            self.cipher,
            self.profile,
            self.mfl_requested,
        )


def tls_info(sock, ctx=None):
    """TLSInfo of a wrapped socket (see TLSInfo)."""
    return TLSInfo(sock, ctx)


# ---- firmware ---------------------------------------------------------------------------


def _tls_module():
    try:
        import tls
    except Exception:  # ImportError; on CPython a script named tls.py may shadow it
        raise TLSError(
            "this firmware has no `tls` module: MicroPython 1.23 or newer with mbedTLS is needed"
        )
    if not hasattr(tls, "SSLContext"):
        raise TLSError(
            "this firmware's `tls` module has no SSLContext: MicroPython 1.23 or newer is needed"
        )
    return tls


def _context_type(tls):
    global _ctx_class
    if _ctx_class is not None and _ctx_class[0] is tls.SSLContext:
        return _ctx_class[1]

    class IoTHubSSLContext(tls.SSLContext):
        # wrap_socket with server_hostname required and handshake errors explained
        def wrap_socket(
            self, sock, server_side=False, do_handshake_on_connect=True, server_hostname=None
        ):
            if server_side:
                raise ConfigError(
                    "iothub TLS contexts are client contexts (server_side=True given)"
                )
            if not server_hostname:
                raise ConfigError(
                    "server_hostname is required: it is sent as SNI and the certificate is checked against it"
                )
            try:
                s = super().wrap_socket(
                    sock,
                    server_side=False,
                    do_handshake_on_connect=do_handshake_on_connect,
                    server_hostname=server_hostname,
                )
            except OSError as e:
                code = e.args[0] if e.args else None
                if isinstance(code, int) and code >= 0:
                    raise  # a socket error (reset, timeout): not a TLS verdict
                raise handshake_error(e, server_hostname, getattr(self, "iothub_info", None))
            except ValueError as e:
                raise handshake_error(e, server_hostname, getattr(self, "iothub_info", None))
            info = getattr(self, "iothub_info", None)
            if do_handshake_on_connect and info is not None:
                info["negotiated"] = TLSInfo(s, self).as_dict()
            return s

    _ctx_class = (tls.SSLContext, IoTHubSSLContext)
    return IoTHubSSLContext


def _set_suites(ctx, profile, suites):
    if not hasattr(ctx, "set_ciphers") or not hasattr(ctx, "get_ciphers"):
        raise TLSError(
            "this MicroPython's tls.SSLContext has no set_ciphers(): version 1.23 or newer is needed"
        )
    have = ctx.get_ciphers()
    offered = [s for s in suites if s in have]
    if not offered:
        raise TLSError(
            "this firmware's mbedTLS has none of the %r profile's cipher suites (%s)"
            % (profile, ", ".join(suites))
        )
    try:
        ctx.set_ciphers(offered)
    except (OSError, ValueError) as e:
        raise TLSError("the firmware refused the %r profile's cipher suites: %s" % (profile, e))
    return offered


def _request_mfl(ctx, size):
    """Request `size` through tlsx when the firmware has it. Returns the `mfl` info dict:
    requested (an MFL goes out in the ClientHello), size (that one, or the one asked for
    when none goes out) and reason."""
    try:
        import tlsx
    except ImportError:
        tlsx = None
    setter = getattr(tlsx, "set_max_fragment_length", None)
    getter = getattr(tlsx, "get_max_fragment_length", None)

    def current():
        # what the context requests now (our firmware may request a board default)
        try:
            return getter(ctx) if getter is not None else 0
        except Exception:
            return 0

    if size is None:
        n = current()
        if n:
            return {"requested": True, "size": n, "reason": "board default (tlsx)"}
        return {"requested": False, "size": None, "reason": "not asked for"}
    if setter is None:
        return {
            "requested": False,
            "size": size,
            "reason": "this firmware cannot request it (no tlsx module; stock MicroPython)",
        }
    try:
        setter(ctx, size)
    except (OSError, ValueError, RuntimeError, TypeError, NotImplementedError) as e:
        why = "tlsx could not set it: %s" % (e,)
        n = current()
        if n:
            return {
                "requested": True,
                "size": n,
                "reason": why + "; the board default is requested",
            }
        return {"requested": False, "size": size, "reason": why}
    return {"requested": True, "size": size, "reason": "requested through tlsx"}


# ---- handshake errors -------------------------------------------------------------------

_ALERT = -0x7780  # MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE
_HINTS = {
    -0x6E80: "the server offered a TLS version older than 1.2, which this client refuses",
    -0x7200: "a TLS record was larger than the input buffer (did the server ignore max fragment length?)",
    -0x2700: "the server certificate did not verify",
    -0x7080: "no cipher suite in common with the server",
    -0x7100: "a handshake message (likely the server's certificate chain) does not fit this "
    "firmware's TLS input buffer%s: mbedTLS reassembles it there whatever the max fragment "
    "length; use the ECC profile or firmware with a larger MBEDTLS_SSL_IN_CONTENT_LEN",
}


def handshake_error(e, hostname, info=None):
    """A TLSError that says in plain words why a handshake failed (e: the firmware's error).

    The result has `.code` (the mbedTLS error code or None) and `.reason`: "untrusted",
    "expired", "not-yet-valid", "hostname", "refused" (fatal alert), "buffer" (a handshake
    message larger than the input buffer) or "other"."""
    profile = (info or {}).get("profile")
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    text = str(e.args[-1] if e.args else e).strip()
    low = text.lower()
    why = []
    reason = "other"
    if isinstance(e, ValueError) or code == -0x2700:
        if "expired" in low:
            reason = "expired"
            why.append("the server certificate has expired (or the device clock is wrong)")
        if "future" in low:
            reason = "not-yet-valid"
            why.append("the server certificate is not valid yet: is the device clock set?")
        if "cn" in low or "common name" in low:
            reason = "hostname"
            why.append("the server certificate is not valid for host name %r" % hostname)
        if "trusted" in low:
            reason = "untrusted"
            names = ", ".join(r["name"] for r in (info or {}).get("roots", ())) or "?"
            why.append(
                "the server certificate does not chain to a trusted root (this context trusts: %s). "
                "RSA hubs chain to DigiCert Global Root G2 (profile 'rsa'), ECC hubs to G3 "
                "(profile 'ecc'); gateways and private CAs need roots=" % names
            )
        if not why:
            why.append("the server certificate was refused")
    elif code == _ALERT:
        reason = "refused"
        if profile == "ecc":
            other = "an RSA hub (use profile 'rsa')"
        elif profile == "rsa":
            other = "an ECC hub (use profile 'ecc')"
        else:
            other = "a server with other suites"
        why.append(
            "the server refused the handshake (fatal alert): most likely it accepts none of the "
            "%r profile's cipher suites, i.e. it is %s, or it only speaks TLS 1.0/1.1"
            % (profile, other)
        )
    elif code == -0x7100:
        reason = "buffer"
        why.append(_HINTS[code] % _in_len())
    elif code in _HINTS:
        why.append(_HINTS[code])
    text = " ".join(text.split())  # mbedTLS verify text spans lines
    if code is not None:
        text = "%s, mbedTLS -0x%04X" % (text, -code) if code < 0 else "%s, %d" % (text, code)
    err = TLSError(
        "TLS handshake with %s failed: %s (%s)" % (hostname, "; ".join(why) or "error", text)
    )
    err.code = code
    err.reason = reason
    return err


def _in_len():
    try:
        import tlsx

        return " (%d bytes)" % tlsx.IN_CONTENT_LEN
    except (ImportError, AttributeError):
        return ""


# ---- roots and client credentials -------------------------------------------------------


def _roots(profile, roots):
    if roots is None:
        from .roots import ROOT_G2, ROOT_G3

        attr, name = _DEFAULT_ROOT[profile]
        return [(name, ROOT_G2 if attr == "ROOT_G2" else ROOT_G3)]
    if isinstance(roots, (bytes, bytearray, str)):
        roots = [roots]
    out = []
    try:
        items = list(roots)
    except TypeError:
        raise ConfigError(
            "roots= must be a list of DER or PEM certificates, got %s" % type(roots).__name__
        )
    for i, r in enumerate(items):
        for der in _certs(r, "roots[%d]" % i):
            out.append(("custom", der))
    if not out:
        raise ConfigError("roots= is empty: at least one root certificate is needed")
    return out


def _client_credentials(cert, key):
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


def _hex(b):
    return binascii.hexlify(b).decode().upper()


def _short(e):
    # firmware messages like "invalid key" never hold key material, but keep them short
    return str(e)[:60]
