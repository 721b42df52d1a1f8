# TLS profiles for Azure IoT Hub: one configured tls.SSLContext per call.
#
#   ctx = tls_context("ecc")                      # ECC hub: trusts G3, offers ECDHE-ECDSA only
#   sock = ctx.wrap_socket(raw, server_hostname="myhub.azure-devices.net")
#   print(ctx.iothub_info)                        # what was configured (and negotiated)
#
# The configuration itself (suites, roots, client certificate, max fragment length) is
# iothub.tlsconf's (with iothub.tlsdesc), which the clients load without this module.
# Facts behind the choices: docs/protocol.md section 1 (suites 1.2, roots 1.3, max
# fragment length 1.5); MicroPython's tls module: extmod/modtls_mbedtls.c.
#
# The context is the built-in tls.SSLContext (not micropython-lib's ssl wrapper, whose
# constructor turns verification off), subclassed only to hold `iothub_info` and to make
# wrap_socket() insist on server_hostname and explain handshake failures. Verification is
# always CERT_REQUIRED; nothing turns it off.
#
# Max fragment length (RFC 6066): stock MicroPython cannot request it. Firmware built with
# our C module `tlsx` can (tlsx.set_max_fragment_length). Without it the request is
# recorded as not made, with one warning per boot, or TLSError when require_mfl=True.

from .errors import ConfigError
from .tlsconf import configure
from .tlsdesc import SUITES  # noqa: F401 - part of this API

MFL_SIZES = (512, 1024, 2048, 4096)  # what max_fragment_length= takes (RFC 6066)

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


def handshake_error(e, hostname, info=None):
    """A TLSError saying in plain words why a handshake failed (see iothub.tlserrors)."""
    from .tlserrors import handshake_error as explain

    return explain(e, hostname, info)


_explain = handshake_error
