# Time at the edge: the only modules that read the clock are this one (ticks, for every
# wait and timeout) and iothub.ntp (the wall clock: Unix time for SAS tokens, and setting it).
#
# RAM: this module stays loaded while a client runs; the wall clock is read only when a
# connection needs a token, so unix_time, require_valid_clock, EPOCH_OFFSET,
# RELEASE_UNIX_TIME and sync_ntp are found in iothub.ntp (module __getattr__ below), which
# the client unloads again after connect().
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
    from . import ntp

    if name == "EPOCH_OFFSET":  # derived once, then a plain global (a device may set it)
        v = ntp._epoch_offset()
        globals()[name] = v
        return v
    try:
        return getattr(ntp, name)
    except AttributeError:
        raise AttributeError(name)
