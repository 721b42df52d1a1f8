"""Smoke test of tools/bench/bench_client.py --quick: it runs end to end on the unix port
against the emulator and prints its four tables. No timing assertions; the structural facts
the bench reports (one TLS record per MQTT packet, umqtt.simple's five, AES-128-GCM's
29-byte record overhead) are checked from its JSON output."""

import mpyrun


def test_bench_client_quick(tmp_path):
    text, res = mpyrun.run_bench(
        "bench_client.py", tmp_path, "--quick", "--state", tmp_path / "state", timeout=120
    )
    for heading in (
        "1. One QoS 1 telemetry message",
        "2. GC heap retained",
        "3. Heap across 200 QoS 1 sends",
        "4. Smallest -X heapsize",
    ):
        assert heading in text, text

    for profile in ("ecc", "rsa"):
        ours, base = res["wire"][profile]["ours"], res["wire"][profile]["base"]
        assert "AES-128-GCM" in ours["cipher"], ours["cipher"]
        assert len(ours["records_in"]) == 1 and ours["writes"] == 1, ours
        assert len(base["records_in"]) == 5 and base["writes"] == 5, base
        assert ours["mqtt_out"] == base["mqtt_out"] and ours["mqtt_in"] == 4
        assert ours["overhead_in"] == 29 and base["overhead_in"] == 29
        assert ours["tls_in"] == base["tls_in"] - 4 * 29
        assert res["wire"][profile]["device"]["body_len"] == 64

    for kind in ("py", "mpy"):
        imp = res["imports"][kind]
        assert 0 < imp["package"] < imp["client"] < imp["connect"], imp
        sends = res["sends"][kind]
        assert len(sends["samples"]) == 11 and sends["queued"] == 0, sends
        assert res["min_heap"][kind]["min"] is not None, res["min_heap"][kind]
    assert res["imports"]["mpy"]["client_file"].endswith(".mpy")
