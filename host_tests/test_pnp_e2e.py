"""IoT Plug and Play end to end: a device on the real unix port against the emulator over TLS.
The hub side asserts what reached it: component telemetry ($.sub), reported properties with
the component marker, writable-property acknowledgements (status, av = the desired version
that set the property) live and after the device was offline, and component commands. Each case
runs against both clients (`client_kind`: the blocking DeviceClient, and iothub.aio's through
devkit's synchronous facade)."""

import json
import uuid

import pytest
from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator

MODEL = "dtmi:com:example:iothub:TemperatureController;1"


@pytest.fixture
def emu(pki, tmp_path):
    with Emulator(str(tmp_path), profile="ecc", pki=pki) as e:
        yield e


def cfg_for(emu, client_kind, device_id=None):
    device_id = device_id or "pnp-%s" % uuid.uuid4().hex[:8]
    if emu.device_key(device_id) is None:
        emu.add_device(device_id)
    return {
        "profile": emu.profile,
        "port": emu.port,
        "root": emu.root_der_file,
        "cs": emu.connection_string(device_id, gateway=False),
        "device_id": device_id,
        "model_id": MODEL,
        "client_kind": client_kind,
    }


# A two-thermostat device: runs until the hub invokes its "stop" command.
THERMOSTATS = r"""
import json, sys, devkit
c = devkit.client(CFG)
c.components = ("thermostat1", "thermostat2")
target = {"thermostat1": 20.0, "thermostat2": 18.0}
done = []
def on_writable(component, name, value, version):
    print("WRITABLE", json.dumps([component, name, value, version]))
    if component not in target or name != "targetTemperature":
        return 404, "no such writable property"
    if not isinstance(value, (int, float)) or not -40 <= value <= 80:
        return 400, "out of range -40..80"
    target[component] = value
    return 200, "applied"
def on_command(component, name, payload):
    print("COMMAND", json.dumps([component, name, payload]))
    if name == "getMaxMinReport" and component in target:
        return 200, {"maxTemp": target[component], "since": payload}
    if component is None and name == "stop":
        done.append(1)
        return 200, None
    return None
def on_method(name, payload):
    return 201, {"plain method": name}
c.on_writable = on_writable
c.on_command = on_command
if CFG.get("with_on_method"):
    c.on_method = on_method
print("PNP_BEFORE_CONNECT", "iothub.pnp" in sys.modules)
c.connect()
c.send({"temperature": 21.5}, component="thermostat1")
c.send({"temperature": 19}, component="thermostat2", properties={"unit": "C"}, message_id="m2")
c.send({"workingSet": 1024})
v1 = c.report_properties({"serialNumber": "SN-0042"})
v2 = c.report_properties({"maxTempSinceLastReboot": 21.5}, component="thermostat1")
print("REPORTED", v1, v2)
print("READY")
for _ in range(600):
    c.poll(100)
    if done:
        break
c.poll(200)
c.disconnect()
print("DONE", json.dumps(target))
"""


def test_component_telemetry_writable_and_commands(emu, client_kind):
    cfg = cfg_for(emu, client_kind)
    cfg["with_on_method"] = True
    dev = DeviceProcess(THERMOSTATS, cfg)
    d = cfg["device_id"]
    try:
        dev.expect("READY", 30)
        assert "PNP_BEFORE_CONNECT False" in dev.output
        # component telemetry: $.sub on the wire, recorded per component by the hub
        msgs = emu.telemetry(d)
        assert [m["component"] for m in msgs] == ["thermostat1", "thermostat2", None]
        assert msgs[0]["topic"].endswith(
            "/messages/events/$.ct=application%2Fjson&$.ce=utf-8&$.sub=thermostat1"
        )
        assert msgs[1]["properties"] == {"unit": "C"}
        assert msgs[1]["system_properties"]["sub"] == "thermostat2"
        assert msgs[1]["system_properties"]["mid"] == "m2"
        # reported properties: root, and the component wrapped with its marker
        reported = emu.twin(d)["reported"]
        assert reported["serialNumber"] == "SN-0042"
        assert reported["thermostat1"] == {"__t": "c", "maxTempSinceLastReboot": 21.5}
        assert emu.connect_info(d)["model_id"] == MODEL

        # writable property set from the hub side, acknowledged with av = its version
        v = emu.set_writable(d, "targetTemperature", 23.5, component="thermostat1")
        st = emu.wait_writable_ack(d, "targetTemperature", "thermostat1", v, timeout=20)
        assert st["state"] == "accepted"
        assert st["ack"] == {"ac": 200, "av": v, "ad": "applied", "value": 23.5}
        assert json.loads(dev.expect("WRITABLE")) == ["thermostat1", "targetTemperature", 23.5, v]
        # a refused value: acknowledged with the handler's status and description
        v2 = emu.set_writable(d, "targetTemperature", 500, component="thermostat2")
        st = emu.wait_writable_ack(d, "targetTemperature", "thermostat2", v2, timeout=20)
        assert st["state"] == "rejected"
        assert st["ack"] == {"ac": 400, "av": v2, "ad": "out of range -40..80", "value": 500}
        # thermostat1's ack is still the one for its own version
        assert emu.writable_status(d, "targetTemperature", "thermostat1")["state"] == "accepted"
        # the twin holds both acks inside their marked components
        reported = emu.twin(d)["reported"]
        assert reported["thermostat1"]["__t"] == "c"
        assert reported["thermostat1"]["maxTempSinceLastReboot"] == 21.5
        assert reported["thermostat2"]["__t"] == "c"

        # commands: component*command split on the device, answered with its status
        status, payload = emu.invoke_command(
            d, "getMaxMinReport", "2026-01-01T00:00:00Z", component="thermostat1", timeout=20
        )
        assert (status, payload) == (200, {"maxTemp": 23.5, "since": "2026-01-01T00:00:00Z"})
        assert json.loads(dev.expect("COMMAND")) == [
            "thermostat1",
            "getMaxMinReport",
            "2026-01-01T00:00:00Z",
        ]
        # a command the device does not know falls to on_method (here: set), name unchanged
        assert emu.invoke_command(d, "selfDestruct", None, "thermostat2", timeout=20) == (
            201,
            {"plain method": "thermostat2*selfDestruct"},
        )
        assert emu.invoke_command(d, "stop", timeout=20) == (200, None)
        assert dev.wait(30) == 0, dev.output
        assert json.loads(dev.output.split("DONE ", 1)[1]) == {
            "thermostat1": 23.5,
            "thermostat2": 18.0,
        }
    finally:
        dev.kill()


def test_unknown_command_without_on_method_is_404(emu, client_kind):
    cfg = cfg_for(emu, client_kind)
    dev = DeviceProcess(THERMOSTATS, cfg)
    d = cfg["device_id"]
    try:
        dev.expect("READY", 30)
        status, payload = emu.invoke_command(d, "selfDestruct", None, "thermostat2", timeout=20)
        assert status == 404
        assert payload == {"error": "unknown command 'selfDestruct' of component 'thermostat2'"}
        status, payload = emu.invoke_command(d, "getMaxMinReport", None, "thermostat9", timeout=20)
        assert status == 404 and "thermostat9" in payload["error"]
        assert emu.invoke_command(d, "stop", timeout=20) == (200, None)
        assert dev.wait(30) == 0, dev.output
    finally:
        dev.kill()


def test_updates_made_while_offline_are_acknowledged_on_connect(emu, client_kind):
    cfg = cfg_for(emu, client_kind)
    d = cfg["device_id"]
    # IoT Central writes properties while the device is offline
    emu.set_writable(d, "targetTemperature", 22, component="thermostat1")
    v = emu.set_writable(d, "targetTemperature", 17.5, component="thermostat2")
    assert emu.writable_status(d, "targetTemperature", "thermostat1")["state"] == "pending"
    dev = DeviceProcess(THERMOSTATS, cfg)
    try:
        dev.expect("READY", 30)
        st1 = emu.wait_writable_ack(d, "targetTemperature", "thermostat1", timeout=20)
        st2 = emu.wait_writable_ack(d, "targetTemperature", "thermostat2", timeout=20)
        # acknowledged with the twin's desired $version at connect time
        assert st1["state"] == st2["state"] == "accepted"
        assert st1["ack"]["av"] == st2["ack"]["av"] == v
        assert st1["ack"]["value"] == 22 and st2["ack"]["value"] == 17.5
        assert emu.invoke_command(d, "stop", timeout=20) == (200, None)
        assert dev.wait(30) == 0, dev.output
    finally:
        dev.kill()
    handled = [json.loads(x.split(" ", 1)[1]) for x in dev.lines if x.startswith("WRITABLE")]
    assert sorted(h[0] for h in handled) == ["thermostat1", "thermostat2"]
    # offline again: one property changes; the next connect acknowledges only what is stale
    v2 = emu.set_writable(d, "targetTemperature", 30, component="thermostat2")
    dev = DeviceProcess(THERMOSTATS, cfg)
    try:
        dev.expect("READY", 30)
        st2 = emu.wait_writable_ack(d, "targetTemperature", "thermostat2", v2, timeout=20)
        assert st2["ack"] == {"ac": 200, "av": v2, "ad": "applied", "value": 30}
        assert emu.invoke_command(d, "stop", timeout=20) == (200, None)
        assert dev.wait(30) == 0, dev.output
    finally:
        dev.kill()
    handled = [json.loads(x.split(" ", 1)[1]) for x in dev.lines if x.startswith("WRITABLE")]
    # thermostat1's ack (av = v) answers an older version than v2 too: the convention
    # re-acknowledges it at the current version; its value is unchanged
    assert ["thermostat2", "targetTemperature", 30, v2] in handled
    assert ["thermostat1", "targetTemperature", 22, v2] in handled
    assert emu.writable_status(d, "targetTemperature", "thermostat1")["ack"]["value"] == 22


def test_plain_client_never_loads_pnp(emu, client_kind):
    cfg = cfg_for(emu, client_kind)
    cfg.pop("model_id")
    code = (
        "CFG = %r\n" % (cfg,) + "import sys, devkit\n"
        "c = devkit.client(CFG)\n"
        "c.on_method = lambda name, payload: (200, None)\n"
        "c.on_desired = lambda patch, version: None\n"
        "c.connect()\n"
        "c.send({'t': 1})\n"
        "c.get_twin()\n"
        "c.update_reported({'fw': '1'})\n"
        "c.disconnect()\n"
        "print('PNP_LOADED', 'iothub.pnp' in sys.modules)\n"
    )
    proc = mpyrun.run(code, timeout=60)
    assert "PNP_LOADED False" in proc.stdout, proc.stdout + proc.stderr
