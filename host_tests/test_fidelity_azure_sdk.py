"""Fidelity check: the official Azure IoT Python device SDK (azure-iot-device 2.14.0, pinned) works
against the emulator. Where the SDK and the emulator disagree, the emulator is wrong.

The SDK always dials port 8883 and, with GatewayHostName=127.0.0.1 in the connection string, verifies
the server certificate against 127.0.0.1 with server_verification_cert = the emulator's root. The
emulator listens on 8883 when that port is free; when it is taken (another hub or test on this
machine), the harness redirects the SDK's paho connect() from 8883 to the emulator's free port.
"""

import queue
import socket
import time

import paho.mqtt.client as pmqtt
import pytest

from iothub_emulator import Emulator

pytest.importorskip("azure.iot.device")
from azure.iot.device import X509, IoTHubDeviceClient, Message, MethodResponse  # noqa: E402

SDK_PORT = 8883
pytestmark = pytest.mark.filterwarnings(
    "ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning"
)
MODEL_ID = "dtmi:com:example:Thermostat;1"


def _port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


@pytest.fixture
def emu(pki, tmp_path, monkeypatch):
    port = SDK_PORT if _port_free(SDK_PORT) else 0
    e = Emulator(str(tmp_path), pki=pki, port=port)
    try:
        e.start()
    except OSError:  # lost a race for 8883
        e = Emulator(str(tmp_path), pki=pki, port=0).start()
    if e.port != SDK_PORT:
        real_connect = pmqtt.Client.connect

        def connect(self, host, port=1883, *a, **kw):
            if port == SDK_PORT:
                port = e.port
            return real_connect(self, host, port, *a, **kw)

        monkeypatch.setattr(pmqtt.Client, "connect", connect)
    yield e
    e.stop()


def _client(emu, cs=None, **kw):
    with open(emu.root_pem_path) as f:
        ca = f.read()
    kw.setdefault("connection_retry", False)
    kw.setdefault("keep_alive", 30)
    if cs is not None:
        return IoTHubDeviceClient.create_from_connection_string(
            cs, server_verification_cert=ca, **kw
        )
    return IoTHubDeviceClient.create_from_x509_certificate(server_verification_cert=ca, **kw)


@pytest.mark.timeout(60)
def test_sdk_sas_telemetry_twin_desired_method_c2d(emu):
    emu.add_device("sdkdev")
    cs = emu.connection_string("sdkdev")
    assert cs.endswith(";GatewayHostName=127.0.0.1")
    client = _client(emu, cs, product_info=MODEL_ID)
    try:
        client.connect()
        info = emu.connect_info("sdkdev")
        assert info["auth"] == "sas" and info["clean_session"] is False and info["keepalive"] == 30
        assert info["api_version"] == "2020-09-30" and info["model_id"] == MODEL_ID
        assert info["device_client_type"].startswith("azure-iot-device-iothub-py/2.14.0")

        # telemetry with system and custom properties
        msg = Message(
            '{"t": 21.5}',
            message_id="m-1",
            content_encoding="utf-8",
            content_type="application/json",
        )
        msg.correlation_id = "corr 1"
        msg.custom_properties["unit"] = "°C"
        msg.custom_properties["a b"] = "c/d&e=f"
        client.send_message(msg)
        t = emu.wait_telemetry(1, "sdkdev")[0]
        assert t["payload"] == b'{"t": 21.5}' and t["qos"] == 1
        assert t["system_properties"] == {
            "mid": "m-1",
            "cid": "corr 1",
            "ce": "utf-8",
            "ct": "application/json",
        }
        assert t["properties"] == {"unit": "°C", "a b": "c/d&e=f"}

        # twin: get, reported patch, get again
        assert client.get_twin() == {"desired": {"$version": 1}, "reported": {"$version": 1}}
        client.patch_twin_reported_properties({"fw": {"version": "1.0.0"}, "tmp": 1})
        client.patch_twin_reported_properties({"tmp": None})
        assert emu.twin("sdkdev")["reported"] == {"fw": {"version": "1.0.0"}, "$version": 3}
        assert client.get_twin()["reported"] == {"fw": {"version": "1.0.0"}, "$version": 3}

        # desired patch pushed
        patches = queue.Queue()
        client.on_twin_desired_properties_patch_received = patches.put
        emu.wait_event(lambda e: e[2] == "subscribe" and any("desired" in f for f, _ in e[3]))
        version = emu.patch_desired("sdkdev", {"interval": 5, "mode": {"eco": True}})
        assert patches.get(timeout=5) == {"interval": 5, "mode": {"eco": True}, "$version": version}

        # direct method
        def on_method(req):
            body = {"name": req.name, "echo": req.payload}
            client.send_method_response(MethodResponse.create_from_method_request(req, 207, body))

        client.on_method_request_received = on_method
        emu.wait_event(lambda e: e[2] == "subscribe" and any("methods" in f for f, _ in e[3]))
        status, payload = emu.invoke_method("sdkdev", "reboot", {"delay": 2}, timeout=10)
        assert (status, payload) == (207, {"name": "reboot", "echo": {"delay": 2}})

        # cloud-to-device with properties
        c2d = queue.Queue()
        client.on_message_received = c2d.put
        emu.wait_event(lambda e: e[2] == "subscribe" and any("devicebound" in f for f, _ in e[3]))
        emu.send_c2d(
            "sdkdev",
            b"hello device",
            {"k": "v/1", "sp ace": "x y"},
            message_id="c-1",
            correlation_id="corr-9",
        )
        m = c2d.get(timeout=5)
        assert m.data == b"hello device"
        assert m.message_id == "c-1" and m.correlation_id == "corr-9"
        assert m.custom_properties == {"k": "v/1", "sp ace": "x y"}
        emu.wait_event(lambda e: e[2] == "c2d_complete" and e[3] == "c-1")
    finally:
        client.shutdown()
    assert emu.wait_disconnect("sdkdev") == "DISCONNECT from client"


@pytest.mark.timeout(60)
def test_sdk_x509_thumbprint_and_module(emu, pki, tmp_path):
    cert, key, sha1, _ = pki.issue_client_cert("sdkx509")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    emu.add_device("sdkx509", x509_thumbprint=sha1)
    client = _client(
        emu,
        x509=X509(str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),
        hostname=emu.hostname,
        device_id="sdkx509",
        gateway_hostname="127.0.0.1",
    )
    try:
        client.connect()
        assert emu.connect_info("sdkx509")["auth"] == "x509"
        client.send_message("plain")
        assert emu.wait_telemetry(1, "sdkx509")[0]["payload"] == b"plain"
    finally:
        client.shutdown()

    # A module identity with its own key, through the module client.
    from azure.iot.device import IoTHubModuleClient

    emu.add_device("sdkdev")
    emu.add_device("sdkdev", module_id="mod1")
    with open(emu.root_pem_path) as f:
        ca = f.read()
    mc = IoTHubModuleClient.create_from_connection_string(
        emu.connection_string("sdkdev", "mod1"), server_verification_cert=ca, connection_retry=False
    )
    try:
        mc.connect()
        assert emu.connected("sdkdev", module_id="mod1")
        mc.send_message_to_output(Message("to-out"), "out1")
        t = emu.wait_telemetry(1, "sdkdev")[0]
        assert (t["module_id"], t["system_properties"], t["payload"]) == (
            "mod1",
            {"on": "out1"},
            b"to-out",
        )
        mc.patch_twin_reported_properties({"m": 1})
        assert emu.twin("sdkdev", module_id="mod1")["reported"] == {"m": 1, "$version": 2}
    finally:
        mc.shutdown()


@pytest.mark.timeout(60)
def test_sdk_refused_with_a_wrong_key(emu):
    emu.add_device("sdkdev")
    cs = emu.connection_string("sdkdev")
    bad = ";".join(
        "SharedAccessKey=" + "QUFB" * 11 if p.startswith("SharedAccessKey=") else p
        for p in cs.split(";")
    )
    client = _client(emu, bad)
    t0 = time.monotonic()
    try:
        from azure.iot.device.exceptions import ClientError, CredentialError

        with pytest.raises((CredentialError, ClientError)):
            client.connect()
    finally:
        client.shutdown()
    assert time.monotonic() - t0 < 20
    assert (
        "signature does not match" in [e for e in emu.events if e[2] == "connect"][-1][3]["reason"]
    )
    assert [e[3] for e in emu.events if e[2] == "connack"] == [5]


# ---- IoT Plug and Play: our reports as the official SDK reads them --------------------------------

# JSON texts azure-sdk-for-c's property writer produces (its unit tests,
# sdk/tests/iot/hub/test_az_iot_hub_client_properties.c): a component with a read-only property,
# and writable-property acknowledgements at the root and in a component.
C_SDK_COMPONENT = '{"component_one":{"__t":"c","prop":100}}'
C_SDK_ACK = '{"targetTemperature":{"ac":200,"av":29,"ad":"success","value":50}}'
C_SDK_COMPONENT_ACK = (
    '{"component_one":{"__t":"c","targetTemperature":{"ac":200,"av":5,"ad":"success","value":23}}}'
)

PNP_DEVICE = r"""
import devkit
from iothub import pnp
c = devkit.client(CFG)
c.connect()
print("A", pnp.Patch().report({"prop": 100}, "component_one").encode().decode())
print("B", pnp.Patch().ack("targetTemperature", 50, 29, 200, "success").encode().decode())
print("C", pnp.Patch().ack("targetTemperature", 23, 5, 200, "success", "component_one").encode().decode())
c.report_properties({"prop": 100}, component="component_one")
c.ack_writable("targetTemperature", 50, 29, 200, "success")
c.ack_writable("targetTemperature", 23, 5, 200, "success", component="component_one")
c.disconnect()
print("DONE")
"""


def test_pnp_reports_read_back_by_the_sdk(emu, tmp_path):
    """Our device (unix port) reports with the PnP helpers; the official SDK, connected as the
    same device, reads the twin: the same documents azure-sdk-for-c's writer produces."""
    import json

    import mpyrun

    emu.add_device("pnpdev")
    (tmp_path / "root.der").write_bytes(emu.root_der)
    cfg = {
        "profile": emu.profile,
        "port": emu.port,
        "root": str(tmp_path / "root.der"),
        "cs": emu.connection_string("pnpdev", gateway=False),
    }
    proc = mpyrun.run("CFG = %r\n" % (cfg,) + PNP_DEVICE, timeout=60)
    assert "DONE" in proc.stdout, proc.stdout + proc.stderr
    lines = dict(
        ln.split(" ", 1) for ln in proc.stdout.splitlines() if ln[:2] in ("A ", "B ", "C ")
    )
    assert (lines["A"], lines["B"], lines["C"]) == (C_SDK_COMPONENT, C_SDK_ACK, C_SDK_COMPONENT_ACK)

    want = {}
    for text in (C_SDK_COMPONENT, C_SDK_ACK, C_SDK_COMPONENT_ACK):
        for k, v in json.loads(text).items():  # the hub merges the three patches
            want.setdefault(k, {}).update(v)
    client = _client(emu, emu.connection_string("pnpdev"))
    try:
        client.connect()
        reported = client.get_twin()["reported"]
    finally:
        client.shutdown()
    assert reported.pop("$version") == 4
    assert reported == want


def test_pnp_acks_written_by_the_sdk_satisfy_our_parser_and_the_hub(emu):
    """The other way round: a device on the official SDK acknowledges a component's writable
    property in azure-sdk-for-c's shape; the emulator's service view shows it accepted, and our
    device-side parser (iothub.pnp on CPython) finds nothing left to acknowledge."""
    import json

    from iothub import pnp

    emu.add_device("sdkpnp")
    v = emu.set_writable("sdkpnp", "targetTemperature", 23, component="component_one")
    client = _client(emu, emu.connection_string("sdkpnp"))
    try:
        client.connect()
        twin = client.get_twin()
        assert twin["desired"]["component_one"] == {"__t": "c", "targetTemperature": 23}
        version, todo = pnp.unacknowledged(twin)
        assert (version, todo) == (v, [("component_one", "targetTemperature", 23)])
        ack = json.loads(C_SDK_COMPONENT_ACK.replace('"av":5', '"av":%d' % v))
        client.patch_twin_reported_properties(ack)
        twin = client.get_twin()
    finally:
        client.shutdown()
    assert pnp.unacknowledged(twin) == (v, [])
    st = emu.writable_status("sdkpnp", "targetTemperature", "component_one")
    assert st["state"] == "accepted" and st["ack"]["av"] == v
