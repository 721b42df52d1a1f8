# Backoff cases: run on CPython and on the unix port (coretest.py). Known answers from
# azure-sdk-for-c sdk/tests/iot/common/test_az_iot_common.c (az_iot_calculate_retry_delay).

from coretest import Rng, eq, has, raises

import iothub.backoff as b
from iothub.errors import ConfigError

INT32_MAX = 2147483647
INT16_MAX = 32767

# (operation_ms, attempt, min_ms, max_ms, jitter_ms, expected) - argument order of the C API
SDK_VECTORS = [
    (5, 1, 500, 100000, 1234, 2229),
    (5000, 1, 500, 100000, 4321, 321),
    (10000, 1, 500, 100000, 4321, 0),  # the operation took longer than the delay
    (5, 5, 500, 10000, 4321, 9995),  # capped at max: no jitter added
    (INT32_MAX - 1, INT16_MAX - 1, INT32_MAX - 1, INT32_MAX - 1, INT32_MAX - 1, 0),
    (0, INT16_MAX - 1, INT32_MAX - 1, INT32_MAX - 1, INT32_MAX - 1, INT32_MAX - 1),
]


def test_sdk_vectors():
    for op, attempt, lo, hi, jitter, want in SDK_VECTORS:
        got = b.retry_delay_ms(attempt, lo, hi, jitter, op)
        eq(got, want, "retry_delay_ms(%d, %d, %d, %d, %d)" % (attempt, lo, hi, jitter, op))


def test_default_schedule_without_jitter():
    # 1 s, 2 s, 4 s ... capped at 100 s (the recommended defaults).
    got = [b.retry_delay_ms(a) for a in range(10)]
    eq(got, [1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000, 100000, 100000])
    eq(b.retry_delay_ms(31), 100000)
    eq(b.retry_delay_ms(10**6), 100000, "huge attempt numbers stay at max")
    return got


def test_jitter_rule():
    # Jitter is added only if it keeps the delay strictly below max (max - delay > jitter).
    eq(b.retry_delay_ms(0, jitter_ms=5000), 6000)
    eq(b.retry_delay_ms(6, jitter_ms=5000), 69000)  # 64000 + 5000 < 100000
    eq(b.retry_delay_ms(6, jitter_ms=35999), 99999)
    eq(b.retry_delay_ms(6, jitter_ms=36000), 64000)  # 100000 - 64000 == 36000: not added
    eq(b.retry_delay_ms(7, jitter_ms=1), 100000)  # at max: no jitter
    eq(b.retry_delay_ms(2, operation_ms=1500), 2500)
    eq(b.retry_delay_ms(0, min_ms=0), 0)


def test_argument_errors():
    for args in ((-1,), (0, -5), (0, 1000, -1), (0, 1, 2, -1), (0, 1, 2, 3, -1), (1.5,), (True,)):
        has(raises(ConfigError, b.retry_delay_ms, *args), "non-negative int")
    has(raises(ConfigError, b.Backoff, 2000, 1000), "max_ms must be >= min_ms")
    bad = b.Backoff(rand=lambda n: n + 1)
    has(raises(ConfigError, bad.next_delay_ms), "rand(n)")


def test_backoff_with_injected_rand():
    draws = []

    def rand(n):
        draws.append(n)
        return 777

    bo = b.Backoff(rand=rand)
    eq(bo.attempt, 0)
    got = [bo.next_delay_ms() for _ in range(9)]
    eq(got, [1777, 2777, 4777, 8777, 16777, 32777, 64777, 100000, 100000])
    eq(bo.attempt, 9)
    eq(draws, [5000] * 9, "jitter drawn in [0, max_jitter_ms]")
    eq(bo.next_delay_ms(operation_ms=250000), 0)
    bo.reset()
    eq(bo.attempt, 0)
    eq(bo.next_delay_ms(operation_ms=300), 1477)
    eq(b.Backoff(max_jitter_ms=0, rand=rand).next_delay_ms(), 1000, "no draw without jitter")
    return got


def test_simulated_fleet_is_spread_by_jitter():
    # 200 devices with a deterministic rand: first retries spread over [1 s, 6 s].
    rng = Rng(5)
    firsts = [b.Backoff(rand=lambda n: rng.below(n + 1)).next_delay_ms() for _ in range(200)]
    eq(min(firsts) >= 1000 and max(firsts) <= 6000, True, "range")
    eq(len(set(firsts)) > 150, True, "spread")
    return firsts[:10]


def test_default_rand_is_in_range():
    # The runtime's own random source (not deterministic: nothing to compare).
    for n in (0, 1, 2, 7, 5000, 2**31, 2**40):
        for _ in range(50):
            r = b._default_rand(n)
            if not 0 <= r <= n:
                raise AssertionError("_default_rand(%d) gave %d" % (n, r))
    seen = set(b._default_rand(3) for _ in range(200))
    eq(seen, {0, 1, 2, 3}, "all values reachable")
    bo = b.Backoff()
    d = bo.next_delay_ms()
    eq(1000 <= d <= 6000, True, "first delay with the default jitter: %d" % d)
