"""`make demo MODE=dps` (tools/demo_dps.py) runs end to end and tells the truth about both boots."""

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
