"""iothub.aio.register: DPS provisioning awaited on the unix port's asyncio, over real TLS,
against the DPS emulator, while another task keeps running; then the asyncio client on the
assigned hub. The conversation is the blocking client's (ProvisioningClient._steps)."""

import json

import pytest

import mpyrun
from iothub_emulator import Emulator
from iothub_emulator.dps import DPSEmulator

pytestmark = pytest.mark.timeout(120)

DEVICE = r"""
import asyncio, json, dps_device, iothub
from iothub.aio import DeviceClient, register
async def ticker(n):
    while True:
        n[0] += 1
        await asyncio.sleep_ms(10)
async def main():
    out = {"ok": False}
    ticks = [0]
    t = asyncio.create_task(ticker(ticks))
    try:
        pc = dps_device.pclient(CFG)
        result = await register(pc)
        out["ticks"] = ticks[0]
        out["result"] = result.as_dict()
        out["stats"] = pc.stats
        c = result.client(DeviceClient, host="127.0.0.1", port=CFG["hub_port"])
        async with c:
            await c.send({"provisioned": True})
        out["ok"] = True
    except Exception as e:
        out["error"] = dps_device.describe_error(e)
    t.cancel()
    print(json.dumps(out))
asyncio.run(main())
"""


@pytest.fixture
def env(pki, tmp_path):
    hub = Emulator(str(tmp_path), profile="ecc", pki=pki).start()
    dps = DPSEmulator(str(tmp_path), hub, retry_after=1).start()
    try:
        yield hub, dps
    finally:
        dps.stop()
        hub.stop()


def run(cfg):
    proc = mpyrun.run("CFG = %r\n" % cfg + DEVICE, timeout=90)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
    return json.loads(lines[-1])


def cfg_for(hub, dps, registration_id, **kw):
    cfg = {
        "id_scope": dps.id_scope,
        "registration_id": registration_id,
        "dps_port": dps.port,
        "profile": dps.profile,
        "root": str(dps.root_der_file),
        "min_retry_s": 0,
        "timeout_ms": 20000,
        "hub_port": hub.port,
    }
    cfg.update(kw)
    return cfg


def test_register_awaited_then_hub(env):
    hub, dps = env
    key = dps.add_enrollment("aio-dev")
    out = run(cfg_for(hub, dps, "aio-dev", symmetric_key=key))
    assert out["ok"], out
    r = out["result"]
    assert r["status"] == "assigned" and r["device_id"] == "aio-dev"
    assert r["assigned_hub"] == hub.hostname
    # register, then one status query after the 1 s the DPS asked for
    assert out["stats"] == {"requests": 2, "polls": 1, "retries": 0, "waits_ms": [1000]}
    # the other task ran while the device waited for DPS (the wait alone is 1 s)
    assert out["ticks"] >= 1
    got = hub.wait_telemetry(1, "aio-dev")
    assert json.loads(got[0]["payload"]) == {"provisioned": True}


def test_register_refused_raises_like_the_blocking_client(env):
    hub, dps = env
    dps.add_enrollment("aio-bad")
    out = run(
        cfg_for(hub, dps, "aio-bad", symmetric_key="QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=")
    )
    assert not out["ok"]
    assert out["error"]["type"] == "RegistrationError" and out["error"]["status"] == 401, out
