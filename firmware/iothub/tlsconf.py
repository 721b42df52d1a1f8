# The TLS configuration core: one configured tls.SSLContext and a record of what it was
# configured with. What DeviceClient and the provisioning client load to build their
# context (and drop afterwards); iothub.tlsprofile adds the public tls_context(), TLSInfo
# and the context type that explains handshake failures. The suites, the root list and the
# record are iothub.tlsdesc's (a client's tls_info() loads that one alone); the texts of
# what can go wrong are iothub.tlstexts', loaded only for a message.
#
# Facts behind the choices: docs/protocol.md section 1 (suites 1.2, roots 1.3,
# max fragment length 1.5); MicroPython's tls module: extmod/modtls_mbedtls.c.
#
# Max fragment length (RFC 6066): stock MicroPython cannot request it. Firmware built with
# our C module `tlsx` can (tlsx.set_max_fragment_length). Without it the request is
# recorded as not made, with one warning per boot, or TLSError when require_mfl=True.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import TLSError, explained, unload

_MFL_SIZES = const((512, 1024, 2048, 4096))  # tlsprofile.MFL_SIZES

# Texts of iothub.tlstexts, loaded only when one is needed (errors.explained).
_E_PROFILE = const(1)
_E_MFL_SIZE = const(2)
_E_MFL_NEEDED = const(3)
_E_PAIR = const(4)
_E_ROOT = const(5)
_E_CERT = const(6)
# 7, 8: tlsdesc's (roots=)
_E_NO_TLS = const(9)
_E_NO_CONTEXT = const(10)
_E_NO_CIPHERS = const(11)
_E_NO_SUITE = const(12)
_E_SUITES = const(13)
_E_MFL = const(14)
_T_WARNING = const(15)
_T_NO_TLSX = const(16)
_T_TLSX = const(17)
_T_TLSX_DEFAULT = const(18)
_T_PRINTED = const(19)


def error(code, args=()):
    """The ConfigError or TLSError of a code, its text loaded for the message."""
    return explained("tlstexts", "error", code, args)


def text(code, args):
    return explained("tlstexts", "text", code, args)


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
    ctx=None,
):
    """(context, info) as tls_context() makes them. plain=True: the firmware's own
    tls.SSLContext, which keeps no reference to this module (DeviceClient unloads it once
    its context is made; the link explains handshake failures itself), and a minimal info
    dict (profile, root names, mfl; the offered suites as a bit mask of the profile's when
    not all are) that tlsdesc.describe() completes. ctx: a new tls.SSLContext the caller
    made (DeviceClient makes it before this module loads), configured here."""
    global _mfl_warned
    # The context first, before the rest of the configuration code and the roots load: it
    # is the largest block a client keeps (3 KB on a 64-bit port; on a Pico W-like build
    # mbedTLS's own allocations too), and lands lower in the heap than it would on top
    # of them, which leave a hole when they go. The firmware's errors still come after
    # those of bad settings (below).
    try:
        import tls
    except Exception:  # ImportError; on CPython a script named tls.py may shadow it
        tls = None
    if ctx is None and hasattr(tls, "SSLContext"):
        if plain:
            ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
        else:
            from .tlsprofile import _context_type

            ctx = _context_type(tls)(tls.PROTOCOL_TLS_CLIENT)
    if ctx is not None:
        ctx.verify_mode = tls.CERT_REQUIRED
    from . import tlsdesc

    suites = tlsdesc.SUITES.get(profile) if isinstance(profile, str) else None
    if suites is None:
        raise error(_E_PROFILE, (profile,))
    if max_fragment_length is not None and max_fragment_length not in _MFL_SIZES:
        raise error(_E_MFL_SIZE, (max_fragment_length,))
    if require_mfl and max_fragment_length is None:
        raise error(_E_MFL_NEEDED)
    if (cert is None) != (key is None):
        raise error(_E_PAIR, ("cert" if key is None else "key",))

    # Parse everything before configuring the context (and before the firmware's own
    # errors), so bad input fails the same everywhere.
    roots = tlsdesc.roots(profile, roots)
    client = None
    if cert is not None:
        from .pem import client_credentials

        client = client_credentials(cert, key)

    if tls is None:
        raise error(_E_NO_TLS)
    if ctx is None:
        raise error(_E_NO_CONTEXT)
    if not hasattr(ctx, "set_ciphers") or not hasattr(ctx, "get_ciphers"):
        raise error(_E_NO_CIPHERS)
    have = ctx.get_ciphers()  # every suite the firmware has: 2 KB on the unix port
    offered = []
    mask = 0  # which of the profile's suites are offered (the minimal record keeps it)
    for i, s in enumerate(suites):
        if s in have:
            offered.append(s)
            mask |= 1 << i
    have = None
    if not offered:
        raise error(_E_NO_SUITE, (profile, ", ".join(suites)))
    try:
        ctx.set_ciphers(offered)
    except (OSError, ValueError) as e:
        raise error(_E_SUITES, (profile, e))
    for i, r in enumerate(roots):
        try:
            ctx.load_verify_locations(r[1])
        except (ValueError, OSError) as e:
            raise error(_E_ROOT, (i, e))
    if client is not None:
        try:
            ctx.load_cert_chain(client[0], client[1])
        except (ValueError, OSError) as e:
            raise error(_E_CERT, (e,))  # the firmware's text, cut short
    mfl = _request_mfl(ctx, max_fragment_length)
    if plain:
        # What a client keeps (handshake errors name the profile and the roots): the full
        # record is rebuilt by tlsdesc.describe() when the application asks for it.
        info = {"profile": profile, "roots": [{"name": r[0]} for r in roots], "mfl": mfl}
        if mask != (1 << len(suites)) - 1:
            info["suites"] = mask  # not all of them (an unusual firmware)
    else:
        info = tlsdesc.full(profile, offered, roots, client, mfl)
    if max_fragment_length is not None and (
        not mfl["requested"] or mfl["size"] != max_fragment_length
    ):
        if require_mfl:
            raise error(_E_MFL, (max_fragment_length, mfl["reason"]))
        if not _mfl_warned:
            _mfl_warned = True
            warning = text(_T_WARNING, (max_fragment_length, mfl["reason"]))
            if log is not None:
                log(1, warning)
            else:
                print(text(_T_PRINTED, (warning,)))
    return ctx, info


def client_context(c, quiet=False, ctx=None):
    """A DeviceClient's own context (c._ctx, c._tlsinfo) from its settings (ctx: the bare
    tls.SSLContext construction made first of the client's long-lived objects), then this
    module goes. At construction (quiet=True) a firmware without `tls` (a host-side
    hand-over of DPS results) leaves it to connect(). Bad roots, certificates or keys fail
    here."""
    import gc

    gc.collect()  # the garbage of parsing the options and building the buffers
    try:
        c._ctx, c._tlsinfo = configure(
            c._tls_profile, c._roots, c._mfl, False, c._cert, c._pkey, True, c._log, ctx
        )
    except TLSError:
        if not quiet:
            raise
    finally:
        unload("tlsconf", "tlsdesc", "roots", "pem")


# ---- firmware ---------------------------------------------------------------------------


def _request_mfl(ctx, size):
    """Request `size` through tlsx when the firmware has it. Returns the `mfl` info dict:
    requested (an MFL goes out in the ClientHello), size (that one, or the one asked for
    when none goes out) and reason."""
    setter = getter = None
    try:
        import tlsx

        # (asked only when there is a tlsx: getattr interns the names for good)
        setter = getattr(tlsx, "set_max_fragment_length", None)
        getter = getattr(tlsx, "get_max_fragment_length", None)
    except ImportError:
        pass

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
        return {"requested": False, "size": size, "reason": text(_T_NO_TLSX, ())}
    try:
        setter(ctx, size)
    except (OSError, ValueError, RuntimeError, TypeError, NotImplementedError) as e:
        if n:
            return {"requested": True, "size": n, "reason": text(_T_TLSX_DEFAULT, (e,))}
        return {"requested": False, "size": size, "reason": text(_T_TLSX, (e,))}
    return {"requested": True, "size": size, "reason": "requested through tlsx"}
