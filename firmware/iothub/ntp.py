# Setting the board clock over NTP (iothub.clock.sync_ntp): loaded only by a device that
# calls it; the unix port has no ntptime (its clock is the host's).
from .clock import sleep_ms
from .errors import ConfigError
from .walltime import require_valid_clock


def sync_ntp(host="pool.ntp.org", attempts=5, timeout_s=5, delay_ms=2000):
    """Set the board clock with ntptime, with retries and a per-attempt timeout.

    Returns the unix time afterwards. Raises ConfigError if ntptime is missing (the unix
    port: its clock is the host's) and OSError after the last failed attempt.
    """
    try:
        import ntptime
    except ImportError:
        raise ConfigError("ntptime is not available on this port; set the clock another way")
    ntptime.host = host
    if hasattr(ntptime, "timeout"):
        ntptime.timeout = timeout_s
    err = None
    for _ in range(attempts):
        try:
            ntptime.settime()
            return require_valid_clock()
        except (OSError, OverflowError, IndexError) as e:
            err = e
            sleep_ms(delay_ms)
    raise OSError("time sync failed after %d attempts: %r" % (attempts, err))
