# Time at the edge: the only modules that read the clock are this one (ticks, for every
# wait and timeout) and iothub.walltime (Unix time for SAS tokens; iothub.ntp sets it).
#
# RAM: this module stays loaded while a client runs; the wall clock is read only when a
# connection needs a token, so unix_time, require_valid_clock, EPOCH_OFFSET and
# RELEASE_UNIX_TIME are found in iothub.walltime (module __getattr__ below), which the
# client unloads again after connect(), and sync_ntp in iothub.ntp.
import time

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
    if name == "sync_ntp":
        from .ntp import sync_ntp

        return sync_ntp
    from . import walltime

    if name == "EPOCH_OFFSET":  # derived once, then a plain global (a device may set it)
        v = walltime._epoch_offset()
        globals()[name] = v
        return v
    try:
        return getattr(walltime, name)
    except AttributeError:
        raise AttributeError(name)
