"""Smoke test of tools/bench/bench_pnp.py: it runs on the unix port (.py and .mpy) and prints its
two tables; the structural fact it checks (a client alone does not load iothub.pnp) holds."""

import mpyrun


def test_bench_pnp_quick(tmp_path):
    text, res = mpyrun.run_bench("bench_pnp.py", tmp_path, "--n", 5, timeout=120)
    assert "1. GC heap retained by imports" in text
    assert "2. Garbage per call" in text
    assert "a client alone loads iothub.pnp: no" in text
    for kind in ("py", "mpy"):
        assert res[kind]["pnp_import"] > 0 and res[kind]["client_import"] > res[kind]["pnp_import"]
        assert res[kind]["ack_bytes"] == len(
            b'{"thermostat1":{"__t":"c","targetTemperature":{"ac":200,"av":7,"value":23.5}}}'
        )
