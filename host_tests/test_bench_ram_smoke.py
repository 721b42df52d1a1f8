"""Smoke test of tools/bench/bench_ram.py --quick: it runs end to end on the unix port against
the emulator and its JSON holds a number for every row, for iothub and the baseline, with the
package as .mpy and as .py. The issue's targets are figures the bench prints, not checked here;
only the structural facts of the wire (one TLS record per message for iothub, umqtt.simple's
five for the baseline) are."""

import numbers
import sys

import mpyrun

BENCH = mpyrun.ROOT / "tools" / "bench" / "bench_ram.py"
sys.path.insert(0, str(BENCH.parent))

from bench_ram import ROWS  # noqa: E402


def _number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def test_bench_ram_quick(tmp_path):
    text, res = mpyrun.run_bench(
        "bench_ram.py", tmp_path, "--quick", "--state", tmp_path / "state", timeout=240
    )
    assert "package as .mpy" in text and "package as .py" in text, text
    assert set(res["variants"]) == {"mpy", "py"}
    for variant, v in res["variants"].items():
        table = v["table"]
        for key, _label, target in ROWS:
            row = table[key]
            assert _number(row["iothub"]) and _number(row["umqtt_like"]), (variant, key, row)
            if row["umqtt_like"]:
                assert _number(row["ratio"]), (variant, key, row)
            assert (row["target"] is None) == (target is None), (variant, key, row)
        for key in ("heap_import", "heap_connect", "heap_handlers"):
            assert table[key]["iothub"] > 0 and table[key]["umqtt_like"] > 0, (variant, key)
        assert table["tls_records_out"]["iothub"] == 1, table["tls_records_out"]
        assert table["tls_records_out"]["umqtt_like"] == 5, table["tls_records_out"]
        mods = v["modules"]
        assert "client" in mods["order"] and all(_number(mods["heap"][m]) for m in mods["order"])
        assert v["results"]["iothub"]["file"].endswith("." + variant)
        assert v["results"]["umqtt_like"]["file"].endswith("." + variant)
