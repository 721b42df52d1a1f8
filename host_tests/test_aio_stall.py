"""The asyncio client shares the loop: a coroutine ticking every 10 ms beside it keeps ticking
through connect, sends, twin calls and a reconnect forced by the hub (tools/bench/
device_aio_bench.py's stall mode, on the unix port against the emulator over TLS).

Only robust facts are checked: the ticker ran in every phase where the client waits on the
network, and the messages arrived. The hub holds back every CONNACK for 300 ms and every PUBACK
for 20 ms, so connect() and each send() spend that long awaiting the hub: a client that blocked
the loop while waiting would leave the ticker without a tick. How long the loop stalls (the TLS handshake's CPU time) is a figure of
tools/bench/bench_aio.py, not asserted here: a busy CI machine can stretch any gap."""

import sys

import pytest

import mpyrun
from iothub_emulator import Emulator

sys.path.insert(0, str(mpyrun.ROOT / "tools" / "bench"))
import bench_aio  # noqa: E402

CONNACK_DELAY_S = 0.3
PUBACK_DELAY_S = 0.02
SENDS = 20


@pytest.fixture(params=bench_aio.PROFILES)
def emu(request, pki, tmp_path):
    with Emulator(str(tmp_path), profile=request.param, pki=pki) as e:
        yield e


def test_ticker_runs_beside_connect_sends_twin_and_reconnect(emu, mpy_dir, tmp_path):
    root = tmp_path / "root.der"
    root.write_bytes(emu.root_der)
    emu.faults.set(delay_connack_s=CONNACK_DELAY_S, delay_puback_s=PUBACK_DELAY_S)
    env = bench_aio.device_env(mpy_dir)
    res = bench_aio.measure_stall(
        mpyrun.micropython_binary(), env, emu, str(root), emu.profile, sends=SENDS, idle_ms=100
    )
    phases = res["phases"]
    # connect and the reconnect each waited 300 ms for their CONNACK (the reconnect also waited
    # out the backoff, 200 ms at least): the loop ran meanwhile
    assert phases["connect"]["wall_ms"] >= CONNACK_DELAY_S * 1000, phases
    assert phases["connect"]["ticks"] >= 1, phases
    assert phases["reconnect"]["ticks"] >= 1, phases
    # each send awaited its PUBACK, one after the other: the loop ran meanwhile
    assert phases["sends"]["wall_ms"] >= SENDS * PUBACK_DELAY_S * 1000, phases
    assert phases["sends"]["ticks"] >= 1, phases
    # a phase's longest gap is shorter than the phase whenever the ticker ran in it
    for name in ("connect", "sends", "reconnect"):
        assert phases[name]["longest_gap_ms"] < phases[name]["wall_ms"], (name, phases)
    assert res["states"][-2:] == ["connected", "disconnected"], res["states"]
    assert res["stats"]["reconnects"] >= 1, res["stats"]
    delayed = [ev for ev in emu.events if ev[1] == res["device_id"] and ev[2] == "fault"]
    assert len(delayed) >= 2, delayed  # both CONNECTs were held back
