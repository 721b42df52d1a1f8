# The TLS configuration core: one configured tls.SSLContext and a record of what it was
# configured with. What DeviceClient and the provisioning client load to build their
# context (and drop afterwards); iothub.tlsprofile adds the public tls_context(), TLSInfo
# and the context type that explains handshake failures.
#
# Facts behind the choices: docs/protocol.md section 1 (suites 1.2, roots 1.3,
# max fragment length 1.5); MicroPython's tls module: extmod/modtls_mbedtls.c.
#
# Max fragment length (RFC 6066): stock MicroPython cannot request it. Firmware built with
# our C module `tlsx` can (tlsx.set_max_fragment_length). Without it the request is
# recorded as not made, with one warning per boot, or TLSError when require_mfl=True.

import binascii
import hashlib

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


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
_MFL_SIZES = const((512, 1024, 2048, 4096))  # tlsprofile.MFL_SIZES


_mfl_warned = False  # one warning per boot


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
    its context is made; the link explains handshake failures itself), and a minimal info
    dict (profile, root names, mfl) that describe() completes."""
    global _mfl_warned
    suites = SUITES.get(profile) if isinstance(profile, str) else None
    if suites is None:
        raise ConfigError(
            "unknown TLS profile %r: expected 'rsa' (RSA hub) or 'ecc' (ECC hub)" % (profile,)
        )
    if max_fragment_length is not None and max_fragment_length not in _MFL_SIZES:
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

    if plain:
        ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    else:
        from .tlsprofile import _context_type

        ctx = _context_type(tls)(tls.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = tls.CERT_REQUIRED
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
    for i, r in enumerate(root_list):
        try:
            ctx.load_verify_locations(r[1])
        except (ValueError, OSError) as e:
            raise ConfigError("roots[%d]: the firmware rejected the certificate (%s)" % (i, e))
    if client is not None:
        try:
            ctx.load_cert_chain(client[0], client[1])
        except (ValueError, OSError) as e:
            # firmware messages like "invalid key" never hold key material; kept short anyway
            raise ConfigError(
                "client certificate or key rejected by the firmware: %s" % str(e)[:60]
            )
    mfl = _request_mfl(ctx, max_fragment_length)
    if plain:
        # What a client keeps (handshake errors name the profile and the roots): the full
        # record is rebuilt by describe() when the application asks for it.
        info = {"profile": profile, "roots": [{"name": r[0]} for r in root_list], "mfl": mfl}
    else:
        info = _full(profile, offered, root_list, client, mfl)
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


def client_context(c, quiet=False):
    """A DeviceClient's own context (c._ctx, c._tlsinfo) from its settings, then this
    module goes. At construction (quiet=True: ClientBase.__init__, right after the client's
    large buffers, while the heap is still nearly empty: the context is long-lived and
    better low in the heap; on a Pico W-like heap this decides whether the first handshake
    finds its 6 KB block at 64 KiB) a firmware without `tls` (a host-side hand-over of DPS
    results) leaves it to connect(). Bad roots, certificates or keys fail here."""
    import gc

    gc.collect()  # the garbage of parsing the options and building the buffers
    try:
        c._ctx, c._tlsinfo = configure(
            c._tls_profile, c._roots, c._mfl, False, c._cert, c._pkey, True, c._log
        )
    except TLSError:
        if not quiet:
            raise
    finally:
        from .errors import unload

        unload("tlsconf", "roots", "pem")


def _full(profile, suites, roots, client, mfl):
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


def describe(ctx, info, roots=None, cert=None, key=None):
    """The full info dict of a context configure(..., plain=True) made, from that minimal
    one and the settings it was made from (roots are hashed, the certificate parsed again).
    Drops this module and the ones it loaded afterwards: it runs once, on request."""
    profile = info["profile"]
    have = ctx.get_ciphers()
    client = None
    if cert is not None:
        from .pem import client_credentials

        client = client_credentials(cert, key)
    full = _full(
        profile,
        [s for s in SUITES[profile] if s in have],
        _roots(profile, roots),
        client,
        info["mfl"],
    )
    from .errors import unload

    unload("tlsconf", "pem", "roots")
    return full


# ---- firmware ---------------------------------------------------------------------------


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

    # What the context requests before we ask (our firmware may request a board default);
    # a refused request leaves it so.
    n = 0
    try:
        if getter is not None:
            n = getter(ctx)
    except Exception:
        pass
    if size is None:
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
        if n:
            return {
                "requested": True,
                "size": n,
                "reason": why + "; the board default is requested",
            }
        return {"requested": False, "size": size, "reason": why}
    return {"requested": True, "size": size, "reason": "requested through tlsx"}


# ---- roots --------------------------------------------------------------------------------


def _roots(profile, roots):
    if roots is None:
        from .roots import ROOT_G2, ROOT_G3

        if profile == "rsa":
            return [("DigiCert Global Root G2", ROOT_G2)]
        return [("DigiCert Global Root G3", ROOT_G3)]
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
        raise ConfigError("roots= is empty: at least one root certificate is needed")
    return out


def _hex(b):
    return binascii.hexlify(b).decode().upper()
