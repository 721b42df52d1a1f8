# Reconnect delays: exponential backoff with jitter, as azure-sdk-for-c computes them
# (az_iot_calculate_retry_delay in sdk/src/azure/iot/az_iot_common.c, with
# _az_retry_calc_delay in az_retry_internal.h; sdk/docs/iot/mqtt_state_machine.md):
#   delay = min(min_ms * 2**attempt, max_ms)       (attempt > 30: max_ms)
#   if max_ms - delay > jitter_ms: delay += jitter_ms   (so no jitter once capped at max)
#   delay = max(delay - operation_ms, 0)
# Recommended defaults there: 1 s minimum, 100 s maximum, jitter drawn in [0, 5 s].
# Pure: the caller owns the clock; the random source is injectable.

from .errors import ConfigError


def _nonneg(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError("%s must be a non-negative int" % what)


def retry_delay_ms(attempt, min_ms=1000, max_ms=100000, jitter_ms=0, operation_ms=0):
    """Milliseconds to wait before retry number `attempt` (0 for the first retry)."""
    _nonneg(attempt, "attempt")
    _nonneg(min_ms, "min_ms")
    _nonneg(max_ms, "max_ms")
    _nonneg(jitter_ms, "jitter_ms")
    _nonneg(operation_ms, "operation_ms")
    if attempt > 30:
        delay = max_ms
    else:
        delay = min_ms << attempt
        if delay > max_ms:
            delay = max_ms
    if max_ms - delay > jitter_ms:
        delay += jitter_ms
    delay -= operation_ms
    return delay if delay > 0 else 0


def _default_rand(n):
    # Uniform integer in [0, n] from getrandbits (present on MicroPython and CPython),
    # by rejection so there is no modulo bias. Imported lazily: the module stays pure.
    if n <= 0:
        return 0
    import random

    bits = 0
    while (1 << bits) <= n:
        bits += 1
    while True:
        r = 0
        got = 0
        while got < bits:  # MicroPython's getrandbits takes at most 32 bits
            k = bits - got if bits - got < 32 else 32
            r = (r << k) | random.getrandbits(k)
            got += k
        if r <= n:
            return r


class Backoff:
    """Stateful helper around retry_delay_ms: each next_delay_ms() draws a fresh jitter in
    [0, max_jitter_ms] and counts the attempt; reset() after a successful connection.

    rand: callable(n) -> int in [0, n]; inject a deterministic one in tests or simulations."""

    def __init__(self, min_ms=1000, max_ms=100000, max_jitter_ms=5000, rand=None):
        _nonneg(min_ms, "min_ms")
        _nonneg(max_ms, "max_ms")
        _nonneg(max_jitter_ms, "max_jitter_ms")
        if max_ms < min_ms:
            raise ConfigError("max_ms must be >= min_ms")
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.max_jitter_ms = max_jitter_ms
        self.rand = rand if rand is not None else _default_rand
        self.attempt = 0

    def next_delay_ms(self, operation_ms=0):
        """Delay before the next attempt; operation_ms = how long the failed attempt took."""
        jitter = self.rand(self.max_jitter_ms) if self.max_jitter_ms else 0
        if not isinstance(jitter, int) or not 0 <= jitter <= self.max_jitter_ms:
            raise ConfigError("rand(n) must return an int in [0, n]")
        d = retry_delay_ms(self.attempt, self.min_ms, self.max_ms, jitter, operation_ms)
        self.attempt += 1
        return d

    def reset(self):
        self.attempt = 0
