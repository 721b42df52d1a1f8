"""Smoke test of tools/bench/bench_pnp.py: it runs on the unix port (.py and .mpy) and prints its
two tables; the structural fact it checks (a client alone does not load iothub.pnp) holds."""

import json
import subprocess
import sys

import mpyrun

BENCH = mpyrun.ROOT / "tools" / "bench" / "bench_pnp.py"


def test_bench_pnp_quick(tmp_path):
    out_json = tmp_path / "res.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--n",
            "5",
            "--mp",
            mpyrun.micropython_binary(),
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(mpyrun.ROOT),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1. GC heap retained by imports" in proc.stdout
    assert "2. Garbage per call" in proc.stdout
    assert "a client alone loads iothub.pnp: no" in proc.stdout
    res = json.loads(out_json.read_text())
    for kind in ("py", "mpy"):
        assert res[kind]["pnp_import"] > 0 and res[kind]["client_import"] > res[kind]["pnp_import"]
        assert res[kind]["ack_bytes"] == len(
            b'{"thermostat1":{"__t":"c","targetTemperature":{"ac":200,"av":7,"value":23.5}}}'
        )
