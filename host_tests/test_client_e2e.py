"""DeviceClient on the real unix port against the emulator over real TLS: every feature,
both TLS profiles, SAS and X.509, modules, and bad input from both sides.

Most cases run against both clients (the `client_kind` fixture: the blocking DeviceClient and
iothub.aio's through devkit's synchronous facade). Blocking-only, and why: the two cases where
poll() raises the link's fatal error to the caller (a malformed packet, a missing PINGRESP, with
auto_reconnect off); the aio client has no poll(): its background task handles the same faults,
which test_lifecycle.py runs against it."""

import hashlib
import json
import pathlib
import time
import uuid

import pytest
from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator


@pytest.fixture(scope="module", params=["ecc", "rsa"])
def emu(request, pki, tmp_path_factory):
    state = tmp_path_factory.mktemp("emu-" + request.param)
    with Emulator(str(state), profile=request.param, pki=pki) as e:
        yield e


@pytest.fixture
def ecc_emu(pki, tmp_path):
    with Emulator(str(tmp_path), profile="ecc", pki=pki) as e:
        yield e


def new_id(prefix="dev"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def sas_cfg(emu, device_id=None, module_id=None, **extra):
    device_id = device_id or new_id()
    if emu.device_key(device_id, module_id) is None:
        emu.add_device(device_id, module_id=module_id)
    cfg = {
        "profile": emu.profile,
        "port": emu.port,
        "root": emu.root_der_file,
        "cs": emu.connection_string(device_id, module_id, gateway=False),
        "device_id": device_id,
    }
    cfg.update(extra)
    return cfg


def x509_cfg(emu, tmp_path, kind="ec256", ca="self"):
    device_id = new_id("x509")
    cert, key, sha1, sha256 = emu.pki.issue_client_cert(device_id, kind=kind, ca=ca)
    if ca == "self":
        emu.add_device(device_id, x509_thumbprint=sha1 if kind == "rsa2048" else sha256)
    else:
        emu.add_device(device_id, x509_ca=True)
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    return {
        "profile": emu.profile,
        "port": emu.port,
        "root": emu.root_der_file,
        "hostname": emu.hostname,
        "device_id": device_id,
        "cert": str(tmp_path / "c.pem"),
        "key": str(tmp_path / "k.pem"),
    }, sha256


ROUND_TRIP = r"""
import json, sys, devkit
c = devkit.client(CFG)
COLD = ("clientinit", "clientx", "clientrun", "connstr", "sas", "saskey", "tlsconf", "tlsdesc", "tlstexts", "tlsprofile", "roots", "pem", "linkopen", "handlers", "spare")
print("AFTER_NEW", json.dumps(sorted(n for n in COLD if "iothub." + n in sys.modules)))
got = {}
def on_desired(patch, version):
    print("DESIRED", json.dumps([patch, version]))
    got["desired"] = 1
def on_method(name, payload):
    print("METHOD", json.dumps([name, payload]))
    got["method"] = 1
    if name == "fail":
        raise RuntimeError("boom")
    return 201, {"echo": payload}
def on_message(msg):
    print("C2D", json.dumps([msg.body.decode(), msg.properties, msg.system_properties, msg.input_name]))
    got["c2d"] = 1
c.on_desired = on_desired
c.on_method = on_method
c.on_message = on_message
print("HANDLERS_SET", json.dumps(sorted(n for n in ("inbound", "jsonc", "twin") if "iothub." + n in sys.modules)))
c.connect()
kept = getattr(c, "_tlsinfo", None)
print("CIPHER", json.dumps(c.tls_info()["cipher"]))
import sys
print("TLSINFO", json.dumps([kept, c.tls_info()["configured"], sorted(m for m in sys.modules if m in ("iothub.tlsconf", "iothub.tlsdesc", "iothub.tlstexts", "iothub.pem", "iothub.roots", "iothub.linkopen"))]))
c.send({"t": 21.5}, properties={"sensor": "a b", "k&=": "v/%"}, message_id="m-1", correlation_id="c-1")
c.send("plain text", content_type="text/plain", content_encoding="utf-8")
c.send(b"\x00\x01binary", qos=0)
twin = c.get_twin()
print("TWIN", json.dumps(twin))
m = sys.modules
# A loaded module holding a package module that sys.modules no longer has (or has another
# copy of): an unload that freed nothing, or a second copy loaded after it.
held = []
for k in list(m):
    if k.startswith("iothub."):
        for n, v in m[k].__dict__.items():
            if type(v) is type(sys) and v.__name__.startswith("iothub.") and m.get(v.__name__) is not v:
                held.append(k + "." + n)
print("HELD", json.dumps(sorted(held)))
print("TEXTS", json.dumps("iothub.inerr" in m))
v = c.update_reported({"fw": "1.0", "gone": None})
print("REPORTED", v)
print("READY")
for _ in range(200):
    c.poll(100)
    if len(got) == 3:
        break
c.poll(300)
c.disconnect()
print("DONE", len(got))
"""


def run_round_trip(emu, cfg, module_id=None):
    dev = DeviceProcess(ROUND_TRIP, cfg)
    try:
        dev.expect("READY", 30)
        device_id = cfg["device_id"]
        assert emu.wait_connected(device_id, module_id=module_id)
        v = emu.patch_desired(device_id, {"interval": 5}, module_id=module_id)
        status, payload = emu.invoke_method(
            device_id, "echo", {"x": 1}, timeout=10, module_id=module_id
        )
        assert (status, payload) == (201, {"echo": {"x": 1}})
        if module_id is None:
            emu.send_c2d(
                device_id, b"hello", properties={"cmd": "led on", "empty": ""}, message_id="c2d-1"
            )
        desired = json.loads(dev.expect("DESIRED"))
        assert desired == [{"interval": 5, "$version": v}, v]
        if module_id is None:
            body, props, system, input_name = json.loads(dev.expect("C2D"))
            assert body == "hello"
            assert props == {"cmd": "led on", "empty": ""}
            assert system["mid"] == "c2d-1"
        assert dev.wait() == 0, dev.output
    finally:
        dev.kill()
    return dev


def test_round_trip_sas(emu, client_kind):
    cfg = sas_cfg(emu, client_kind=client_kind)
    dev = run_round_trip(emu, cfg)
    cipher = json.loads(dev.output.split("CIPHER ", 1)[1].splitlines()[0])
    expected = "ECDSA" if emu.profile == "ecc" else "RSA"
    assert expected in cipher[0] and cipher[1] == "TLSv1.2"
    msgs = emu.telemetry(cfg["device_id"])
    assert [m["payload"] for m in msgs] == [b'{"t":21.5}', b"plain text", b"\x00\x01binary"]
    first = msgs[0]
    assert first["properties"] == {"sensor": "a b", "k&=": "v/%"}
    assert first["system_properties"]["mid"] == "m-1"
    assert first["system_properties"]["cid"] == "c-1"
    assert first["system_properties"]["ct"] == "application/json"
    assert first["system_properties"]["ce"] == "utf-8"
    assert msgs[0]["qos"] == 1 and msgs[2]["qos"] == 0
    assert msgs[1]["system_properties"]["ct"] == "text/plain"
    # property names and values travel percent-encoded on the topic (never "+")
    assert "sensor=a%20b" in first["topic"] and "k%26%3D=v%2F%25" in first["topic"]
    reported = emu.twin(cfg["device_id"])["reported"]
    assert reported["fw"] == "1.0" and "gone" not in reported
    # Construction leaves none of its code loaded; after connect() and the twin calls no
    # loaded module holds an unloaded module or a second copy of one (what the old routes
    # module did: the twin held it after connect() dropped it, inbound loaded another).
    assert json.loads(dev.output.split("AFTER_NEW ", 1)[1].splitlines()[0]) == []
    # Setting the handlers loads none of the inbound path: it comes with the first message
    # (here the twin re-sync), after connect() dropped its own code (the peak of a connect).
    assert json.loads(dev.output.split("HANDLERS_SET ", 1)[1].splitlines()[0]) == []
    assert json.loads(dev.output.split("HELD ", 1)[1].splitlines()[0]) == []
    # The texts of what the handler path refuses (iothub.inerr) load only with a bad packet.
    assert json.loads(dev.output.split("TEXTS ", 1)[1].splitlines()[0]) is False
    # The client keeps a minimal record of its TLS configuration (what handshake errors
    # name); tls_info() rebuilds the full one (with tlsdesc, not the configuration code)
    # and drops the modules it loaded for that; it asks the TLS socket for the cipher
    # (linkopen, connection-time code, is not loaded for it).
    kept, conf, loaded = json.loads(dev.output.split("TLSINFO ", 1)[1].splitlines()[0])
    if cfg.get("client_kind") != "aio":
        # (the offered suites too, as a bit mask, only when the firmware lacks some)
        assert sorted(kept) == ["mfl", "profile", "roots"], kept
        assert kept["roots"] == [{"name": "custom"}]
    assert conf["profile"] == emu.profile and conf["verify"] == "CERT_REQUIRED"
    assert conf["suites"] and all(expected in s for s in conf["suites"])
    root_sha = hashlib.sha256(pathlib.Path(cfg["root"]).read_bytes()).hexdigest().upper()
    assert conf["roots"] == [{"name": "custom", "sha256": root_sha}]
    assert conf["client_cert"] is None
    assert conf["mfl"] == {"requested": False, "size": None, "reason": "not asked for"}
    assert loaded == []
    info = emu.connect_info(cfg["device_id"])
    assert info["api_version"] == "2021-04-12"
    assert info["clean_session"] is False and info["keepalive"] == 240
    assert info["sni"] == emu.hostname


@pytest.mark.parametrize("kind", ["ec256", "rsa2048"])
def test_round_trip_x509(ecc_emu, tmp_path, kind, client_kind):
    cfg, sha256 = x509_cfg(ecc_emu, tmp_path, kind)
    cfg["client_kind"] = client_kind
    dev = run_round_trip(ecc_emu, cfg)
    _, conf, _ = json.loads(dev.output.split("TLSINFO ", 1)[1].splitlines()[0])
    assert conf["client_cert"]["sha256"] == sha256.upper()  # rebuilt by tls_info()
    info = ecc_emu.connect_info(cfg["device_id"])
    assert info["auth"].startswith("x509")
    conn = [c for c in ecc_emu.endpoint.connections if c.client_cert_sha256 == sha256]
    assert conn, "the hub saw no TLS client certificate with the device's thumbprint"


def test_x509_ca_signed(ecc_emu, tmp_path, client_kind):
    cfg, _ = x509_cfg(ecc_emu, tmp_path, "ec256", ca="device-ca")
    cfg["client_kind"] = client_kind
    out = mpyrun.run(
        "CFG=%r\nimport devkit\nc=devkit.client(CFG)\nc.connect()\nc.send(b'x')\nc.disconnect()\nprint('OK')"
        % cfg
    )
    assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr
    assert ecc_emu.telemetry(cfg["device_id"])[0]["payload"] == b"x"


def test_module_identity_and_model_id(ecc_emu, client_kind):
    device_id = new_id("edge")
    ecc_emu.add_device(device_id)
    cfg = sas_cfg(
        ecc_emu,
        device_id,
        module_id="filter",
        model_id="dtmi:com:example:Thermostat;1",
        client_kind=client_kind,
    )
    run_round_trip(ecc_emu, cfg, module_id="filter")
    msgs = ecc_emu.telemetry(device_id)
    assert msgs and all(m["module_id"] == "filter" for m in msgs)
    assert msgs[0]["topic"].startswith("devices/%s/modules/filter/messages/events/" % device_id)
    info = ecc_emu.connect_info(device_id, "filter")
    assert info["client_id"] == device_id + "/filter"
    assert info["model_id"] == "dtmi:com:example:Thermostat;1"
    assert "model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1" in info["username"]


def test_methods_unknown_and_raising_handler(ecc_emu, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    body = r"""
import devkit
c = devkit.client(CFG)
def on_method(name, payload):
    if name == "fail":
        raise RuntimeError("boom")
    return 200, None
c.on_method = on_method
c.connect()
print("READY")
for _ in range(60):
    c.poll(100)
print("ALIVE", c.is_connected)
"""
    dev = DeviceProcess(body, cfg)
    try:
        dev.expect("READY")
        assert ecc_emu.wait_connected(cfg["device_id"])
        status, payload = ecc_emu.invoke_method(cfg["device_id"], "fail", {}, timeout=10)
        assert status == 500 and "boom" in payload["error"]
        status, payload = ecc_emu.invoke_method(cfg["device_id"], "ok", None, timeout=10)
        assert status == 200 and payload is None
        assert dev.expect("ALIVE") == "True"
    finally:
        dev.kill()
    # a device with no method handler is not subscribed: the hub answers 404 for it
    cfg2 = sas_cfg(ecc_emu, client_kind=client_kind)
    dev2 = DeviceProcess(
        "import devkit\nc=devkit.client(CFG)\nc.connect()\nprint('READY')\nc.poll(3000)\n", cfg2
    )
    try:
        dev2.expect("READY")
        status, _ = ecc_emu.invoke_method(cfg2["device_id"], "any", {}, timeout=2)
        assert status == 404
    finally:
        dev2.kill()


def test_handler_set_after_connect_subscribes(ecc_emu, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    body = r"""
import devkit
c = devkit.client(CFG)
c.connect()
got = []
c.on_message = lambda m: got.append(m)
print("READY")
for _ in range(50):
    c.poll(100)
    if got:
        break
print("GOT", got[0].body.decode() if got else None)
"""
    dev = DeviceProcess(body, cfg)
    try:
        dev.expect("READY")
        ecc_emu.send_c2d(cfg["device_id"], b"late")
        assert dev.expect("GOT") == "late"
    finally:
        dev.kill()


def test_handler_set_to_none_unsubscribes(ecc_emu, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    body = r"""
import devkit
c = devkit.client(CFG)
c.on_message = lambda m: print("C2D", m.body)
c.on_method = lambda name, payload: (200, None)
c.on_desired = lambda patch, version: None
c.connect()
c.on_method = c.on_method  # replacing a handler keeps the subscription
print("READY")
c.poll(200)
c.on_message = None
c.on_method = None
c.on_desired = None
c.on_method = None  # already unset: nothing more goes out
print("UNSET")
c.poll(60000)
"""
    dev = DeviceProcess(body, cfg)
    device_id = cfg["device_id"]
    try:
        dev.expect("READY")
        assert ecc_emu.wait_connected(device_id)
        assert ecc_emu.invoke_method(device_id, "m", {}, timeout=10)[0] == 200
        dev.expect("UNSET")
        subs = ("devices/%s/messages/devicebound/#" % device_id, "$iothub/methods/POST/#")
        for flt in subs + ("$iothub/twin/PATCH/properties/desired/#",):
            ecc_emu.wait_event(lambda ev, f=flt: ev[2] == "unsubscribe" and f in ev[3])
        unsub = [ev[3] for ev in ecc_emu.events if ev[2] == "unsubscribe"]
        # the twin responses stay subscribed: connect() read the twin and may again
        assert sorted(unsub) == sorted(
            [[subs[0]], [subs[1]], ["$iothub/twin/PATCH/properties/desired/#"]]
        ), unsub
        # what the hub now does for this device: no method route (404)
        assert ecc_emu.invoke_method(device_id, "m", {}, timeout=2)[0] == 404
    finally:
        dev.kill()


def device_error(cfg, body):
    """Run body on the device; return the repr of the exception it raised (printed)."""
    code = (
        "CFG=%r\nimport devkit, iothub\ntry:\n%s\nexcept Exception as e:\n    print('ERR', type(e).__name__, e)\n"
        % (
            cfg,
            "\n".join("    " + ln for ln in body.strip().splitlines()),
        )
    )
    out = mpyrun.run(code, timeout=60)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("ERR")]
    assert lines, out.stdout + out.stderr
    return lines[-1][4:]


def test_wrong_key_is_an_authentication_error(ecc_emu, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    good = cfg["cs"].split("SharedAccessKey=")[1]
    cfg["cs"] = cfg["cs"].replace(good, "AAAA" + good[4:])
    err = device_error(cfg, "devkit.client(CFG).connect()")
    assert err.startswith("AuthenticationError") and "CONNACK 5" in err
    assert good not in err and good[4:] not in err


def test_expired_token_is_refused(pki, tmp_path, client_kind):
    # the hub's clock is two hours ahead: the device's fresh token is already expired there
    with Emulator(str(tmp_path), profile="ecc", pki=pki, clock=lambda: time.time() + 7200) as e:
        cfg = sas_cfg(e, client_kind=client_kind)
        err = device_error(cfg, "devkit.client(CFG).connect()")
        assert err.startswith("AuthenticationError")
        assert any(ev[2] == "connack" and ev[3] == 5 for ev in e.events)


@pytest.mark.parametrize(
    "cs, needle",
    [
        ("HostName=h;DeviceId=d", "SharedAccessKey"),
        ("DeviceId=d;SharedAccessKey=YWJj", "HostName"),
        ("HostName=h;DeviceId=d;SharedAccessKey=YWJj;DeviceId=e", "DeviceId"),
        ("HostName=h;DeviceId=d;SharedAccessKey=YWJj;Color=blue", "segment 4 is not a known field"),
        ("HostName=h;DeviceId=d;SharedAccessKey=not*base64!", "base64"),
        ("garbage", "="),
    ],
)
def test_malformed_connection_strings_on_device(ecc_emu, cs, needle, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    cfg["cs"] = cs
    err = device_error(cfg, "devkit.client(CFG)")
    assert err.startswith("ConfigError") and needle in err
    assert "not*base64!" not in err


def test_oversize_message_is_refused_before_sending(ecc_emu, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    err = device_error(cfg, "c = devkit.client(CFG)\nc.connect()\nc.send(b'x' * 262145)")
    assert err.startswith("ConfigError") and "262144" in err
    assert ecc_emu.telemetry(cfg["device_id"]) == []


@pytest.mark.parametrize(
    "raw, needle",
    [
        (b"\x30\xff\xff\xff\xff\x7f", "remaining length"),
        (b"\x10\x02\x00\x04", "CONNECT"),
        (b"\x36\x05\x00\x01a\x00\x01", "QoS"),
    ],
)
def test_malformed_packets_from_the_hub(ecc_emu, raw, needle):
    # blocking only: poll() raising the fatal error (see the module's docstring)
    cfg = sas_cfg(ecc_emu, auto_reconnect=False)
    body = r"""
import devkit
c = devkit.client(CFG)
c.connect()
print("READY")
try:
    for _ in range(50):
        c.poll(100)
    print("ERR none")
except Exception as e:
    print("ERR", type(e).__name__, e)
print("CONNECTED", c.is_connected)
"""
    dev = DeviceProcess(body, cfg)
    try:
        dev.expect("READY")
        assert ecc_emu.wait_connected(cfg["device_id"])
        ecc_emu.send_raw(cfg["device_id"], raw)
        err = dev.expect("ERR")
        assert err.startswith("ProtocolError") and needle.lower() in err.lower(), err
        assert dev.expect("CONNECTED") == "False"
        assert dev.wait() == 0
    finally:
        dev.kill()
    assert ecc_emu.wait_disconnect(cfg["device_id"], timeout=10)


def test_puback_timeout_keeps_the_message_queued(ecc_emu, client_kind):
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    ecc_emu.faults.delay_puback_s = 2.5
    try:
        body = r"""
import devkit, iothub
c = devkit.client(CFG)
c.connect()
try:
    c.send(b"slow", timeout_ms=1000)
    print("ERR none")
except iothub.Timeout as e:
    print("ERR", e)
print("QUEUED", c.queued)
for _ in range(40):
    c.poll(100)
    if not c.queued:
        break
print("QUEUED", c.queued)
"""
        out = mpyrun.run("CFG=%r\n" % cfg + body, timeout=60)
    finally:
        ecc_emu.faults.delay_puback_s = 0
    lines = out.stdout.splitlines()
    assert any(ln.startswith("ERR no PUBACK") for ln in lines), out.stdout + out.stderr
    assert [ln for ln in lines if ln.startswith("QUEUED")] == ["QUEUED 1", "QUEUED 0"]
    assert [m["payload"] for m in ecc_emu.telemetry(cfg["device_id"])] == [b"slow"]


def test_dead_link_detected_by_missing_pingresp(ecc_emu):
    # blocking only: poll() raising the fatal error (see the module's docstring)
    cfg = sas_cfg(ecc_emu, keepalive=2, auto_reconnect=False)
    body = r"""
import devkit, time
c = devkit.client(CFG)
c.connect()
print("READY")
t0 = time.ticks_ms()
try:
    while time.ticks_diff(time.ticks_ms(), t0) < 15000:
        c.poll(200)
    print("ERR none")
except Exception as e:
    print("ERR", type(e).__name__, e)
print("AFTER_MS", time.ticks_diff(time.ticks_ms(), t0))
"""
    dev = DeviceProcess(body, cfg)
    try:
        dev.expect("READY")
        ecc_emu.faults.stall = True
        err = dev.expect("ERR")
        after = int(dev.expect("AFTER_MS"))
    finally:
        ecc_emu.faults.stall = False
        dev.kill()
    assert err.startswith("ConnectionLost") and "PINGRESP" in err
    assert after <= 2000 + 1000 + 1500, after  # ping due at 2 s, dead after 1 s more (+ slack)


def test_records_per_packet_one(ecc_emu, client_kind):
    """Each MQTT packet the device sends is one TLS record (one write)."""
    cfg = sas_cfg(ecc_emu, client_kind=client_kind)
    before = len(ecc_emu.endpoint.connections)
    code = "CFG=%r\n" % cfg + (
        "import devkit\nc = devkit.client(CFG)\nc.connect()\n"
        "for i in range(5):\n    c.send({'i': i}, properties={'a': '1', 'b': '2'})\n"
        "c.disconnect()\nprint('OK')\n"
    )
    out = mpyrun.run(code, timeout=60)
    assert out.stdout.strip().endswith("OK"), out.stdout + out.stderr
    conn = ecc_emu.endpoint.connections[before]
    conn.closed.wait(5)
    # after the handshake: CONNECT + 5 PUBLISH + DISCONNECT = 7 application-data records
    app_records = conn.records_in - conn.handshake_records_in
    assert app_records == 7, (conn.records_in, conn.handshake_records_in)
