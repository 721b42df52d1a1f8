"""iothub.aio.DeviceClient on the real unix port (its own asyncio) against the emulator over
real TLS: what the hub saw on the wire is what is asserted."""

import json
import uuid

import pytest

import mpyrun
from iothub_emulator import Emulator


@pytest.fixture(scope="module")
def emu(pki, tmp_path_factory):
    with Emulator(str(tmp_path_factory.mktemp("emu-aio")), profile="ecc", pki=pki) as e:
        yield e


def cfg_for(emu, **extra):
    device_id = "aio-%s" % uuid.uuid4().hex[:8]
    emu.add_device(device_id)
    cfg = {
        "profile": emu.profile,
        "port": emu.port,
        "root": emu.root_der_file,
        "cs": emu.connection_string(device_id, gateway=False),
        "device_id": device_id,
    }
    cfg.update(extra)
    return cfg


def run(cfg, body, timeout=60):
    """Run an async main() on the device; returns its stdout lines (exit code checked)."""
    code = "CFG = %r\nimport asyncio, json, devkit, iothub\n%s\nasyncio.run(main())\n" % (cfg, body)
    proc = mpyrun.run(code, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def lines_with(lines, prefix):
    return [ln[len(prefix) :].strip() for ln in lines if ln.startswith(prefix)]


def test_connect_send_puback_disconnect(emu):
    cfg = cfg_for(emu)
    out = run(
        cfg,
        r"""
async def main():
    c = devkit.aio_client(CFG)
    states = []
    c.on_connection_state = lambda s, d: states.append(s)
    sp = await c.connect()
    print("CONNECTED", c.is_connected, c.state, sp)
    pid = await c.send({"t": 1}, properties={"k": "v"})
    print("PID", pid, c.queued)
    await c.send(b"qos0", qos=0)
    print("CIPHER", json.dumps(c.tls_info()["cipher"]))
    await c.disconnect()
    print("STATES", json.dumps(states))
    print("AFTER", c.state, c.is_connected, c.queued)
""",
    )
    assert lines_with(out, "CONNECTED") == ["True connected False"]
    assert lines_with(out, "PID") == ["1 0"]
    assert json.loads(lines_with(out, "STATES")[0]) == ["connected", "disconnected"]
    assert lines_with(out, "AFTER") == ["disconnected False 0"]
    msgs = emu.telemetry(cfg["device_id"])
    assert [m["payload"] for m in msgs] == [b'{"t":1}', b"qos0"]
    assert msgs[0]["properties"] == {"k": "v"}
    assert msgs[0]["system_properties"]["ct"] == "application/json"
    assert [m["qos"] for m in msgs] == [1, 0]
