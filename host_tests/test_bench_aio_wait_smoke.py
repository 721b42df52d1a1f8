"""Smoke test of tools/bench/bench_aio_wait.py with a short idle: both modes connect, idle and
send on the unix port against the emulator. No timing or CPU assertion (a figure of the
bench, not a test)."""

import mpyrun


def test_bench_aio_wait_quick(tmp_path):
    text, res = mpyrun.run_bench(
        "bench_aio_wait.py", tmp_path, "--idle", "0.3", "--runs", "1", timeout=120
    )
    assert "added CPU ms per idle second" in text, text
    assert set(res) == {"raw", "tls"}
    for mode in ("raw", "tls"):
        assert res[mode]["base_s"] > 0 and res[mode]["idle_s"] > 0, res
