"""boards/examples: the board example runs on the unix port (board parts stubbed) against the
local hub emulator, and its configuration template is complete.

The example's main.py is the file users deploy to an ESP32 or a Pico W; here the same file runs
on the MicroPython unix port ($MICROPYTHON) with a config.py made for the emulator. Wi-Fi, NTP and
the LED fall back to their stand-ins because `network`, `ntptime` and `machine` are absent."""

import ast
import pathlib
import threading

import pytest

import mpyrun
from iothub_emulator import Emulator

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "boards" / "examples"
TEMPLATE = EXAMPLES / "config_template.py"
REQUIRED = (
    "WIFI_SSID",
    "WIFI_PASSWORD",
    "CONNECTION_STRING",
    "DPS_ID_SCOPE",
    "DPS_REGISTRATION_ID",
    "DPS_SYMMETRIC_KEY",
    "TLS_PROFILE",
    "TELEMETRY_INTERVAL_S",
    "POLL_MS",
    "NTP_HOST",
    "NTP_ATTEMPTS",
    "NTP_TIMEOUT_S",
    "LED_PIN",
)


def template_values():
    tree = ast.parse(TEMPLATE.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def test_template_defines_every_setting_and_no_secret():
    values = template_values()
    missing = [n for n in REQUIRED if n not in values]
    assert not missing, "config_template.py lacks %s" % missing
    # a committed template carries no credentials
    for name in ("WIFI_PASSWORD", "CONNECTION_STRING", "DPS_SYMMETRIC_KEY"):
        assert values[name] == "", name
    assert values["TLS_PROFILE"] in ("rsa", "ecc")


def test_filled_config_is_git_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "boards/examples/config.py" in ignored


def test_main_imports_without_running_and_explains_missing_config():
    proc = mpyrun.run(
        code=(
            "import main\n"
            "print('IMPORTED', main.Led().state)\n"
            "try:\n"
            "    main.main(cfg=None, max_iterations=1)\n"
            "except SystemExit as e:\n"
            "    print('EXIT', e)\n"
        ),
        extra_path=[EXAMPLES],
        timeout=60,
    )
    assert "IMPORTED 0" in proc.stdout, proc.stderr
    assert "EXIT config.py is missing" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture
def emu(tmp_path):
    e = Emulator(str(tmp_path / "emu"), profile="ecc").start()
    try:
        yield e
    finally:
        e.stop()


def test_example_round_trip_on_unix_port(emu, tmp_path):
    emu.add_device("example-dev")
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "config.py").write_text(
        "WIFI_SSID = ''\nWIFI_PASSWORD = ''\n"
        "CONNECTION_STRING = %r\n"
        "TLS_PROFILE = 'ecc'\n"
        "TELEMETRY_INTERVAL_S = 2\nPOLL_MS = 250\n"
        "PORT = %d\nROOTS = [%r]\n" % (emu.connection_string("example-dev"), emu.port, emu.root_der)
    )
    done = {}

    def device():
        done["proc"] = mpyrun.run(
            code=(
                "import main\n"
                "app = main.main(max_iterations=30)\n"
                "print('RESULT', app.sent, app.received, app.led.state, app.interval_s)\n"
            ),
            extra_path=[cfg_dir, EXAMPLES],
            timeout=90,
        )

    t = threading.Thread(target=device, daemon=True)
    t.start()
    emu.wait_connected("example-dev", timeout=30)
    state = invoke_when_subscribed(emu, "get_state", {})
    emu.send_c2d("example-dev", b"toggle", properties={"kind": "led"})
    blink = emu.invoke_method("example-dev", "blink", None, timeout=20)
    unknown = emu.invoke_method("example-dev", "self_destruct", None, timeout=20)
    emu.patch_desired("example-dev", {"interval": 2})
    t.join(100)
    proc = done.get("proc")
    assert proc is not None, "the example did not finish"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "no network module" in out and "no ntptime module" in out
    sent, received, led, interval = (int(x) for x in out.split("RESULT", 1)[1].split()[:4])
    # telemetry reached the hub with the example's property
    got = emu.telemetry("example-dev")
    assert len(got) == sent >= 2
    assert all(m["properties"].get("source") == "iothub-example" for m in got), got[0]
    # C2D toggled the LED on, blink toggled it off again
    assert received == 1 and "LED on" in out and "LED off" in out and led == 0
    assert state[0] == 200 and state[1]["led"] == 0, state
    assert blink[0] == 200 and blink[1] == {"led": 0}, blink
    assert unknown[0] == 404 and "unknown method" in unknown[1]["error"], unknown
    # the desired interval was applied and reported back
    assert interval == 2
    assert emu.twin("example-dev")["reported"].get("interval") == 2


def invoke_when_subscribed(emu, name, payload, timeout=60):
    """Invoke once the device has subscribed to direct methods (it does so right after
    CONNACK): the hub's own event log says when."""
    emu.wait_event(
        lambda ev: (
            ev[1] == "example-dev"
            and ev[2] == "subscribe"
            and any(f == "$iothub/methods/POST/#" and c != 0x80 for f, c in ev[3])
        ),
        timeout=timeout,
    )
    return emu.invoke_method("example-dev", name, payload, timeout=20)


def test_aio_example_round_trip_on_unix_port(emu, tmp_path):
    """aio_main.py: telemetry and blinking run side by side on one asyncio loop, and a
    direct method (a coroutine handler) changes the blink period while they run."""
    emu.add_device("example-dev")
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "config.py").write_text(
        "WIFI_SSID = ''\nWIFI_PASSWORD = ''\n"
        "CONNECTION_STRING = %r\n"
        "TLS_PROFILE = 'ecc'\n"
        "TELEMETRY_INTERVAL_S = 1\nBLINK_MS = 200\n"
        "PORT = %d\nROOTS = [%r]\n" % (emu.connection_string("example-dev"), emu.port, emu.root_der)
    )
    done = {}

    def device():
        done["proc"] = mpyrun.run(
            code=(
                "import aio_main\n"
                "app = aio_main.main(max_messages=5)\n"
                "print('RESULT', app.sent, app.blinks, app.blink_ms, app.interval_s)\n"
                "import sys\n"
                "print('BLOCKING CLIENT', 'iothub.client' in sys.modules)\n"
            ),
            extra_path=[cfg_dir, EXAMPLES],
            timeout=90,
        )

    t = threading.Thread(target=device, daemon=True)
    t.start()
    emu.wait_connected("example-dev", timeout=30)
    changed = invoke_when_subscribed(emu, "set_blink", {"ms": 50})
    bad = emu.invoke_method("example-dev", "set_blink", {"ms": 1}, timeout=20)
    state = emu.invoke_method("example-dev", "get_state", None, timeout=20)
    t.join(100)
    proc = done.get("proc")
    assert proc is not None, "the example did not finish"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    sent, blinks, blink_ms, interval = (int(x) for x in out.split("RESULT", 1)[1].split()[:4])
    assert "BLOCKING CLIENT False" in out
    got = emu.telemetry("example-dev")
    assert sent == 5 and len(got) == 5
    assert all(m["properties"].get("source") == "iothub-aio-example" for m in got), got[0]
    assert [m["payload"].split(b",")[0] for m in got] == [b'{"count": %d' % i for i in range(1, 6)]
    assert changed == (200, {"blink_ms": 50}), changed
    assert bad[0] == 400 and "ms must be" in bad[1]["error"], bad
    assert state[0] == 200 and state[1]["blink_ms"] == 50, state
    # the LED task kept running while telemetry waited for PUBACKs and intervals
    assert blink_ms == 50 and blinks > state[1]["blinks"] >= 1 and interval == 1
