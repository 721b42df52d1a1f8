"""Smoke test of tools/bench/bench_lifecycle.py --quick: it runs end to end on the unix port
against the emulator (one run of two faults per client, and a 200-message soak) and builds the
README block from what it measured. No timing assertions; the facts checked are structural:
every client recovered from the reset (the bench itself stops when a message is lost), the
throttled client did not reconnect, and the soak took heap samples."""

import sys

import mpyrun

sys.path.insert(0, str(mpyrun.ROOT / "tools" / "bench"))
import bench_lifecycle  # noqa: E402


def test_bench_lifecycle_quick(tmp_path):
    text, res = mpyrun.run_bench(
        "bench_lifecycle.py", tmp_path, "--quick", "--state", tmp_path / "state", timeout=240
    )
    assert "1. Time to recover" in text and "2. Soak" in text, text
    assert list(res["faults"]) == list(bench_lifecycle.QUICK)
    for kind in ("blocking", "aio"):
        (reset,) = res["faults"]["connection-reset"][kind]
        assert reset["recovery_s"] > 0 and reset["attempts"][-1] == 0, reset
        assert reset["lost"] == 0 and reset["sent"] > 0, reset
        (throttled,) = res["faults"]["throttling"][kind]
        assert throttled["recovery_s"] is None and throttled["reconnects"] == 0, throttled
        soak = res["soak"][kind]
        assert soak["lost"] == 0 and soak["reconnects"] >= 2, soak
        assert len(soak["facts"]["heap"]) >= 3 and soak["steady"], soak
    block = bench_lifecycle.markdown(res)
    assert "| connection reset |" in block and "StatusError(429" in block, block
    assert "Soak, shortened for the bench: 200 messages" in block, block
