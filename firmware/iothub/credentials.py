# What DeviceClient and ProvisioningClient both hand to the link: the TLS context made from
# their settings, and the SAS token sent as the MQTT password. One place, so both clients
# make contexts and tokens the same way and tell their own contexts from an application's.
from .clock import require_valid_clock, unix_time


def own_context(profile, roots=None, mfl=None, cert=None, key=None, log=None):
    """A TLS context for a client's settings, marked as the SDK's own: a client may drop and
    rebuild it (new credentials, end of a one-off link). A context the application passed as
    ssl_context= is not marked, and the clients keep it."""
    from .tlsprofile import tls_context

    ctx = tls_context(profile, roots=roots, max_fragment_length=mfl, cert=cert, key=key, log=log)
    try:
        ctx._iothub_owned = True
    except AttributeError:  # a firmware whose context type takes no attributes
        pass
    return ctx


def is_own(ctx):
    """True for a context made by own_context()."""
    return getattr(ctx, "_iothub_owned", False) is True


def sas_password(resource_uri, key, ttl_s, key_name=None):
    """(token, issued, expiry): a SAS token for resource_uri valid ttl_s seconds from now
    (unix seconds). Raises ConfigError while the clock is clearly unset."""
    from .sas import sas_token

    now = require_valid_clock(unix_time())
    expiry = now + ttl_s
    return sas_token(resource_uri, key, expiry, key_name), now, expiry
