# What DeviceClient and ProvisioningClient both hand to the link: the SAS token sent as the
# MQTT password (one place, so both clients make tokens the same way). The provisioning
# client's own TLS contexts are made by iothub.provisioning.own_context.


def sas_password(resource_uri, key, ttl_s, key_name=None):
    """(token, issued, expiry): a SAS token for resource_uri valid ttl_s seconds from now
    (unix seconds). Raises ConfigError while the clock is clearly unset."""
    # Imported here, not at the top: the wall clock (iothub.walltime) is not loaded until a
    # token is made.
    from .clock import require_valid_clock, unix_time
    from .sas import sas_token

    now = require_valid_clock(unix_time())
    expiry = now + ttl_s
    return sas_token(resource_uri, key, expiry, key_name), now, expiry
