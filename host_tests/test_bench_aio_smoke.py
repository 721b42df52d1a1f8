"""Smoke test of tools/bench/bench_aio.py --quick: it runs end to end on the unix port against
the emulator (both TLS profiles) and prints its three tables. No timing assertions; the facts
checked are structural: every phase was measured, every message was acknowledged (the bench
itself fails when the hub recorded fewer), and the heap figures are positive."""

import mpyrun


def test_bench_aio_quick(tmp_path):
    text, res = mpyrun.run_bench(
        "bench_aio.py", tmp_path, "--quick", "--state", tmp_path / "state", timeout=240
    )
    for heading in ("1. Loop stall", "2. Throughput", "3. GC heap"):
        assert heading in text, text
    for profile in ("ecc", "rsa"):
        phases = res["stall"][profile]["phases"]
        assert set(phases) == {"idle", "connect", "sends", "twin", "reconnect"}, phases
        assert phases["idle"]["ticks"] >= 1, phases
        assert res["stall"][profile]["stats"]["reconnects"] >= 1
    for kind in ("blocking", "aio"):
        tp = res["throughput"][kind]
        assert set(tp["runs"]) == {"1", "8"} and tp["queued"] == 0, tp
        assert all(r > 0 for runs in tp["runs"].values() for r in runs), tp
        assert set(tp["cpu_us"]) == {"1", "8"} and all(v > 0 for v in tp["cpu_us"].values()), tp
        heap = res["heap"][kind]
        assert 0 < heap["heap_import"] < heap["heap_connect"], heap
    assert res["heap"]["aio"]["heap_asyncio"] > 0
