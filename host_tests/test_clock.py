"""Clock at the edge: the epoch offset is derived, and no SAS token is signed on an unset clock."""

import time

import pytest

import mpyrun
from iothub import clock
from iothub.errors import ConfigError


def test_epoch_offset_follows_gmtime0(monkeypatch):
    monkeypatch.setattr(time, "gmtime", lambda t=None: (2000, 1, 1, 0, 0, 0, 5, 1, 0))
    assert clock._epoch_offset() == 946684800  # esp32: epoch 2000
    monkeypatch.setattr(time, "gmtime", lambda t=None: (1970, 1, 1, 0, 0, 0, 3, 1, 0))
    assert clock._epoch_offset() == 0  # rp2, unix


def test_unix_time_on_the_unix_port_matches_the_host():
    out = mpyrun.run_json(
        "import json, iothub.clock as c\nprint(json.dumps([c.EPOCH_OFFSET, c.unix_time()]))"
    )
    assert out[0] == 0
    assert abs(out[1] - time.time()) < 5


def test_require_valid_clock():
    with pytest.raises(ConfigError, match="clock is not set"):
        clock.require_valid_clock(1000)
    assert clock.require_valid_clock(clock.RELEASE_UNIX_TIME + 1) == clock.RELEASE_UNIX_TIME + 1


def test_device_refuses_to_sign_on_an_unset_clock():
    # A board that booted without time sync: its clock reads the epoch start.
    code = (
        "import iothub, iothub.clock as c\n"
        "c.EPOCH_OFFSET = -c.unix_time() + 5\n"
        "cl = iothub.DeviceClient.from_connection_string("
        "'HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=YWJjZGVmZ2hpamtsbW5vcA==', host='127.0.0.1', port=1)\n"
        "try:\n    cl.connect()\nexcept Exception as e:\n    print('ERR', type(e).__name__, e)\n"
    )
    out = mpyrun.run(code)
    assert "ERR ConfigError the clock is not set" in out.stdout, out.stdout + out.stderr


def test_sync_ntp_says_what_is_missing_on_the_unix_port():
    out = mpyrun.run(
        "import iothub.clock as c\ntry:\n    c.sync_ntp()\nexcept Exception as e:\n    print('ERR', type(e).__name__, e)\n"
    )
    assert "ERR ConfigError ntptime is not available" in out.stdout, out.stdout + out.stderr
