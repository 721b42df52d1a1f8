"""The DPS emulator on CPython: enrollment store and CLI, MQTT edge cases seen through paho over
TLS, and a fidelity check with the official python SDK's ProvisioningDeviceClient
(azure-iot-device 2.14.0): where it and the emulator disagree, the emulator is wrong.

The SDK dials port 8883 of `provisioning_host`; the tests give it `localhost` (a name the
test PKI's server certificate carries) and redirect paho's connect() to the emulator's port on
127.0.0.1, so nothing leaves loopback.
"""

import datetime
import json
import os
import queue
import ssl
import threading
import time

import paho.mqtt.client as pmqtt
import pytest

from iothub import sas as device_sas
from iothub_emulator import Emulator, dps_cli
from iothub_emulator.dps import DPSEmulator
from iothub_emulator.dps_store import EnrollmentError, Store, derive_device_key

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.filterwarnings("ignore:ssl.PROTOCOL_TLSv1_2 is deprecated:DeprecationWarning"),
]


@pytest.fixture
def emus(pki, tmp_path):
    hub = Emulator(str(tmp_path), pki=pki).start()
    dps = DPSEmulator(str(tmp_path), hub, retry_after=0).start()
    yield hub, dps
    dps.stop()
    hub.stop()


# ---- store and CLI --------------------------------------------------------------------------


def test_store_persists_hides_keys_and_validates(tmp_path):
    s = Store(str(tmp_path))
    key = s.add_individual("Dev-1", device_id="hub-dev-1")
    gkey = s.add_group("g1")
    assert s.add_individual("dev-2", key=key) is None  # given keys are not "generated"
    listing = s.listing()
    assert {e["id"] for e in listing} == {"Dev-1", "dev-2", "g1"}
    assert key not in json.dumps(listing) and gkey not in json.dumps(listing)
    # registration ids are case-insensitive, as in DPS
    assert Store(str(tmp_path)).get_individual("DEV-1")["device_id"] == "hub-dev-1"
    s.set_enabled(False, group_id="g1")
    assert Store(str(tmp_path)).group_list()[0]["enabled"] is False
    for bad in (
        lambda: s.add_individual("bad id"),
        lambda: s.add_individual("dev.", key=key),
        lambda: s.add_individual("dev", key="not base64!"),
        lambda: s.add_individual("dev", key="QUJD"),  # 3 bytes
        lambda: s.add_individual("dev", x509_thumbprint="12AB"),
        lambda: s.add_individual("dev", key=key, x509_thumbprint="AB" * 20),
        lambda: s.add_group("g/1"),
        lambda: s.add_group("g2", x509_ca=b"not a certificate"),
        lambda: s.set_enabled(True, registration_id="nobody"),
    ):
        with pytest.raises(EnrollmentError):
            bad()


def test_derived_key_agrees_with_device_and_known_value():
    # same derivation in the emulator (hmac module) and on the device (our HMAC on hashlib)
    gk = "NMgJDvdKTxjLi+xBxxkDDEwDJxEvOE5u8BiT0mVgPeg="
    assert derive_device_key(gk, "sensor-42") == device_sas.derive_device_key(gk, "sensor-42")
    assert derive_device_key(gk, "a") != derive_device_key(gk, "b")


def test_cli_enrollment_commands(tmp_path, capsys, emus):
    hub, dps = emus
    state = str(tmp_path)  # the running emulators' state dir
    assert dps_cli.main(["--state", state, "enrollment", "add-group", "line-9"]) == 0
    out = capsys.readouterr().out
    gkey = out.split("generated group key: ")[1].split()[0]
    assert dps_cli.main(["--state", state, "enrollment", "compute-key", "--key", gkey, "s-1"]) == 0
    assert capsys.readouterr().out.strip() == device_sas.derive_device_key(gkey, "s-1")
    assert dps_cli.main(["--state", state, "enrollment", "add", "ind-1", "--key", gkey[:44]]) == 0
    ca = dps.pki.device_ca_pem_path  # (tests share one PKI outside the state dir)
    assert dps_cli.main(["--state", state, "enrollment", "add-group", "xg", "--x509-ca", ca]) == 0
    assert dps_cli.main(["--state", state, "enrollment", "disable", "ind-1"]) == 0
    capsys.readouterr()
    assert dps_cli.main(["--state", state, "enrollment", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(ln.split()[:4] == ["group", "line-9", "symmetric", "enabled"] for ln in lines)
    assert any(ln.split()[:4] == ["individual", "ind-1", "symmetric", "DISABLED"] for ln in lines)
    xg = [ln for ln in lines if ln.split()[1] == "xg"][0]
    assert xg.split()[-1] == dps.enrollments()[-1]["ca_sha256"]  # the PKI's device CA
    assert gkey not in "\n".join(lines)
    # the running DPS sees what the CLI wrote
    assert {e["id"] for e in dps.enrollments()} == {"line-9", "ind-1", "xg"}
    assert dps.derived_key("line-9", "s-1") == device_sas.derive_device_key(gkey, "s-1")
    # errors: message and exit code 2, nothing written
    assert dps_cli.main(["--state", state, "enrollment", "add", "bad id"]) == 2
    assert "registration id" in capsys.readouterr().err
    assert dps_cli.main(["--state", state, "enrollment", "enable"]) == 2
    assert (
        dps_cli.main(
            ["--state", str(tmp_path / "fresh"), "enrollment", "add-group", "x", "--x509-ca"]
        )
        == 2
    )
    assert "no device CA" in capsys.readouterr().err


# ---- MQTT edge cases through paho -----------------------------------------------------------


class Paho:
    """A raw MQTT client over TLS to the DPS emulator (paho-mqtt 1.x, as azure-iot-device pins)."""

    def __init__(self, dps, client_id, username, password=None):
        self.msgs = queue.Queue()
        self.subacks = queue.Queue()
        self.closed = queue.Queue()
        c = pmqtt.Client(client_id=client_id, clean_session=True)
        c.username_pw_set(username, password)
        ctx = ssl.create_default_context(cafile=dps.root_pem_path)
        c.tls_set_context(ctx)
        c.tls_insecure_set(False)
        c.on_message = lambda cl, u, m: self.msgs.put((m.topic, m.payload))
        c.on_subscribe = lambda cl, u, mid, granted: self.subacks.put(list(granted))
        c.on_disconnect = lambda cl, u, rc: self.closed.put(rc)
        self.rc = queue.Queue()
        c.on_connect = lambda cl, u, flags, rc: self.rc.put(rc)
        self.c = c
        self.port = dps.port

    def connect(self):
        self.c.connect("localhost", self.port, 30)
        self.c.loop_start()
        return self.rc.get(timeout=10)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _token(dps, rid, key):
    uri = device_sas.dps_resource_uri(dps.id_scope, rid)
    return device_sas.sas_token(uri, key, int(dps.clock()) + 600)


def test_mqtt_edges(emus):
    hub, dps = emus
    key = dps.add_enrollment("edge-1")
    user = "%s/registrations/edge-1/api-version=2019-03-31" % dps.id_scope
    p = Paho(dps, "edge-1", user, _token(dps, "edge-1", key))
    assert p.connect() == 0
    try:
        p.c.subscribe([("$dps/registrations/res/#", 1), ("devices/edge-1/#", 1)])
        assert p.subacks.get(timeout=10) == [1, 0x80]
        # a body naming another registration id: 400
        p.c.publish("$dps/registrations/PUT/iotdps-register/?$rid=r1", '{"registrationId":"x"}', 1)
        topic, body = p.msgs.get(timeout=10)
        assert topic == "$dps/registrations/res/400/?$rid=r1"
        assert json.loads(body)["errorCode"] == 400004 and json.loads(body)["trackingId"]
        # status of an operation nobody started: 404
        p.c.publish(
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=r2&operationId=4.x.y", b"", 1
        )
        topic, body = p.msgs.get(timeout=10)
        assert topic == "$dps/registrations/res/404/?$rid=r2"
        # the real flow, by hand
        p.c.publish(
            "$dps/registrations/PUT/iotdps-register/?$rid=r3", '{"registrationId":"edge-1"}', 1
        )
        topic, body = p.msgs.get(timeout=10)
        assert topic == "$dps/registrations/res/202/?$rid=r3&retry-after=0"
        op = json.loads(body)
        assert op["status"] == "assigning" and op["operationId"].startswith("4.")
        p.c.publish(
            "$dps/registrations/GET/iotdps-get-operationstatus/?operationId=%s&$rid=r4"
            % op["operationId"],
            b"",
            1,
        )
        topic, body = p.msgs.get(timeout=10)
        assert topic == "$dps/registrations/res/200/?$rid=r4"
        st = json.loads(body)["registrationState"]
        assert st["assignedHub"] == hub.hostname and st["deviceId"] == "edge-1"
        assert st["symmetricKey"] == {} and st["createdDateTimeUtc"].endswith("Z")
        # a publish to a topic DPS does not know closes the connection
        p.c.publish("devices/edge-1/messages/events/", b"x", 1)
        p.closed.get(timeout=10)
    finally:
        p.close()
    ev = dps.wait_event(lambda e: e[1] == "edge-1" and e[2] == "disconnect")
    assert "not a DPS request topic" in ev[3]


@pytest.mark.parametrize(
    "cid, user, rc",
    [
        (
            "r1",
            "{scope}/registrations/r2/api-version=2019-03-31",
            2,
        ),  # client id != registration id
        ("r1", "{scope}/registrations/r1", 4),  # no api-version
        ("r1", "emulated-hub.azure-devices.net/r1/?api-version=2021-04-12", 4),  # a hub user name
        ("r1", "0neOTHER/registrations/r1/api-version=2019-03-31", 5),  # unknown ID scope
    ],
)
def test_connect_refusals(emus, cid, user, rc):
    hub, dps = emus
    p = Paho(dps, cid, user.format(scope=dps.id_scope), "x")
    try:
        got = p.connect()
    finally:
        p.close()
    assert got != 0
    ev = dps.wait_event(lambda e: e[2] == "connack" and e[3] != 0)
    assert ev[3] == rc


# ---- fidelity: the official SDK against the DPS emulator ------------------------------------


@pytest.fixture
def sdk(emus, monkeypatch):
    pytest.importorskip("azure.iot.device")
    hub, dps = emus
    real_connect = pmqtt.Client.connect

    def connect(self, host, port=1883, *a, **kw):
        assert host == "localhost" and port == 8883, (host, port)
        return real_connect(self, "127.0.0.1", dps.port, *a, **kw)

    monkeypatch.setattr(pmqtt.Client, "connect", connect)
    with open(dps.root_pem_path) as f:
        ca = f.read()
    before = set(threading.enumerate())
    yield hub, dps, ca
    # After a failed register() the SDK keeps its connection; when the emulator goes away it
    # starts a reconnect timer (a non-daemon threading.Timer) that the interpreter would
    # wait for at exit. Close the DPS side now and cancel what the SDK starts.
    dps.stop()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        for t in set(threading.enumerate()) - before:
            if isinstance(t, threading.Timer):
                t.cancel()
        time.sleep(0.05)


def test_sdk_symmetric_group_registration(sdk):
    from azure.iot.device import ProvisioningDeviceClient

    hub, dps, ca = sdk
    dps.retry_after = 1
    gk = dps.add_group("sdk-group", allocation_payload={"hello": "sdk"})
    client = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host="localhost",
        registration_id="sdk-dev-1",
        id_scope=dps.id_scope,
        symmetric_key=derive_device_key(gk, "sdk-dev-1"),
        server_verification_cert=ca,
    )
    client.provisioning_payload = {"modelId": "dtmi:com:example:Thermostat;1"}
    result = client.register()
    assert result.status == "assigned"
    st = result.registration_state
    assert st.assigned_hub == hub.hostname and st.device_id == "sdk-dev-1"
    assert st.sub_status == "initialAssignment"
    assert json.loads(st.response_payload) == {"hello": "sdk"}
    c = [e for e in dps.events if e[1] == "sdk-dev-1" and e[2] == "connect"][0][3]
    assert c["auth"] == "sas" and c["api_version"] == "2019-03-31"
    assert "&ClientVersion=azure-iot-device-provisioning-py" in c["username"]
    reg = dps.registration("sdk-dev-1")
    assert reg["devicePayload"] == {"modelId": "dtmi:com:example:Thermostat;1"}
    assert hub.device_key("sdk-dev-1") == derive_device_key(gk, "sdk-dev-1")
    # the SDK waited the retry-after before its status query
    evs = [e for e in dps.events if e[1] == "sdk-dev-1"]
    t_reply = [e[0] for e in evs if e[2] == "reply"][0]
    t_query = [e[0] for e in evs if e[2] == "query"][0]
    assert t_query - t_reply >= 0.9


def _issue_chain(pki, tmp_path, cn):
    """leaf (CN = cn) <- intermediate <- the PKI's device CA; files for the SDK."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = serialization.load_pem_private_key(
        open(os.path.join(pki.state_dir, "pki", "device-ca-key.pem"), "rb").read(), None
    )
    ca = x509.load_der_x509_certificate(pki.device_ca_der)
    now = datetime.datetime.now(datetime.timezone.utc)

    def build(name, pub, signer, issuer, is_ca):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ik = ec.generate_private_key(ec.SECP256R1())
    inter = build("Emulated Device Intermediate", ik.public_key(), ca_key, ca.subject, True)
    lk = ec.generate_private_key(ec.SECP256R1())
    leaf = build(cn, lk.public_key(), ik, inter.subject, False)
    pem = serialization.Encoding.PEM
    chain = tmp_path / (cn + "-chain.pem")
    chain.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    key = tmp_path / (cn + "-key.pem")
    key.write_bytes(
        lk.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(chain), str(key)


def test_sdk_x509_group_with_intermediate_chain(sdk, pki, tmp_path):
    from azure.iot.device import X509, ProvisioningDeviceClient

    hub, dps, ca = sdk
    dps.add_group("x509-line", x509_ca=True)
    chain, key = _issue_chain(pki, tmp_path, "sdk-x509-1")
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host="localhost",
        registration_id="sdk-x509-1",
        id_scope=dps.id_scope,
        x509=X509(cert_file=chain, key_file=key),
        server_verification_cert=ca,
    )
    result = client.register()
    assert result.status == "assigned" and result.registration_state.device_id == "sdk-x509-1"
    conn = dps.connections[-1]
    assert len(conn.client_cert_chain_der) == 2  # the SDK sent leaf + intermediate
    # the hub now accepts that leaf by its thumbprint (the emulated hub checks direct issuance only)
    assert hub.registry.get("sdk-x509-1")["thumbprints"] == [conn.client_cert_sha256]
    # without the intermediate the leaf does not chain to the group's CA: 401
    leaf_only = tmp_path / "leaf-only.pem"
    leaf_only.write_bytes(
        open(chain, "rb").read().split(b"-----END CERTIFICATE-----")[0]
        + b"-----END CERTIFICATE-----\n"
    )
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        provisioning_host="localhost",
        registration_id="sdk-x509-1",
        id_scope=dps.id_scope,
        x509=X509(cert_file=str(leaf_only), key_file=key),
        server_verification_cert=ca,
    )
    with pytest.raises(Exception) as ei:
        client.register()
    assert "401" in repr(ei.value) or "401" in str(ei.value.__cause__)


def test_start_dps_for_serve(emus, tmp_path):
    import argparse

    hub, _ = emus
    p = argparse.ArgumentParser()
    dps_cli.add_serve_options(p)
    assert dps_cli.start_dps(hub, p.parse_args([])) is None  # no --dps-port: no DPS
    dps = dps_cli.start_dps(hub, p.parse_args(["--dps-port", "0", "--id-scope", "0neTEST"]))
    try:
        info = json.loads((tmp_path / dps_cli.STATE_FILE).read_text())
        assert info["port"] == dps.port and info["id_scope"] == "0neTEST"
        assert info["hostname"] == "global.azure-devices-provisioning.net"
    finally:
        dps.stop()
