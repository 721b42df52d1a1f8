# What a client is rarely asked for: new credentials, the TLS details, the Plug and Play
# twin calls of the blocking client, and disconnect() (get_twin and update_reported go to
# iothub.twin directly). Loaded for each such call (ClientBase's __getattr__ finds these
# names here) and dropped when it returns; a telemetry-only device that only
# connects, sends and polls never loads it. Each resident method costs a function object,
# its bytecode and an interned name in RAM for good (~200 B each on a 64-bit port), which
# the one __getattr__ replaces.
#
# The functions take the client as their first argument; get() hands them out bound to it.
# The asyncio client has its own coroutines (disconnect, twin calls) and update_credentials,
# found before __getattr__ is asked, so only tls_info reaches this module from it. The
# texts of bad arguments and the reports of dropped messages are in iothub.reports.

from .errors import unload


def get(c, name):
    """c.<name> for a name the client class does not hold (the queue counters are
    answered by ClientBase.__getattr__ itself): a function of this module bound to c.
    The module goes again when the call returns (rare calls: each loads it anew)."""
    if name not in _API:
        unload("clientrare")
        raise AttributeError(name)
    fn = globals()[name]

    def bound(*args, **kw):
        try:
            return fn(c, *args, **kw)
        finally:
            unload("clientrare")

    return bound


def update_credentials(c, *, connection_string=None, shared_access_key=None, cert=None, key=None):
    """Replace the credentials of a live client; it reconnects with them."""
    from .clientinit import update_credentials

    update_credentials(c, connection_string, shared_access_key, cert, key)


def tls_info(c):
    """Negotiated suite and version, and what the context was configured with."""
    link = c._s.link
    cipher = None
    if link._hs is None:  # the handshake is done (or no link): its TLS socket can tell
        try:
            cipher = link.sock.cipher()
        except (AttributeError, OSError):  # not connected, or a port that cannot tell
            pass
    conf = c._tlsinfo
    if conf is not None and "verify" not in conf:
        # The client keeps a minimal record of its own context: the rest is rebuilt by
        # tlsdesc, loaded for this call (not tlsconf, the configuration code) after a
        # collection, into the lowest holes rather than after the garbage of the calls before.
        import gc

        from .errors import explained

        gc.collect()
        conf = explained("tlsdesc", "describe", conf, c._roots, c._cert, c._pkey)
    return {"cipher": cipher, "configured": conf}


# ---- blocking client only ---------------------------------------------------------------


def disconnect(c):
    """Send DISCONNECT and close. Queued messages stay queued."""
    c._s.close(clean=True)
    import gc

    gc.collect()  # the closed link's objects are freed before transitions loads
    import sys

    from .transitions import close

    close(c._lc)
    close = None
    if "iothub.clientx" not in sys.modules and "iothub.clientrun" not in sys.modules:
        # (an outage's retries hold it: it stays)
        unload("transitions")
    c._notify("disconnected", "closed by the application")


close = disconnect


# Plug and Play: thin entries into iothub/pnp.py (loaded on first use).


def report_properties(c, properties, component=None, timeout_ms=None):
    """Report properties (a dict; of a component: wrapped with "__t":"c"), or send a
    pnp.Patch with several properties, components and acks. Returns the new version."""
    from .inbound import twin_of
    from .pnp import report_properties

    return report_properties(twin_of(c), properties, component, timeout_ms)


def ack_writable(
    c, name, value, version, status=200, description=None, component=None, timeout_ms=None
):
    """Acknowledge a writable property ({"ac", "av", "ad", "value"}) at the desired
    version it answers. Returns the new reported version."""
    from .inbound import twin_of
    from .pnp import Patch, report_properties

    patch = Patch().ack(name, value, version, status, description, component)
    return report_properties(twin_of(c), patch, None, timeout_ms)


# The names get() hands out (the rest of this module is not the client's API).
_API = (
    "update_credentials",
    "tls_info",
    "disconnect",
    "close",
    "report_properties",
    "ack_writable",
)
