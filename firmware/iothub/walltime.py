# The wall clock: Unix time (for SAS token expiries) and whether it is clearly unset. Read
# through iothub.clock (its __getattr__), loaded only while a connection is made (the
# client unloads it after connect()) or the device sets its clock (iothub.ntp).
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
