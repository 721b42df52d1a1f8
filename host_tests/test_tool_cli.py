"""Both command-line tools, run as subprocesses: `iothub-tool` (SAS, certificates, DPS keys) and
`iothub-emulator` (serve, registry, service operations through the loopback admin API)."""

import base64
import hashlib
import hmac
import json
import os
import pathlib
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import threading
import time

import paho.mqtt.client as pmqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from iothub_emulator import sas as emu_sas

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
KEY = base64.b64encode(bytes(range(32))).decode()
HOST = "myhub.azure-devices.net"


def _cmd(script, module):
    exe = BIN / script
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def tool(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    p = subprocess.run(
        _cmd("iothub-tool", "iothub_tool.cli") + list(args),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


def emucli(state, *args, check=True, timeout=60, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"), **(env or {}))
    p = subprocess.run(
        _cmd("iothub-emulator", "iothub_emulator.cli") + ["--state", str(state)] + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


# ---- iothub-tool --------------------------------------------------------------------------------


def test_sas_from_arguments_and_connection_string():
    before = int(time.time())
    tok = tool(
        "sas", "--host", HOST, "--device", "dev1", "--key", KEY, "--ttl", "120"
    ).stdout.strip()
    f = emu_sas.verify(tok, KEY, HOST, ["devices", "dev1"], now=before)
    assert before + 120 <= f["expiry"] <= int(time.time()) + 120
    assert tok.startswith("SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev1&sig=")
    cs = "HostName=%s;DeviceId=dev1;ModuleId=m1;SharedAccessKey=%s" % (HOST, KEY)
    tok = tool("sas", "--connection-string", cs).stdout.strip()
    emu_sas.verify(tok, KEY, HOST, ["devices", "dev1", "modules", "m1"], now=time.time())
    tok = tool(
        "sas", "--host", HOST, "--device", "dev1", "--key", KEY, "--key-name", "device"
    ).stdout.strip()
    assert tok.endswith("&skn=device")
    emu_sas.verify(tok, KEY, HOST, ["devices", "dev1"], now=time.time(), exact=False)


@pytest.mark.parametrize(
    "args, words",
    [
        (["sas", "--host", HOST, "--device", "d"], "missing --key"),
        (["sas", "--host", HOST, "--device", "d", "--key", "not*base64"], "not valid base64"),
        (
            ["sas", "--connection-string", "HostName=h;DeviceId=d;SharedAccessKey=%s;Foo=1" % KEY],
            "unknown connection string field 'Foo'",
        ),
        (["sas", "--connection-string", "HostName=h;DeviceId=d;x509=true"], "no SharedAccessKey"),
        (["sas", "--connection-string", "DeviceId=d;SharedAccessKey=%s" % KEY], "lacks HostName"),
        (
            ["sas", "--host", HOST, "--device", "d", "--key", KEY, "--ttl", "0"],
            "--ttl must be positive",
        ),
        (
            ["dps-key", "--group-key", "%%%", "--registration-id", "r"],
            "group key is not valid base64",
        ),
    ],
)
def test_tool_errors_are_clear_and_keep_keys_out(args, words):
    p = tool(*args, check=False)
    assert p.returncode == 2
    assert words in p.stderr
    assert KEY not in p.stderr and KEY not in p.stdout


def test_dps_key():
    group = base64.b64encode(b"\x01" * 64).decode()
    out = tool("dps-key", "--group-key", group, "--registration-id", "sensor-7").stdout.strip()
    assert (
        out
        == base64.b64encode(hmac.new(b"\x01" * 64, b"sensor-7", hashlib.sha256).digest()).decode()
    )


def _thumbs(stdout):
    lines = dict(line.split(":", 1) for line in stdout.splitlines() if "thumbprint" in line)
    return lines["SHA-1 thumbprint"].strip(), lines["SHA-256 thumbprint"].strip()


def test_cert_create_ec_rsa_and_ca_signed(tmp_path, pki):
    out = tool(
        "cert",
        "create",
        "--cn",
        "dev-ec",
        "--out-cert",
        str(tmp_path / "ec.pem"),
        "--out-key",
        str(tmp_path / "ec.key"),
    ).stdout
    cert = x509.load_pem_x509_certificate((tmp_path / "ec.pem").read_bytes())
    key = load_pem_private_key((tmp_path / "ec.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.subject == cert.issuer and cert.subject.rfc4514_string() == "CN=dev-ec"
    der = cert.public_bytes(Encoding.DER)
    assert _thumbs(out) == (
        hashlib.sha1(der).hexdigest().upper(),
        hashlib.sha256(der).hexdigest().upper(),
    )
    assert oct(os.stat(tmp_path / "ec.key").st_mode & 0o777) == "0o600"
    # over an existing world-readable file the new private key is still 0600
    (tmp_path / "old.key").write_bytes(b"old")
    os.chmod(tmp_path / "old.key", 0o644)
    tool(
        "cert",
        "create",
        "--cn",
        "again",
        "--out-cert",
        str(tmp_path / "a.pem"),
        "--out-key",
        str(tmp_path / "old.key"),
    )
    assert oct(os.stat(tmp_path / "old.key").st_mode & 0o777) == "0o600"
    assert load_pem_private_key((tmp_path / "old.key").read_bytes(), None)

    tool(
        "cert",
        "create",
        "--cn",
        "dev-rsa",
        "--rsa",
        "--out-cert",
        str(tmp_path / "rsa.pem"),
        "--out-key",
        str(tmp_path / "rsa.key"),
    )
    key = load_pem_private_key((tmp_path / "rsa.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048

    ca_key = pathlib.Path(pki.device_ca_pem_path).with_name("device-ca-key.pem")
    tool(
        "cert",
        "create",
        "--cn",
        "dev-ca",
        "--ca-cert",
        pki.device_ca_pem_path,
        "--ca-key",
        str(ca_key),
        "--out-cert",
        str(tmp_path / "ca.pem"),
        "--out-key",
        str(tmp_path / "ca.key"),
    )
    leaf = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    leaf.verify_directly_issued_by(x509.load_der_x509_certificate(pki.device_ca_der))

    p = tool(
        "cert",
        "create",
        "--cn",
        "x",
        "--ca-cert",
        pki.device_ca_pem_path,
        "--ca-key",
        str(tmp_path / "ec.key"),
        "--out-cert",
        str(tmp_path / "y.pem"),
        "--out-key",
        str(tmp_path / "y.key"),
        check=False,
    )
    assert p.returncode == 2 and "does not belong to --ca-cert" in p.stderr


# ---- iothub-emulator ------------------------------------------------------------------------------


@pytest.fixture
def state(tmp_path, pki):
    d = tmp_path / "state"
    shutil.copytree(
        pathlib.Path(pki.device_ca_pem_path).parent, d / "pki"
    )  # reuse the generated PKI
    return d


def tmp_path_elsewhere(state):
    """A state directory with no emulator and no token in it."""
    d = state.parent / "elsewhere"
    d.mkdir(exist_ok=True)
    return d


class Serve:
    def __init__(self, state, *args, argv=None):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
        if argv is None:
            argv = ["--state", str(state), "serve"]
        cmd = _cmd("iothub-emulator", "iothub_emulator.cli") + argv + ["--port", "0"] + list(args)
        self.p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.ready.wait(20), "serve did not start: %s" % self.lines
        self.info = json.loads((state / "emulator.json").read_text())

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            if "admin API" in line:
                self.ready.set()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        return self.p.returncode


def test_device_add_offline_then_list_and_connection_string(state):
    out = emucli(state, "device", "add", "dev1").stdout
    assert "registry in" in out and "generated key: " in out
    key = out.split("generated key: ")[1].strip()
    emucli(state, "device", "add", "dev2", "--key", KEY)
    emucli(state, "device", "add", "dev2", "--module", "m1", "--key", KEY)
    emucli(state, "device", "add", "x1", "--x509-thumbprint", "ab" * 20)
    emucli(state, "device", "add", "x2", "--x509-ca")
    reg = json.loads((state / "registry.json").read_text())
    assert reg["devices"]["dev1"]["key"] == key and reg["devices"]["x1"]["thumbprints"] == [
        "AB" * 20
    ]
    listing = emucli(state, "device", "list").stdout.split()
    assert listing == [
        "dev1",
        "sas",
        "dev2",
        "sas",
        "dev2/m1",
        "sas",
        "x1",
        "x509",
        "x2",
        "x509_ca",
    ]
    cs = emucli(state, "device", "connection-string", "dev2", "--module", "m1").stdout.strip()
    assert (
        cs
        == "HostName=emulated-hub.azure-devices.net;DeviceId=dev2;ModuleId=m1;SharedAccessKey=%s;GatewayHostName=127.0.0.1"
        % KEY
    )
    assert (
        emucli(state, "device", "connection-string", "x1", "--no-gateway")
        .stdout.strip()
        .endswith(";x509=true")
    )
    p = emucli(state, "device", "add", "bad", "--key", "short", check=False)
    assert p.returncode == 2 and "not valid base64" in p.stderr
    p = emucli(state, "c2d", "dev1", "x", check=False)
    assert p.returncode == 2 and "no running emulator" in p.stderr


@pytest.mark.timeout(60)
def test_the_no_emulator_hint_works_as_written_and_state_may_follow_the_command(state):
    p = emucli(state, "c2d", "dev1", "x", check=False)
    hint = p.stderr.split("start one with `", 1)[1].split("`", 1)[0]
    assert hint == "iothub-emulator --state %s serve" % state
    srv = Serve(state, argv=hint.split()[1:])  # on a free port instead of 8883
    try:
        assert "admin API" in "\n".join(srv.lines)
        # the form users type first: the option after the command
        listing = subprocess.run(
            _cmd("iothub-emulator", "iothub_emulator.cli")
            + ["device", "add", "dev9", "--key", KEY, "--state", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "tools")),
        )
        assert listing.returncode == 0, listing.stderr
        assert emucli(state, "device", "list").stdout.split() == ["dev9", "sas"]
    finally:
        assert srv.stop() == 0


@pytest.mark.timeout(60)
def test_serve_and_service_operations(state):
    srv = Serve(state, "--profile", "rsa")
    try:
        info = srv.info
        assert (
            info["profile"] == "rsa"
            and info["port"]
            and info["admin_url"].startswith("http://127.0.0.1:")
        )
        text = "\n".join(srv.lines)
        assert (
            info["root_pem"] in text and info["device_ca_pem"] in text and info["admin_url"] in text
        )
        # the admin token: random, private, printed once for the developer
        token = (state / "admin-token").read_text().strip()
        assert len(token) >= 40 and stat.S_IMODE((state / "admin-token").stat().st_mode) == 0o600
        assert [ln for ln in srv.lines if token in ln] == [
            ln for ln in srv.lines if "admin token" in ln
        ]
        # --admin URL needs the token: from the state directory, or the environment
        p = emucli(tmp_path_elsewhere(state), "--admin", info["admin_url"], "events", check=False)
        assert p.returncode == 2 and "IOTHUB_EMULATOR_ADMIN_TOKEN" in p.stderr
        p = emucli(
            tmp_path_elsewhere(state),
            "--admin",
            info["admin_url"],
            "events",
            env={"IOTHUB_EMULATOR_ADMIN_TOKEN": token},
        )
        assert p.returncode == 0
        assert "rsa-root.pem" in info["root_pem"]
        out = emucli(state, "device", "add", "dev1", "--key", KEY).stdout
        assert "running emulator" in out

        # a device (paho) that answers methods and records what it gets
        got = []
        c = pmqtt.Client(client_id="dev1", clean_session=False, protocol=pmqtt.MQTTv311)
        from iothub_tool.sas import resource_uri, sas_token

        c.username_pw_set(
            info["hostname"] + "/dev1/?api-version=2021-04-12",
            sas_token(resource_uri(info["hostname"], "dev1"), KEY, int(time.time()) + 600),
        )
        c.tls_set_context(ssl.create_default_context(cafile=info["root_pem"]))

        arrived = threading.Condition()

        def on_message(cl, u, m):
            with arrived:
                got.append(m)
                arrived.notify_all()
            if m.topic.startswith("$iothub/methods/POST/"):
                cl.publish(
                    "$iothub/methods/res/200/?$rid=" + m.topic.split("$rid=")[1],
                    json.dumps({"rebooted": json.loads(m.payload)}),
                    1,
                )

        subscribed = threading.Event()
        c.on_message = on_message
        c.on_subscribe = lambda *a: subscribed.set()
        c.connect("127.0.0.1", info["port"])
        c.loop_start()
        try:
            c.subscribe(
                [
                    ("$iothub/methods/POST/#", 1),
                    ("devices/dev1/messages/devicebound/#", 1),
                    ("$iothub/twin/PATCH/properties/desired/#", 1),
                ]
            )
            assert subscribed.wait(5)
            c.publish(
                "devices/dev1/messages/events/$.ct=text%2Fplain&n=1", b"hello", 1
            ).wait_for_publish(5)

            out = emucli(
                state, "method", "dev1", "reboot", "--payload", '{"in": 3}', "--timeout", "5"
            ).stdout
            assert out.splitlines() == ["status: 200", 'payload: {"rebooted": {"in": 3}}']
            emucli(
                state,
                "c2d",
                "dev1",
                "hi there",
                "--prop",
                "a=1",
                "--prop",
                "b=x/y",
                "--message-id",
                "cli-1",
            )
            assert (
                emucli(state, "desired", "dev1", '{"rate": 7}').stdout.strip()
                == "desired $version: 2"
            )
            with arrived:  # the method request, the C2D message and the desired patch
                arrived.wait_for(lambda: len(got) >= 3, 20)
            topics = [m.topic for m in got]
            assert (
                "devices/dev1/messages/devicebound/$.mid=cli-1&$.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&a=1&b=x%2Fy"
                in topics
            )
            assert "$iothub/twin/PATCH/properties/desired/?$version=2" in topics

            rec = json.loads(emucli(state, "telemetry", "dev1").stdout.splitlines()[0])
            assert (rec["payload"], rec["properties"], rec["system_properties"]) == (
                "hello",
                {"n": "1"},
                {"ct": "text/plain"},
            )
            assert json.loads(emucli(state, "twin", "dev1").stdout)["desired"] == {
                "rate": 7,
                "$version": 2,
            }
            ev = emucli(state, "events").stdout
            assert "connack" in ev and "method_response" in ev
            assert (
                json.loads(emucli(state, "fault", "delay_puback_s=0.5").stdout)["delay_puback_s"]
                == 0.5
            )
            assert json.loads(emucli(state, "fault", "--reset").stdout)["delay_puback_s"] == 0.0
            p = emucli(state, "fault", "bogus=1", check=False)
            assert p.returncode == 2 and "unknown fault 'bogus'" in p.stderr
            p = emucli(state, "desired", "dev1", "{nope", check=False)
            assert p.returncode == 2 and "not valid JSON" in p.stderr
            p = emucli(state, "method", "ghost", "x", "--timeout", "1")
            assert p.stdout.startswith("status: 404")
        finally:
            c.disconnect()
            c.loop_stop()
    finally:
        rc = srv.stop()
    assert rc == 0
    assert not (state / "emulator.json").exists()
    assert any("dev1" in line and "connack" in line for line in srv.lines)  # live event transcript
    assert KEY not in "\n".join(srv.lines)
