# What DeviceClient and ProvisioningClient both hand to the link: the SAS token sent as the
# MQTT password (one place, so both clients make tokens the same way), and unload() for the
# modules a client needs only to build something. The provisioning client's own TLS
# contexts are made by iothub.provisioning.own_context.
import sys


def sas_password(resource_uri, key, ttl_s, key_name=None):
    """(token, issued, expiry): a SAS token for resource_uri valid ttl_s seconds from now
    (unix seconds). Raises ConfigError while the clock is clearly unset."""
    # Imported here, not at the top: construction loads this module for unload() alone,
    # and the wall clock (iothub.walltime) is then not loaded until a token is made.
    from .clock import require_valid_clock, unix_time
    from .sas import sas_token

    now = require_valid_clock(unix_time())
    expiry = now + ttl_s
    return sas_token(resource_uri, key, expiry, key_name), now, expiry


def unload(*names):
    # Drop package modules needed only to build something (what was built keeps no
    # reference to them): their bytecode is freed at the next collection.
    pkg = sys.modules.get("iothub")
    for n in names:
        if sys.modules.pop("iothub." + n, None) is not None and pkg is not None:
            try:
                delattr(pkg, n)
            except AttributeError:
                pass
