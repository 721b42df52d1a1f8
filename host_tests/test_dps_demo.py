"""`make demo MODE=dps` (tools/demo_dps.py) runs end to end and tells the truth about both boots."""

import os
import subprocess
import sys

import pytest

import mpyrun


@pytest.mark.timeout(120)
def test_demo_dps(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(mpyrun.ROOT / "tools" / "demo_dps.py"), "--state", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "reply $dps/registrations/res/202/?$rid=1&retry-after=1 assigning" in out
    assert "assigned -> thermostat-0042 on emulated-hub.azure-devices.net" in out
    assert "device | assignment (dps)" in out and "device | assignment (saved)" in out
    assert "no connection this boot: the device used its saved assignment" in out
    assert "received 2 telemetry messages from thermostat-0042" in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script, args", [("demo_dps.py", ["--auth", "x509"]), ("demo.py", [])])
def test_demo_uses_the_auth_asked_for_and_leaves_no_keys_behind(tmp_path, script, args):
    # `make demo MODE=dps AUTH=x509` passes --mode dps --auth x509 to demo.py, which hands
    # --auth to demo_dps.py; without --state both use a temporary directory and remove it.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, str(mpyrun.ROOT / "tools" / script)]
    if script == "demo.py":
        args = ["--mode", "dps", "--auth", "x509"]
    proc = subprocess.run(
        cmd + args,
        capture_output=True,
        text=True,
        timeout=110,
        env=dict(os.environ, TMPDIR=str(tmp)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    dps_connect = [ln for ln in out.splitlines() if ln.startswith("dps ") and ": CONNECT " in ln]
    assert dps_connect and all(", auth x509," in ln for ln in dps_connect), out
    assert "auth x509_ca" in out  # the hub took the CA-signed certificate too
    assert "provisioned over DPS (x509)" in out
    assert list(tmp.iterdir()) == [], "the demo left %s" % list(tmp.iterdir())


@pytest.mark.timeout(120)
def test_hub_demo_removes_its_temporary_state(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, str(mpyrun.ROOT / "tools" / "demo.py"), "--auth", "x509"],
        capture_output=True,
        text=True,
        timeout=110,
        env=dict(os.environ, TMPDIR=str(tmp)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo complete: real round trip over TLS (ecc profile, x509 auth)" in proc.stdout
    assert list(tmp.iterdir()) == [], "the demo left %s" % list(tmp.iterdir())
