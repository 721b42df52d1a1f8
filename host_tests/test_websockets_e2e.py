"""MQTT over WebSockets and through an HTTP CONNECT proxy, end to end: DeviceClient and the
provisioning client on the real unix port against the emulator's WebSocket endpoint (real TLS,
real RFC 6455 framing), through a real tinyproxy (installed by `make setup`, started here on a
loopback port with its own configuration), with and without credentials. What the device did
is read off the wire: the upgrade request, frames and TLS records the endpoint counted, the
CONNECT requests tinyproxy logged."""

import base64
import contextlib
import json
import pathlib
import socket
import struct
import subprocess
import sys
import threading

import pytest
from devproc import DeviceProcess
from proxyrun import Tinyproxy
from test_client_e2e import device_error, run_round_trip, sas_cfg, x509_cfg

import mpyrun
from iothub_emulator import Emulator
from iothub_emulator import mqtt as emqtt
from iothub_emulator.websocket import frame

pytestmark = pytest.mark.timeout(120)


def _ws(emu, cfg):
    cfg["port"] = emu.ws_port
    cfg["transport"] = "websockets"
    return cfg


@pytest.fixture(scope="module", params=["ecc", "rsa"])
def emu(request, pki, tmp_path_factory):
    state = tmp_path_factory.mktemp("wsemu-" + request.param)
    with Emulator(str(state), profile=request.param, pki=pki, ws_port=0) as e:
        yield e


@pytest.fixture
def ecc_emu(pki, tmp_path):
    with Emulator(str(tmp_path), profile="ecc", pki=pki, ws_port=0) as e:
        yield e


def _ws_conn(emu, device_id):
    """The WebSocket endpoint's ConnInfo of the device's latest connection."""
    sni_ok = [c for c in emu.ws_endpoint.connections if getattr(c, "ws_request", None)]
    assert sni_ok, "no WebSocket upgrade reached the emulator"
    info = emu.connect_info(device_id)
    assert info is not None
    return sni_ok[-1]


# ---- the client's features over WebSockets (both profiles, SAS and X.509) -------------------


def test_round_trip_sas_over_websockets(emu):
    cfg = _ws(emu, sas_cfg(emu))
    before = len(emu.endpoint.connections)
    run_round_trip(emu, cfg)
    msgs = emu.telemetry(cfg["device_id"])
    assert [m["payload"] for m in msgs] == [b'{"t":21.5}', b"plain text", b"\x00\x01binary"]
    assert msgs[0]["properties"] == {"sensor": "a b", "k&=": "v/%"}
    conn = _ws_conn(emu, cfg["device_id"])
    req = conn.ws_request
    assert req["request_line"] == "GET /$iothub/websocket HTTP/1.1"
    h = req["headers"]
    assert h["host"] == emu.hostname and conn.sni == emu.hostname
    assert h["upgrade"] == "websocket" and h["connection"] == "Upgrade"
    assert h["sec-websocket-version"] == "13" and h["sec-websocket-protocol"] == "mqtt"
    assert len(base64.b64decode(h["sec-websocket-key"])) == 16
    assert conn.version == "TLSv1.2"
    assert ("ECDSA" in conn.cipher) == (emu.profile == "ecc")
    # nothing went to the plain MQTT port
    assert len(emu.endpoint.connections) == before
    assert emu.connect_info(cfg["device_id"])["api_version"] == "2021-04-12"


@pytest.mark.parametrize("kind", ["ec256", "rsa2048"])
def test_round_trip_x509_over_websockets(ecc_emu, tmp_path, kind):
    cfg, sha256 = x509_cfg(ecc_emu, tmp_path, kind)
    run_round_trip(ecc_emu, _ws(ecc_emu, cfg))
    assert ecc_emu.connect_info(cfg["device_id"])["auth"].startswith("x509")
    conns = [c for c in ecc_emu.ws_endpoint.connections if c.client_cert_sha256 == sha256]
    assert conns and conns[-1].ws_request["path"] == "/$iothub/websocket"


def test_one_frame_and_one_record_per_packet(ecc_emu):
    cfg = _ws(ecc_emu, sas_cfg(ecc_emu))
    code = "CFG=%r\n" % cfg + (
        "import devkit\nc = devkit.client(CFG)\nc.connect()\n"
        "for i in range(5):\n    c.send({'i': i}, properties={'a': '1', 'b': '2'})\n"
        "c.send(b'x' * 3000)\n"  # larger than txbuf: header and payload frames
        "c.disconnect()\nprint('OK')\n"
    )
    out = mpyrun.run(code, timeout=60)
    assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr
    conn = _ws_conn(ecc_emu, cfg["device_id"])
    conn.closed.wait(5)
    # the hub read CONNECT, 5 PUBLISH, the 3000-byte PUBLISH (one frame, or two when the
    # session writes a packet larger than txbuf as header then payload) and DISCONNECT
    assert conn.ws_frames_in in (8, 9), conn.ws_frames_in
    # after the TLS handshake: the upgrade request, then one record per small frame; a frame
    # larger than the 1 KiB buffer leaves it in 1 KiB writes. The close frame after DISCONNECT
    # is counted only when it arrives before the hub has closed (racy: not asserted).
    app = conn.record_sizes_in[conn.handshake_records_in :]
    gcm = 24  # AES-GCM record overhead: explicit nonce 8 + tag 16
    disconnect = 2 + 6 + gcm  # DISCONNECT: 2 bytes in a 6-byte masked frame header
    if app[-2:] == [disconnect, disconnect]:  # the close frame (1000) has the same size
        app = app[:-1]
    assert app[-1] == disconnect, app
    last = len(app) - 1
    assert len(set(app[2:7])) == 1  # 5 equal PUBLISH frames, one record each
    big = app[7:last]
    assert 3 <= len(big) <= 4 and sum(big) > 3000 + len(big) * gcm, big
    assert max(big) <= 8 + 1024 + gcm + 8, big  # at most one buffer (and a header) per write
    assert [len(m["payload"]) for m in ecc_emu.telemetry(cfg["device_id"])][-1] == 3000


def test_port_defaults_to_443_for_websockets():
    code = (
        "import json, iothub\n"
        "k = 'shared_access_key'\n"
        "a = iothub.DeviceClient('h.azure-devices.net', 'd', transport='websockets', **{k: b'k'})\n"
        "b = iothub.DeviceClient('h.azure-devices.net', 'd', **{k: b'k'})\n"
        "try:\n    iothub.DeviceClient('h', 'd', transport='ws', **{k: b'k'})\n"
        "except iothub.ConfigError as e:\n    err = str(e)\n"
        "print(json.dumps([a.port, b.port, err]))\n"
    )
    a, b, err = mpyrun.run_json(code)
    assert (a, b) == (443, 8883)
    assert "'mqtt' or 'websockets'" in err


def test_telemetry_only_client_does_not_load_the_websocket_or_proxy_modules():
    code = (
        "import sys, json, iothub\n"
        "c = iothub.DeviceClient('h.azure-devices.net', 'd', shared_access_key=b'k')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('iothub.'))))\n"
    )
    mods = mpyrun.run_json(code)
    assert "iothub.client" in mods
    for m in ("iothub.websocket", "iothub.wsproto", "iothub.proxy"):
        assert m not in mods


# ---- frames from the hub: any split, control frames, violations -----------------------------

LISTENER = r"""
import devkit
c = devkit.client(CFG)
got = []
c.on_message = lambda m: got.append(m)
c.connect()
print("READY")
try:
    for _ in range(100):
        c.poll(100)
        if got:
            print("C2D", got.pop().body.decode())
    print("ERR none")
except Exception as e:
    print("ERR", type(e).__name__, e)
"""


def _listener(emu):
    cfg = _ws(emu, sas_cfg(emu, auto_reconnect=False))
    dev = DeviceProcess(LISTENER, cfg)
    dev.expect("READY", 30)
    assert emu.wait_connected(cfg["device_id"])
    emu.wait_event(lambda e: e[1] == cfg["device_id"] and e[2] == "subscribe")
    return cfg, dev


def test_fragmented_publish_in_any_split_with_a_ping_between(ecc_emu):
    cfg, dev = _listener(ecc_emu)
    try:
        topic = "devices/%s/messages/devicebound/%%24.mid=f1" % cfg["device_id"]
        pkt = emqtt.publish(topic, b"fragmented hello", qos=0)
        a, b, c = pkt[:5], pkt[5:30], pkt[30:]
        wire = (
            frame(2, a, fin=False)
            + frame(9, b"hb")
            + frame(0, b, fin=False)
            + frame(0, c, fin=True)
        )
        # every piece in its own TLS record, cut across frame headers and payloads
        cuts = [1, 3, 7, 8, 20, 21, 40, len(wire)]
        pieces = [wire[i:j] for i, j in zip([0] + cuts[:-1], cuts, strict=True)]
        ecc_emu.send_ws_frames(cfg["device_id"], *pieces)
        assert dev.expect("C2D") == "fragmented hello"
        conn = _ws_conn(ecc_emu, cfg["device_id"])
        assert (10, b"hb") in conn.ws_control_in  # the ping was answered with its payload
    finally:
        dev.kill()


@pytest.mark.parametrize(
    "wire, kind, needle",
    [
        (frame(8, struct.pack("!H", 4000) + b"maintenance"), "ConnectionLost", "code 4000"),
        (frame(1, b"{}"), "ProtocolError", "text frame"),
        (frame(2, b"\xd0\x00", mask=b"\x01\x02\x03\x04"), "ProtocolError", "masked"),
        (frame(2, b"\xd0\x00", rsv=0x40), "ProtocolError", "reserved bits"),
        (frame(0, b"\xd0\x00"), "ProtocolError", "continuation"),
        (frame(2, bytes(70000)), "ProtocolError", "max_packet"),  # default 66560
    ],
)
def test_hub_frames_that_end_the_link(ecc_emu, wire, kind, needle):
    cfg = _ws(ecc_emu, sas_cfg(ecc_emu, auto_reconnect=False))
    dev = DeviceProcess(LISTENER, cfg)
    try:
        dev.expect("READY", 30)
        assert ecc_emu.wait_connected(cfg["device_id"])
        ecc_emu.send_ws_frames(cfg["device_id"], wire)
        err = dev.expect("ERR")
        assert err.startswith(kind) and needle in err, err
        if kind == "ConnectionLost":
            assert "maintenance" in err
            conn = _ws_conn(ecc_emu, cfg["device_id"])
            conn.closed.wait(5)
    finally:
        dev.kill()
    assert ecc_emu.wait_disconnect(cfg["device_id"], timeout=10)


# ---- the opening handshake ------------------------------------------------------------------


def _answer(status="101 Switching Protocols", accept=None, protocol="mqtt", extra=""):
    def reply(req, good_accept):
        lines = ["HTTP/1.1 " + status, "Upgrade: websocket", "Connection: Upgrade"]
        lines.append("Sec-WebSocket-Accept: " + (accept or good_accept))
        if protocol:
            lines.append("Sec-WebSocket-Protocol: " + protocol)
        return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()

    return reply


@pytest.mark.parametrize(
    "reply, needle",
    [
        (_answer(accept="s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "Sec-WebSocket-Accept"),
        (_answer(protocol="amqp"), "subprotocol 'amqp'"),
        (_answer(protocol=None), "no subprotocol"),
        (_answer(status="200 OK"), "HTTP 200"),
        (_answer(status="404 Not Found"), "HTTP 404"),
        (_answer(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n"), "extension"),
        (lambda req, acc: b"HTTP/1.1 101 Switching Protocols\r\n" + b"X: y\r\n" * 400, "2048"),
    ],
)
def test_bad_upgrade_answers(ecc_emu, reply, needle):
    cfg = _ws(ecc_emu, sas_cfg(ecc_emu))
    ecc_emu.ws.reply = reply
    try:
        err = device_error(cfg, "devkit.client(CFG).connect()")
    finally:
        ecc_emu.ws.reply = None
    assert err.startswith("ProtocolError") and needle in err, err
    assert ecc_emu.connect_info(cfg["device_id"]) is None


def test_server_that_does_not_speak_websockets(ecc_emu):
    # the plain MQTT port answers the HTTP request with nothing a client could accept
    cfg = _ws(ecc_emu, sas_cfg(ecc_emu))
    cfg["port"] = ecc_emu.port
    cfg["timeout_ms"] = 5000
    err = device_error(cfg, "devkit.client(CFG).connect()")
    assert err.split()[0] in ("ConnectionLost", "ProtocolError", "Timeout"), err


# ---- DPS over WebSockets --------------------------------------------------------------------


@pytest.mark.parametrize("via_proxy", [False, True])
def test_dps_over_websockets_then_the_hub_over_websockets(pki, tmp_path, via_proxy):
    from iothub_emulator.dps import DPSEmulator

    hub = Emulator(str(tmp_path), profile="ecc", pki=pki, ws_port=0).start()
    dps = DPSEmulator(str(tmp_path), hub, retry_after=0, ws_port=0).start()
    try:
        (tmp_path / "root.der").write_bytes(dps.root_der)
        key = dps.add_enrollment("ws-dev")
        cfg = {
            "id_scope": dps.id_scope,
            "registration_id": "ws-dev",
            "symmetric_key": key,
            "dps_port": dps.ws_port,
            "hub_port": hub.ws_port,
            "profile": "ecc",
            "root": str(tmp_path / "root.der"),
            "min_retry_s": 0,
            "timeout_ms": 20000,
            "transport": "websockets",
            "state": str(tmp_path / "ws-dev.json"),
        }
        with contextlib.ExitStack() as stack:
            if via_proxy:
                p = stack.enter_context(Tinyproxy(tmp_path, auth=("dev", "pw-1")))
                cfg["proxy"] = ("127.0.0.1", p.port, "dev", "pw-1")
            code = "CFG = %r\nimport dps_device\ndps_device.boot(CFG)\n" % cfg
            proc = mpyrun.run(code, timeout=60)
            if via_proxy:  # DPS, then the assigned hub (proxy carried over by client())
                assert p.connects() == ["127.0.0.1:%d" % dps.ws_port, "127.0.0.1:%d" % hub.ws_port]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["ok"], proc.stdout + proc.stderr
        assert out["source"] == "dps" and out["result"]["device_id"] == "ws-dev"
        dconn = [c for c in dps.ws_endpoint.connections if getattr(c, "ws_request", None)]
        assert dconn and dconn[-1].ws_request["headers"]["host"] == dps.hostname
        assert dps.endpoint.connections == []  # the plain DPS port saw nothing
        # the assigned hub, reached over WebSockets too (transport carried over by client())
        msgs = hub.telemetry("ws-dev")
        assert [m["system_properties"]["mid"] for m in msgs] == ["boot"]
        assert json.loads(msgs[0]["payload"]) == {"boot": 1, "source": "dps"}
        assert hub.ws_endpoint.connections and hub.endpoint.connections == []
    finally:
        dps.stop()
        hub.stop()


# ---- HTTP CONNECT proxy (tinyproxy) ---------------------------------------------------------

SEND_ONE = "c = devkit.client(CFG)\nc.connect()\nc.send(b'via proxy')\nc.disconnect()\n"


@pytest.mark.parametrize("transport", ["mqtt", "websockets"])
@pytest.mark.parametrize("auth", [None, ("alice", "s3cret-pw")])
def test_through_tinyproxy(ecc_emu, tmp_path, transport, auth):
    with Tinyproxy(tmp_path, auth=auth) as p:
        cfg = sas_cfg(ecc_emu)
        if transport == "websockets":
            _ws(ecc_emu, cfg)
        cfg["proxy"] = ("127.0.0.1", p.port) + (auth or ())
        cfg["verbose"] = 1
        out = mpyrun.run("CFG=%r\nimport devkit\n%sprint('OK')\n" % (cfg, SEND_ONE), timeout=60)
        assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr
        assert p.connects() == ["127.0.0.1:%d" % cfg["port"]]
        if auth:
            assert auth[1] not in out.stdout + out.stderr  # never logged
    assert [m["payload"] for m in ecc_emu.telemetry(cfg["device_id"])] == [b"via proxy"]
    eps = ecc_emu.ws_endpoint if transport == "websockets" else ecc_emu.endpoint
    assert eps.connections[-1].sni == ecc_emu.hostname  # TLS ran inside the tunnel


@pytest.mark.parametrize(
    "creds, ports, needle",
    [
        ((), None, "ProxyError the proxy 127.0.0.1:%d wants credentials (407"),
        (("alice", "wrong-pw"), None, "ProxyError the proxy 127.0.0.1:%d wants credentials (401"),
        (
            ("alice", "s3cret-pw"),
            [443],
            "ProxyError the proxy 127.0.0.1:%d refused the tunnel (403",
        ),
    ],
)
def test_tinyproxy_refusals(ecc_emu, tmp_path, creds, ports, needle):
    with Tinyproxy(tmp_path, auth=("alice", "s3cret-pw"), connect_ports=ports) as p:
        cfg = _ws(ecc_emu, sas_cfg(ecc_emu))
        cfg["proxy"] = ("127.0.0.1", p.port) + creds
        err = device_error(cfg, "devkit.client(CFG).connect()")
        assert err.startswith(needle % p.port), err
        assert "s3cret" not in err and "wrong-pw" not in err
        assert "YWxpY2" not in err  # nor the encoded credentials
    assert ecc_emu.connect_info(cfg["device_id"]) is None


class _BadProxy:
    """A loopback TCP server that accepts and then closes at once or says nothing."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.got = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        if self.mode == "close":
            c.recv(1024)
            c.close()
        else:
            self.held.append(c)
        self.got.set()

    def stop(self):
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize("mode, kind", [("close", "ConnectionLost"), ("stall", "Timeout")])
def test_proxy_that_closes_or_stalls(ecc_emu, mode, kind):
    bad = _BadProxy(mode)
    try:
        cfg = _ws(ecc_emu, sas_cfg(ecc_emu, timeout_ms=2000))
        cfg["proxy"] = ("127.0.0.1", bad.port)
        err = device_error(cfg, "devkit.client(CFG).connect()")
        assert bad.got.is_set()
    finally:
        bad.stop()
    assert err.startswith(kind) and "proxy 127.0.0.1:%d" % bad.port in err, err


def test_unreachable_proxy_names_the_proxy(ecc_emu):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cfg = _ws(ecc_emu, sas_cfg(ecc_emu))
    cfg["proxy"] = ("127.0.0.1", port)
    err = device_error(cfg, "devkit.client(CFG).connect()")
    assert err.startswith("ConnectionLost") and "proxy 127.0.0.1:%d" % port in err, err


# ---- the emulator's command line and the demo -----------------------------------------------


def test_cli_serve_ws_port(pki, tmp_path):
    import shutil

    from test_tool_cli import Serve

    state = tmp_path / "state"
    shutil.copytree(pathlib.Path(pki.device_ca_pem_path).parent, state / "pki")
    srv = Serve(state, "--ws-port", "0", "--quiet")
    try:
        ws_port = srv.info["ws_port"]
        assert ws_port and ws_port != srv.info["port"]
        assert any("MQTT over WebSockets" in ln and ":%d/" % ws_port in ln for ln in srv.lines)
        emu = Emulator(str(state), pki=pki)  # the registry and PKI of the running one
        emu.add_device("cli-ws")
        (tmp_path / "root.der").write_bytes(emu.root_der)
        cfg = {
            "profile": "ecc",
            "port": ws_port,
            "root": str(tmp_path / "root.der"),
            "cs": emu.connection_string("cli-ws", gateway=False),
            "transport": "websockets",
        }
        out = mpyrun.run("CFG=%r\nimport devkit\n%sprint('OK')\n" % (cfg, SEND_ONE), timeout=60)
        assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr
    finally:
        assert srv.stop() == 0


@pytest.mark.timeout(120)
def test_demo_websockets_through_the_proxy(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(mpyrun.ROOT / "tools" / "demo.py"), "--transport", "websockets"]
        + ["--state", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "device | via HTTP proxy 127.0.0.1:" in out and "(with credentials)" in out
    assert "hub    | WebSocket upgrade: GET /$iothub/websocket HTTP/1.1" in out
    assert "proxy  | CONNECT requests: 127.0.0.1:" in out
    assert "device | round trip complete" in out
    assert "demo complete: real round trip over MQTT over WebSockets" in out


def test_bench_websockets_smoke(tmp_path):
    _, r = mpyrun.run_bench("bench_websockets.py", tmp_path, "--messages", 3, timeout=180)
    m, w = r["mqtt"], r["websockets"]
    assert m["publish_records"] == w["publish_records"] == 1
    # the only per-message overhead is the frame header: 8 bytes masked (126..65535 bytes of
    # PUBLISH) from the device, 2 bytes unmasked for the PUBACK from the hub
    assert w["publish_bytes"] - m["publish_bytes"] == 8
    assert w["puback_bytes"] - m["puback_bytes"] == 2
    assert m["upgrade"] == 0 < w["upgrade"]
    assert r["masking"]["viper"] is True
    for form in ("heap_py", "heap_mpy"):
        assert r[form]["websocket"] > 0 and r[form]["object"] >= 1024 + 512
