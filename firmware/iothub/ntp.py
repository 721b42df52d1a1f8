# The wall clock: Unix time (for SAS token expiries), whether it is clearly unset, and
# setting it over NTP (sync_ntp). Read through iothub.clock (its __getattr__), loaded only
# while a connection is made or the device sets its clock; the unix port has no ntptime
# (its clock is the host's).
#
# Epochs differ by port: esp32 (and esp8266) count from 2000-01-01, rp2 and unix from
# 1970-01-01. A hard-coded offset gave Pico W tokens that expire in 2055 (docs/protocol.md
# 6.1), so the offset is derived from time.gmtime(0) instead (clock.EPOCH_OFFSET, kept in
# iothub.clock so that it survives this module being unloaded).
import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from . import clock
from .errors import ConfigError

_EPOCH_2000 = const(946684800)  # seconds from 1970-01-01 to 2000-01-01
# A clock before this is "clearly unset" (boards boot at their epoch start). Update each release.
RELEASE_UNIX_TIME = const(1790000000)  # 2026-09-21


def _epoch_offset():
    try:
        year = time.gmtime(0)[0]
    except (AttributeError, OverflowError, OSError):
        year = 1970
    if year == 2000:
        return _EPOCH_2000
    return 0


def unix_time():
    """Seconds since 1970-01-01 UTC, whatever the port's epoch."""
    return int(time.time()) + clock.EPOCH_OFFSET


def require_valid_clock(now=None):
    """Raise ConfigError when the clock is clearly unset (SAS tokens would be wrong)."""
    if now is None:
        now = unix_time()
    if now < RELEASE_UNIX_TIME:
        raise ConfigError(
            "the clock is not set (unix time %d is before this release): sync it "
            "(e.g. iothub.clock.sync_ntp()) before using SAS authentication" % now
        )
    return now


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
            clock.sleep_ms(delay_ms)
    raise OSError("time sync failed after %d attempts: %r" % (attempts, err))
