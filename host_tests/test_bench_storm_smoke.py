"""Smoke test of the reconnect-storm benchmark (tools/bench/bench_reconnect_storm.py).

Not a timing test: it checks that the bench runs with a small fleet and prints its tables and
plot, that it drives the device's own backoff core, and properties of the simulation on a fixed
seed (jitter flattens the storm; the hub's admission limit holds)."""

import subprocess
import sys

import pytest
from bench import bench_reconnect_storm as storm

from iothub.backoff import Backoff, retry_delay_ms

OUTAGE_MS = 120000


def by_key(key):
    return {s.key: s for s in storm.strategies()}[key]


def test_bench_runs_and_prints_its_tables(tmp_path):
    png = tmp_path / "storm.png"
    out = subprocess.run(
        [
            sys.executable,
            str(storm.HERE / "bench_reconnect_storm.py"),
            "-n",
            "40",
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "attempts in outage" in text and "t100 s" in text and "Backoff.attempt k" in text
    for s in storm.strategies():
        # once in the open-hub table, once in the admission-limited one
        assert text.count("| " + s.label) == 2, s.label
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_it_drives_the_device_core():
    rand_calls = []

    def rand(n):
        rand_calls.append(n)
        return 0

    policy = by_key("jitter").make(rand)
    assert isinstance(policy, Backoff)
    policy.next_delay_ms()
    assert rand_calls == [5000]  # the injected random source is the one Backoff draws from
    # Without jitter, every device tries at the core's cumulative delays: 1, 3, 7, ... 127 s.
    res = storm.simulate(by_key("nojitter"), 3, OUTAGE_MS, seed=5)
    want, t = [], 0
    for k in range(7):
        t += retry_delay_ms(k)
        want.append(t)
    assert res["attempts"] == [want] * 3
    assert res["connected"] == [127000] * 3


def test_jitter_stops_at_the_cap():
    # Faithful to azure-sdk-for-c: from Backoff.attempt 7 (delay capped at 100 s) no jitter.
    res = storm.simulate(by_key("jitter"), 30, 600000, seed=11)
    for ts in res["attempts"]:
        gaps = [ts[0]] + [b - a for a, b in zip(ts, ts[1:], strict=False)]
        for k, g in enumerate(gaps[:7]):
            assert (1000 << k) <= g <= (1000 << k) + 5000
        assert gaps[7:] and all(g == 100000 for g in gaps[7:])
    rows = storm.cap_rows(by_key("jitter"), 30, 600000, 11, 5000)
    sd = [r["sd"] for r in rows]
    assert sd[4] < sd[5] < sd[6]  # the spread grows while jitter is drawn
    assert sd[6] == pytest.approx(sd[7], abs=1e-9) == pytest.approx(sd[9], abs=1e-9)  # then freezes


def test_jitter_flattens_the_storm_on_a_fixed_seed():
    n = 200
    jit = storm.simulate(by_key("jitter"), n, OUTAGE_MS, seed=3)
    flat = storm.simulate(by_key("nojitter"), n, OUTAGE_MS, seed=3)
    sj, sf = storm.summarize(jit, OUTAGE_MS), storm.summarize(flat, OUTAGE_MS)
    assert sj["attempts_outage"] == sf["attempts_outage"]  # same number of tries, spread out
    assert sf["peak_outage"] == sf["peak_after"] == n  # everyone in the same second
    assert sj["peak_outage"] < n / 2 and sj["peak_after"] < n / 4
    busy_j = sum(1 for c in storm.per_second(jit, OUTAGE_MS, 200000)[0] if c)
    busy_f = sum(1 for c in storm.per_second(flat, OUTAGE_MS, 200000)[0] if c)
    assert busy_j > 5 * busy_f
    assert sj["sd"] > 1.0 and sf["sd"] == 0.0


def test_hub_admission_limit_holds():
    admit = 10
    res = storm.simulate(by_key("fixed2"), 50, OUTAGE_MS, admit_per_s=admit, seed=1)
    per_sec = {}
    for t in res["connected"]:
        per_sec[t // 1000] = per_sec.get(t // 1000, 0) + 1
    assert max(per_sec.values()) <= admit
    assert res["refused"] > 0 and None not in res["connected"]
    s = storm.summarize(res, OUTAGE_MS)
    assert s["t100"] == 8.0  # 50 devices, 10 per 2 s wave: waves at 120, 122, ... 128 s
