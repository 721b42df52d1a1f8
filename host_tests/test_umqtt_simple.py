"""The umqtt.simple route: iothub.umqtt_simple on the unix port.

Always: what the helper hands MQTTClient (client id, user name, SAS password and expiry,
server, keepalive, a verified TLS context), its errors, and that it does not load the
DeviceClient machinery.

With UMQTT_SIMPLE naming a copy of micropython-lib's umqtt/simple.py (not part of this
repository; fetch micropython-lib and point at micropython/umqtt.simple/umqtt/simple.py): the
README's example runs as written, with only the connection string and the emulator's root,
address and port put in, against the emulator on both TLS profiles, and X.509 connects too.
"""

import os
import pathlib
import re
import shutil

import pytest
from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator

README = mpyrun.ROOT / "README.md"
UMQTT_ENV = "UMQTT_SIMPLE"
LINK_MODULES = ("iothub.client", "iothub.session", "iothub.mqtt", "iothub.transport")


@pytest.fixture
def emu(tmp_path, request):
    e = Emulator(str(tmp_path / "emu"), profile=getattr(request, "param", "ecc")).start()
    try:
        yield e
    finally:
        e.stop()


def run_device(code):
    return mpyrun.run_json(code, timeout=60)


def test_settings_for_a_connection_string(emu):
    emu.add_device("u-dev")
    cs = emu.connection_string("u-dev", gateway=False)
    code = (
        "import json, sys, time\n"
        "from iothub.umqtt_simple import from_connection_string\n"
        "now = int(time.time())\n"
        "s = from_connection_string(%r, tls='ecc', roots=[%r], host='localhost', port=%d,\n"
        "    keepalive=120, sas_ttl=600, model_id='dtmi:com:example:T;1')\n"
        "k = s.kwargs()\n"
        "k['ssl'] = k['ssl'].iothub_info['profile']\n"
        "k['expiry_minus_now'] = s.expiry - now\n"
        "k['due_now'] = s.renew_due()\n"
        "k['due_at_80'] = s.renew_due(s.expiry - 120)\n"
        "k['due_before'] = s.renew_due(s.expiry - 121)\n"
        "k['repr'] = repr(s)\n"
        "k['loaded'] = sorted(m for m in sys.modules if m.startswith('iothub'))\n"
        "print(json.dumps(k))\n" % (cs, emu.root_der, emu.port)
    )
    k = run_device(code)
    assert k["client_id"] == "u-dev"
    assert k["server"] == "localhost" and k["port"] == emu.port and k["keepalive"] == 120
    assert k["user"] == (
        "%s/u-dev/?api-version=2021-04-12&model-id=dtmi%%3Acom%%3Aexample%%3AT%%3B1" % emu.hostname
    )
    sr = "%s%%2Fdevices%%2Fu-dev" % emu.hostname
    assert re.fullmatch(r"SharedAccessSignature sr=%s&sig=[^&]+&se=\d+" % sr, k["password"])
    assert 599 <= k["expiry_minus_now"] <= 601
    assert int(k["password"].rsplit("se=", 1)[1]) - k["expiry_minus_now"] > 1.7e9
    assert k["ssl"] == "ecc"  # a context from iothub.tls_context
    assert (k["due_now"], k["due_at_80"], k["due_before"]) == (False, True, False)
    key = cs.split("SharedAccessKey=", 1)[1]
    assert key not in k["repr"] and "Signature" not in k["repr"]
    for m in LINK_MODULES:
        assert m not in k["loaded"], k["loaded"]


def test_errors_name_the_problem(emu):
    emu.add_device("u-dev")
    cs = emu.connection_string("u-dev", gateway=False)
    key = cs.split("SharedAccessKey=", 1)[1]
    code = (
        "import json\n"
        "from iothub.umqtt_simple import from_connection_string, from_x509\n"
        "from iothub.errors import ConfigError\n"
        "out = []\n"
        "def err(fn, *a, **kw):\n"
        "    try:\n"
        "        fn(*a, **kw)\n"
        "        out.append('no error')\n"
        "    except ConfigError as e:\n"
        "        out.append(str(e))\n"
        "cs = %r\n"
        "err(from_connection_string, cs, keepalive=2000)\n"
        "err(from_connection_string, cs, sas_ttl=10)\n"
        "err(from_connection_string, cs, port=0)\n"
        "err(from_connection_string, 'HostName=h;DeviceId=d;x509=true')\n"
        "err(from_connection_string, cs, tls='ecc', now=100)\n"
        "err(from_x509, 'h', 'd/x', b'', b'')\n"
        "s = from_connection_string(cs, tls='ecc')\n"
        "s.module_id = 'm'\n"
        "err(s.c2d_topic)\n"
        "print(json.dumps(out))\n" % cs
    )
    out = run_device(code)
    assert "keepalive must be 1..1177 s" in out[0]
    assert "sas_ttl must be an int of at least 60 s" in out[1]
    assert "port must be an int in 1..65535" in out[2]
    assert "x509=true connection string: use from_x509()" in out[3]
    assert "the clock is not set" in out[4]
    assert "device id must not contain '/'" in out[5]
    assert "modules receive no C2D messages" in out[6]
    assert not any(key in m for m in out)


# ---- with micropython-lib's umqtt.simple --------------------------------------------------


@pytest.fixture
def umqtt_dir(tmp_path):
    src = os.environ.get(UMQTT_ENV)
    if not src:
        pytest.skip(
            "%s is not set (point it at a copy of micropython-lib's "
            "micropython/umqtt.simple/umqtt/simple.py)" % UMQTT_ENV
        )
    src = pathlib.Path(src)
    if not src.is_file():
        pytest.fail("%s=%s: no such file" % (UMQTT_ENV, src))
    d = tmp_path / "umqtt-lib"
    (d / "umqtt").mkdir(parents=True)
    shutil.copy(src, d / "umqtt" / "simple.py")
    return d


def readme_example():
    text = README.read_text()
    start = text.index("<!-- example:umqtt-simple -->")
    block = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    return block


def put_in(example, old, new):
    assert example.count(old) == 1, "the README example no longer has %r" % old
    return example.replace(old, new)


@pytest.mark.parametrize("emu", ["ecc", "rsa"], indirect=True)
def test_readme_example_runs_against_the_emulator(emu, umqtt_dir):
    emu.add_device("dev1")
    code = readme_example()
    code = put_in(
        code,
        'CONNECTION_STRING = "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=..."',
        "CONNECTION_STRING = %r" % emu.connection_string("dev1", gateway=False),
    )
    code = put_in(
        code,
        'tls="rsa")',
        "tls=%r, roots=[%r], host='localhost', port=%d)" % (emu.profile, emu.root_der, emu.port),
    )
    dev = DeviceProcess(code, {}, extra_path=[umqtt_dir])
    try:
        assert dev.expect("connected as") == "dev1"
        dev.expect("telemetry sent")
        info = emu.connect_info("dev1")
        assert info["auth"] == "sas" and info["api_version"] == "2021-04-12", info
        assert info["clean_session"] is False and info["keepalive"] == 240, info
        (msg,) = emu.wait_telemetry(1, "dev1")
        assert msg["payload"] == b'{"temperature": 21.5}'
        assert msg["properties"] == {"sensor": "bme280", "alert level": "low"}
        assert msg["system_properties"] == {"ct": "application/json", "ce": "utf-8"}
        emu.send_c2d("dev1", b"led:on", properties={"command": "led"}, message_id="c2d-1")
        line = dev.expect("C2D")
        assert line.startswith("b'led:on' {") and "'command': 'led'" in line, line
        assert "$.mid" in line or "mid" in line, line
    finally:
        dev.kill()


def test_x509_with_umqtt_simple(emu, umqtt_dir, tmp_path):
    cert, key, _, sha256 = emu.pki.issue_client_cert("x-dev", kind="ec256")
    emu.add_device("x-dev", x509_thumbprint=sha256)
    code = (
        "from umqtt.simple import MQTTClient\n"
        "from iothub.umqtt_simple import from_x509\n"
        "hub = from_x509(%r, 'x-dev', %r, %r, tls='ecc', roots=[%r], host='localhost', port=%d)\n"
        "c = MQTTClient(**hub.kwargs())\n"
        "c.connect(clean_session=False)\n"
        "c.publish(hub.telemetry_topic({'k': 'v w'}), b'x509 hello', qos=1)\n"
        "c.disconnect()\n"
        "print('DONE', repr(hub.password), hub.expiry)\n"
        % (emu.hostname, cert, key, emu.root_der, emu.port)
    )
    dev = DeviceProcess(code, {}, extra_path=[umqtt_dir])
    try:
        assert dev.expect("DONE") == "'' None"
        assert dev.wait() == 0, dev.output
    finally:
        dev.kill()
    assert emu.connect_info("x-dev")["auth"] == "x509"
    (msg,) = emu.wait_telemetry(1, "x-dev")
    assert msg["payload"] == b"x509 hello" and msg["properties"] == {"k": "v w"}
