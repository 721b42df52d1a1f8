"""Fidelity over WebSockets: the official Azure IoT Python device SDK (azure-iot-device 2.14.0,
pinned) with websockets=True against the emulator's WebSocket endpoint, directly and through a
real HTTP proxy (tinyproxy, with credentials, via the SDK's ProxyOptions). Where the SDK and the
emulator disagree, the emulator is wrong.

The SDK dials port 443 with WebSockets; the harness redirects its paho connect() from 443 to the
emulator's free WebSocket port (through a proxy, the CONNECT request names that port)."""

import queue

import paho.mqtt.client as pmqtt
import pytest
from proxyrun import Tinyproxy

from iothub_emulator import Emulator

pytest.importorskip("azure.iot.device")
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse, ProxyOptions  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning"),
    pytest.mark.timeout(90),
]
SDK_WS_PORT = 443


@pytest.fixture
def emu(pki, tmp_path, monkeypatch):
    e = Emulator(str(tmp_path), pki=pki, ws_port=0).start()
    real_connect = pmqtt.Client.connect

    def connect(self, host, port=1883, *a, **kw):
        if port == SDK_WS_PORT:
            port = e.ws_port
        return real_connect(self, host, port, *a, **kw)

    monkeypatch.setattr(pmqtt.Client, "connect", connect)
    yield e
    e.stop()


def _client(emu, device_id, **kw):
    with open(emu.root_pem_path) as f:
        ca = f.read()
    emu.add_device(device_id)
    return IoTHubDeviceClient.create_from_connection_string(
        emu.connection_string(device_id),
        server_verification_cert=ca,
        websockets=True,
        connection_retry=False,
        keep_alive=30,
        **kw,
    )


def _exercise(emu, client, device_id):
    client.connect()
    conn = [c for c in emu.ws_endpoint.connections if getattr(c, "ws_request", None)][-1]
    h = conn.ws_request["headers"]
    # what paho sent, as the emulator saw it: the IoT Hub path and the mqtt subprotocol
    assert conn.ws_request["path"] == "/$iothub/websocket"
    assert h["sec-websocket-protocol"].lower() == "mqtt"
    assert emu.connect_info(device_id)["auth"] == "sas"
    msg = Message('{"t": 1}', message_id="w-1", content_type="application/json")
    msg.custom_properties["via"] = "websockets"
    client.send_message(msg)
    t = emu.wait_telemetry(1, device_id)[0]
    assert t["payload"] == b'{"t": 1}' and t["properties"] == {"via": "websockets"}
    client.patch_twin_reported_properties({"fw": "2.0"})
    assert client.get_twin()["reported"] == {"fw": "2.0", "$version": 2}

    def on_method(req):
        client.send_method_response(
            MethodResponse.create_from_method_request(req, 200, req.payload)
        )

    client.on_method_request_received = on_method
    emu.wait_event(lambda e: e[2] == "subscribe" and any("methods" in f for f, _ in e[3]))
    assert emu.invoke_method(device_id, "echo", {"a": 1}, timeout=10) == (200, {"a": 1})
    c2d = queue.Queue()
    client.on_message_received = c2d.put
    emu.wait_event(lambda e: e[2] == "subscribe" and any("devicebound" in f for f, _ in e[3]))
    emu.send_c2d(device_id, b"over ws", {"k": "v"})
    m = c2d.get(timeout=5)
    assert m.data == b"over ws" and m.custom_properties == {"k": "v"}
    return conn


def test_sdk_over_websockets(emu):
    client = _client(emu, "sdk-ws")
    try:
        conn = _exercise(emu, client, "sdk-ws")
        assert conn.ws_frames_in > 5 and conn.ws_frames_out > 5
    finally:
        client.shutdown()
    assert emu.wait_disconnect("sdk-ws") == "DISCONNECT from client"
    assert emu.endpoint.connections == []  # nothing reached the plain MQTT port


def test_sdk_over_websockets_through_an_http_proxy(emu, tmp_path):
    with Tinyproxy(tmp_path, auth=("sdk", "pr0xy-pw")) as p:
        opts = ProxyOptions(
            proxy_type="HTTP",
            proxy_addr="127.0.0.1",
            proxy_port=p.port,
            proxy_username="sdk",
            proxy_password="pr0xy-pw",
        )
        client = _client(emu, "sdk-ws-proxy", proxy_options=opts)
        try:
            _exercise(emu, client, "sdk-ws-proxy")
        finally:
            client.shutdown()
        assert p.connects() == ["127.0.0.1:%d" % emu.ws_port]
