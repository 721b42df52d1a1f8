"""`make demo MODE=pnp` (tools/demo_pnp.py, the board example on the unix port) runs end to end
and shows component telemetry, a writable property acknowledged at its desired version, and
component commands."""

import json
import re
import subprocess
import sys

import pytest

import mpyrun

EXAMPLES = mpyrun.ROOT / "boards" / "examples"


@pytest.mark.timeout(120)
def test_demo_pnp(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(mpyrun.ROOT / "tools" / "demo.py"),
            "--mode",
            "pnp",
            "--state",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "device announced model dtmi:com:example:iothub:TemperatureController;1" in out
    assert 'telemetry component=thermostat1 {"temperature":21.0}' in out
    assert 'telemetry component=thermostat2 {"temperature":18.0}' in out
    m = re.search(r"targetTemperature = 23.5 -> desired \$version (\d+)", out)
    assert m, out
    v = int(m.group(1))
    assert 'acknowledged: ac=200 av=%d ad="target set" value=23.5 -> accepted' % v in out
    report = json.loads(
        out.split("command thermostat2*getMaxMinReport -> 200 ", 1)[1].splitlines()[0]
    )
    assert set(report) == {"maxTemp", "minTemp", "avgTemp", "samples"}
    assert "command thermostat1*selfDestruct -> 404" in out
    assert "device | thermostat1 target 23.5" in out


def _model():
    return json.loads((EXAMPLES / "pnp_thermostat.dtdl.json").read_text())


def test_dtdl_model_is_consistent_with_the_example():
    """The committed model is DTDL v2, its components point at an interface in the same file,
    and every name the example uses (components, properties, command) is in it."""
    interfaces = {i["@id"]: i for i in _model()}
    for i in interfaces.values():
        assert i["@context"] == "dtmi:dtdl:context;2" and i["@type"] == "Interface"
        assert re.fullmatch(
            r"dtmi:[A-Za-z](?:[A-Za-z0-9_]*[A-Za-z0-9])?(?::[A-Za-z0-9_]+)*;[1-9][0-9]*", i["@id"]
        )
        names = [c["name"] for c in i["contents"]]
        assert len(names) == len(set(names)), i["@id"]
        for n in names:
            assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9_]{0,62}[A-Za-z0-9])?", n), n
    src = (EXAMPLES / "pnp_thermostat.py").read_text()
    model_id = re.search(r'MODEL_ID = "([^"]+)"', src).group(1)
    root = interfaces[model_id]
    components = {c["name"]: c["schema"] for c in root["contents"] if c["@type"] == "Component"}
    assert sorted(components) == ["thermostat1", "thermostat2"]
    assert 'COMPONENTS = ("thermostat1", "thermostat2")' in src
    thermostat = interfaces[components["thermostat1"]]
    kinds = {}
    for c in thermostat["contents"]:
        t = c["@type"]
        kinds[c["name"]] = (t if isinstance(t, str) else t[0], c.get("writable"))
    assert kinds["targetTemperature"] == ("Property", True)
    assert kinds["maxTempSinceLastReboot"] == ("Property", False)
    assert kinds["temperature"][0] == "Telemetry"
    assert kinds["getMaxMinReport"][0] == "Command"
    fields = {f["name"] for f in thermostat["contents"][-1]["response"]["schema"]["fields"]}
    assert fields == {"maxTemp", "minTemp", "avgTemp", "samples"}
    for name in ("targetTemperature", "maxTempSinceLastReboot", "getMaxMinReport", "serialNumber"):
        assert '"%s"' % name in src, name


def test_example_imports_without_running():
    proc = mpyrun.run(
        code="import pnp_thermostat\nprint('IMPORTED', pnp_thermostat.MODEL_ID)\n",
        extra_path=[EXAMPLES],
        timeout=60,
    )
    assert "IMPORTED dtmi:com:example:iothub:TemperatureController;1" in proc.stdout, (
        proc.stdout + proc.stderr
    )


def test_example_main_on_the_unix_port(pki, tmp_path):
    """pnp_thermostat.main() as a board runs it: config.py, main.py's client (model id in the
    CONNECT), reported properties, telemetry of both components and the root."""
    from iothub_emulator import Emulator

    with Emulator(str(tmp_path / "emu"), profile="ecc", pki=pki) as emu:
        emu.add_device("pnp-example")
        cfg_dir = tmp_path / "cfg"
        cfg_dir.mkdir()
        (cfg_dir / "config.py").write_text(
            "WIFI_SSID = ''\nWIFI_PASSWORD = ''\nCONNECTION_STRING = %r\nTLS_PROFILE = 'ecc'\n"
            "TELEMETRY_INTERVAL_S = 3600\nPOLL_MS = 50\nPORT = %d\nROOTS = [%r]\n"
            % (emu.connection_string("pnp-example"), emu.port, emu.root_der)
        )
        proc = mpyrun.run(
            code="import pnp_thermostat\napp = pnp_thermostat.main(max_iterations=2)\n"
            "print('RESULT', app.sent)\n",
            extra_path=[cfg_dir, EXAMPLES],
            timeout=90,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "RESULT 3" in proc.stdout, proc.stdout
        info = emu.connect_info("pnp-example")
        assert info["model_id"] == "dtmi:com:example:iothub:TemperatureController;1"
        got = emu.telemetry("pnp-example")
        assert [m["component"] for m in got] == ["thermostat1", "thermostat2", None]
        reported = emu.twin("pnp-example")["reported"]
        assert reported["serialNumber"] == "iothub-example-0001"
        for c in ("thermostat1", "thermostat2"):
            assert reported[c]["__t"] == "c" and "maxTempSinceLastReboot" in reported[c]
