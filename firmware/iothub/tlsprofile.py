# TLS profiles for Azure IoT Hub: one configured tls.SSLContext per call.
#
#   ctx = tls_context("ecc")                      # ECC hub: trusts G3, offers ECDHE-ECDSA only
#   sock = ctx.wrap_socket(raw, server_hostname="myhub.azure-devices.net")
#   print(ctx.iothub_info)                        # what was configured (and negotiated)
#
# Facts behind the choices: docs/protocol.md section 1 (suites 1.2, roots 1.3,
# max fragment length 1.5); MicroPython's tls module: extmod/modtls_mbedtls.c.
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


_mfl_warned = False  # one warning per boot
_ctx_class = None  # (tls.SSLContext, our subclass), made on first use


def tls_context(
    profile,
    *,
    roots=None,
    max_fragment_length=None,
    require_mfl=False,
    cert=None,
    key=None,
    log=None,
):
    """A tls.SSLContext configured for an IoT Hub TLS profile ("rsa" or "ecc").

    roots: list of DER or PEM certificates replacing the profile's default root.
    cert, key: client certificate and private key (PEM or DER) for mutual TLS.
    max_fragment_length: 512, 1024, 2048 or 4096, requested when the firmware can.
    require_mfl: raise TLSError instead of warning when it cannot.
    log: fn(level, text) for that warning (the clients pass theirs); without one it is
    printed. The result has `iothub_info`, a dict describing the configuration."""
    ctx, info = configure(profile, roots, max_fragment_length, require_mfl, cert, key, log=log)
    ctx.iothub_info = info
    return ctx


def configure(
    profile,
    roots=None,
    max_fragment_length=None,
    require_mfl=False,
    cert=None,
    key=None,
    plain=False,
    log=None,
):
    """(context, info) as tls_context() makes them. plain=True: the firmware's own
    tls.SSLContext, which keeps no reference to this module (DeviceClient unloads it once
    its context is made; the link explains handshake failures itself)."""
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
        from .pem import client_credentials

        client = client_credentials(cert, key)

    tls = _tls_module()
    ctx = (tls.SSLContext if plain else _context_type(tls))(tls.PROTOCOL_TLS_CLIENT)
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
            text = (
                "warning: TLS max fragment length %d not requested (%s); the hub may send "
                "larger records" % (max_fragment_length, mfl["reason"])
            )
            if log is not None:
                log(1, text)
            else:
                print("iothub: " + text)
    return ctx, info


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
                raise _explain(e, server_hostname, getattr(self, "iothub_info", None))
            except ValueError as e:
                raise _explain(e, server_hostname, getattr(self, "iothub_info", None))
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


def handshake_error(e, hostname, info=None):
    """A TLSError saying in plain words why a handshake failed (see iothub.tlserrors)."""
    from .tlserrors import handshake_error as explain

    return explain(e, hostname, info)


_explain = handshake_error


# ---- roots --------------------------------------------------------------------------------


def _single_der(b):
    # SEQUENCE with a two-byte length spanning exactly the input: one DER certificate
    return (
        isinstance(b, (bytes, bytearray))
        and len(b) > 4
        and b[0] == 0x30
        and b[1] == 0x82
        and 4 + (b[2] << 8 | b[3]) == len(b)
    )


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
        if _single_der(r):
            # One DER certificate: the firmware checks it when it loads it; the PEM/ASN.1
            # helpers (7-14 KB of heap) are loaded only for PEM or unusual input.
            out.append(("custom", bytes(r)))
            continue
        from .pem import certs

        for der in certs(r, "roots[%d]" % i):
            out.append(("custom", der))
    if not out:
        raise ConfigError("roots= is empty: at least one root certificate is needed")
    return out


def _hex(b):
    return binascii.hexlify(b).decode().upper()


def _short(e):
    # firmware messages like "invalid key" never hold key material, but keep them short
    return str(e)[:60]
