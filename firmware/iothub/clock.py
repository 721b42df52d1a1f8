# Time at the edge: the only module that reads the clock (iothub.ntp sets it).
#
# Epochs differ by port: esp32 (and esp8266) count from 2000-01-01, rp2 and unix from
# 1970-01-01. A hard-coded offset gave Pico W tokens that expire in 2055 (docs/protocol.md 6.1), so
# the offset is derived from time.gmtime(0) instead.
import time

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


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


EPOCH_OFFSET = _epoch_offset()


def unix_time():
    """Seconds since 1970-01-01 UTC, whatever the port's epoch."""
    return int(time.time()) + EPOCH_OFFSET


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


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:  # CPython, for host-side use of the adapter

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b


def sleep_ms(t):
    if t > 0:
        if hasattr(time, "sleep_ms"):
            time.sleep_ms(t)
        else:
            time.sleep(t / 1000)


def __getattr__(name):
    # sync_ntp lives in iothub.ntp (loaded when a device asks for it).
    if name == "sync_ntp":
        from .ntp import sync_ntp

        return sync_ntp
    raise AttributeError(name)
