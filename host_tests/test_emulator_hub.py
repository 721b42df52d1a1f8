"""The emulator's IoT Hub semantics over real TLS on loopback, driven by paho-mqtt 1.6.1 and by a
raw MQTT client (for what paho will not do: withhold PUBACKs, skip pings, send malformed bytes)."""

import json
import queue
import socket
import ssl
import threading
import time

import paho.mqtt.client as pmqtt
import pytest
from test_emulator_units import _pkt, _s, connect_bytes

from iothub_emulator import Emulator
from iothub_tool.sas import resource_uri, sas_token

HUB_API = "2021-04-12"


@pytest.fixture
def emu(pki, tmp_path):
    e = Emulator(str(tmp_path), pki=pki).start()
    yield e
    e.stop()


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.close()


def token_for(emu, device_id, key, module_id=None, ttl=3600):
    return sas_token(resource_uri(emu.hostname, device_id, module_id), key, int(time.time()) + ttl)


def username_for(emu, cid, query="?api-version=" + HUB_API):
    return "%s/%s/%s" % (emu.hostname, cid, query)


class Device:
    """paho-mqtt client on its network thread, without automatic reconnect: the thread ends at the
    first disconnect or refused CONNACK (then `gone` is set)."""

    def __init__(
        self,
        emu,
        device_id,
        key=None,
        *,
        module_id=None,
        token=None,
        username=None,
        client_id=None,
        cert=None,
        clean=False,
        keepalive=60,
    ):
        self.emu = emu
        cid = client_id or (device_id if not module_id else device_id + "/" + module_id)
        self.c = pmqtt.Client(client_id=cid, clean_session=clean, protocol=pmqtt.MQTTv311)
        if token is None and key is not None:
            token = token_for(emu, device_id, key, module_id)
        self.c.username_pw_set(username if username is not None else username_for(emu, cid), token)
        ctx = ssl.create_default_context(cafile=emu.root_pem_path)
        if cert:
            ctx.load_cert_chain(cert[0], cert[1])
        self.c.tls_set_context(ctx)
        self.keepalive = keepalive
        self.messages = queue.Queue()
        self.connack = queue.Queue()
        self.suback = queue.Queue()
        self.gone = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda cl, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda cl, u, mid, granted: self.suback.put(granted)

    def _on_connect(self, cl, u, flags, rc):
        self.connack.put((rc, flags.get("session present")))
        if rc:
            self._on_disconnect(cl, u, rc)

    def _on_disconnect(self, cl, u, rc):
        cl.loop_stop()  # from the network thread: only marks it to end, so paho does not reconnect
        self.gone.set()

    def connect(self, timeout=5):
        self.c.connect("127.0.0.1", self.emu.port, self.keepalive)
        self.c.loop_start()
        return self.connack.get(timeout=timeout)

    def subscribe(self, *filters, qos=1):
        self.c.subscribe([(f, qos) for f in filters])
        return self.suback.get(timeout=5)

    def publish(self, topic, payload=b"", qos=1, wait=True):
        info = self.c.publish(topic, payload, qos)
        if wait and qos:
            info.wait_for_publish(5)
            assert info.is_published(), "no PUBACK for %s" % topic
        return info

    def next(self, timeout=5):
        return self.messages.get(timeout=timeout)

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        self.c.loop_stop()


class Raw:
    """A bare MQTT client over TLS: writes exactly the bytes given, reads packets as bytes."""

    def __init__(self, emu, cert=None):
        ctx = ssl.create_default_context(cafile=emu.root_pem_path)
        if cert:
            ctx.load_cert_chain(cert[0], cert[1])
        sock = socket.create_connection(("127.0.0.1", emu.port), timeout=5)
        self.s = ctx.wrap_socket(sock, server_hostname=emu.hostname)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def packet(self, timeout=5):
        """(first byte, body) of the next packet; None when the server closed the connection."""
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, mult, i = 0, 1, 1
                while i < len(self.buf):
                    n += (self.buf[i] & 0x7F) * mult
                    mult *= 128
                    i += 1
                    if not self.buf[i - 1] & 0x80:
                        if len(self.buf) >= i + n:
                            first, body = self.buf[0], self.buf[i : i + n]
                            self.buf = self.buf[i + n :]
                            return first, body
                        break
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet within %.1f s" % timeout)
            self.s.settimeout(left)
            try:
                data = self.s.recv(65536)
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                return None
            self.buf += data

    def connect(self, cid, user, password, clean=False, keepalive=60, will=None):
        self.send(connect_bytes(cid, user, password, clean, keepalive, will))
        p = self.packet()
        assert p is not None and p[0] == 0x20, p
        return p[1][0], p[1][1]  # session present, return code

    def closed_within(self, timeout):
        try:
            while True:
                if self.packet(timeout) is None:
                    return True
        except TimeoutError:
            return False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def raw_connect(emu, device_id, password, cid=None, user=None, **kw):
    r = Raw(emu, kw.pop("cert", None))
    cid = cid or device_id
    return r, r.connect(cid, user if user is not None else username_for(emu, cid), password, **kw)


def last(emu, name, event):
    evs = [e for e in emu.events if e[1] == name and e[2] == event]
    return evs[-1][3] if evs else None


# ---- CONNECT checks -----------------------------------------------------------------------------


def test_sas_connect_records_api_version_model_id_and_client_type(emu, clients):
    key = emu.add_device("dev1")
    user = username_for(
        emu,
        "dev1",
        "?api-version=2020-09-30&DeviceClientType=iothubclient%2f1.9.0%20(native)&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
    )
    d = Device(emu, "dev1", key, username=user)
    clients.append(d)
    assert d.connect() == (0, 0)
    assert emu.wait_connected("dev1", 2)
    info = emu.connect_info("dev1")
    assert info["api_version"] == "2020-09-30"
    assert info["model_id"] == "dtmi:com:example:Thermostat;1"
    assert info["device_client_type"] == "iothubclient/1.9.0 (native)"
    assert info["auth"] == "sas" and info["clean_session"] is False and info["keepalive"] == 60
    assert info["version"] == "TLSv1.2"
    assert emu.connected("dev1")


@pytest.mark.parametrize("query", ["?api-version=" + HUB_API, "api-version=2016-11-14", ""])
def test_username_forms_accepted(emu, clients, query):
    key = emu.add_device("dev1")
    user = "%s/dev1/%s" % (emu.hostname, query) if query else "%s/dev1" % emu.hostname
    r, (sp, rc) = raw_connect(emu, "dev1", token_for(emu, "dev1", key).encode(), user=user)
    clients.append(r)
    assert rc == 0


def test_connect_refusals_with_reasons(emu, clients):
    key = emu.add_device("dev1")
    other = emu.add_device("dev2")
    emu.add_device("xdev", x509_thumbprint="A" * 40)
    pol = emu.add_policy("device")
    host = emu.hostname
    now = int(time.time())
    good = token_for(emu, "dev1", key)
    cases = [
        ("wrong key", "dev1", None, token_for(emu, "dev1", other), 5, "signature does not match"),
        (
            "expired",
            "dev1",
            None,
            sas_token(resource_uri(host, "dev1"), key, now - 1),
            5,
            "expired",
        ),
        (
            "wrong host in sr",
            "dev1",
            None,
            sas_token(resource_uri("other.azure-devices.net", "dev1"), key, now + 60),
            5,
            "not this hub",
        ),
        ("other device in sr", "dev1", None, token_for(emu, "dev2", key), 5, "does not cover"),
        (
            "unknown skn",
            "dev1",
            None,
            sas_token(host, pol, now + 60, key_name="nope"),
            5,
            "unknown shared access policy",
        ),
        (
            "skn with wrong key",
            "dev1",
            None,
            sas_token(host, key, now + 60, key_name="device"),
            5,
            "signature",
        ),
        ("garbage password", "dev1", None, "hello", 5, "not a SharedAccessSignature"),
        ("no password", "dev1", None, None, 5, "no SAS token"),
        ("unknown device", "ghost", None, token_for(emu, "ghost", key), 5, "unknown identity"),
        ("malformed user name", "dev1", host + "/", good, 4, "malformed user name"),
        (
            "user name of another hub",
            "dev1",
            "other.azure-devices.net/dev1/?api-version=" + HUB_API,
            good,
            5,
            "not this hub",
        ),
        (
            "user name of another device",
            "dev1",
            username_for(emu, "dev2"),
            good,
            5,
            "does not match client id",
        ),
        (
            "SAS for an X.509 device",
            "xdev",
            None,
            token_for(emu, "xdev", key),
            5,
            "authenticates with X.509",
        ),
        ("X.509 device without a certificate", "xdev", None, None, 5, "no client certificate"),
    ]
    for what, dev, user, tok, want_rc, words in cases:
        r, (sp, rc) = raw_connect(emu, dev, tok.encode() if tok else None, user=user)
        assert rc == want_rc, what
        assert r.closed_within(2), what
        r.close()
        reason = last(emu, dev, "connect")["reason"]
        assert words in reason, (what, reason)
    text = json.dumps(emu.events, default=str)
    for secret in (key, other, pol):
        assert secret not in text
    assert "sig=" not in text


def test_sas_encodings_and_policy_tokens_accepted(emu, clients):
    key = emu.add_device("dev1")
    pol = emu.add_policy("device")
    now = int(time.time()) + 600
    import base64
    import hashlib
    import hmac
    from urllib.parse import quote

    def java_style(sr):  # sig, se, sr order; the resource signed as sent
        sig = base64.b64encode(
            hmac.new(
                base64.b64decode(key), ("%s\n%d" % (sr, now)).encode(), hashlib.sha256
            ).digest()
        ).decode()
        return "SharedAccessSignature sig=%s&se=%d&sr=%s" % (quote(sig, safe=""), now, sr)

    tokens = [
        java_style(emu.hostname + "/devices/dev1"),
        java_style(quote(emu.hostname.upper() + "/devices/dev1", safe="").replace("%2F", "%2f")),
        sas_token(emu.hostname, pol, now, key_name="device"),
        sas_token(emu.hostname + "/devices/dev1", pol, now, key_name="device"),
    ]
    for tok in tokens:
        r, (sp, rc) = raw_connect(emu, "dev1", tok.encode())
        assert rc == 0, tok.split("&")[0]
        r.close()


def _cert_files(pki, tmp_path, cn, **kw):
    cert, key, sha1, sha256 = pki.issue_client_cert(cn, **kw)
    cp, kp = (
        tmp_path / (cn + kw.get("ca", "") + ".pem"),
        tmp_path / (cn + kw.get("ca", "") + ".key"),
    )
    cp.write_bytes(cert)
    kp.write_bytes(key)
    return (str(cp), str(kp)), sha1, sha256


def test_x509_by_thumbprint_sha1_or_sha256(emu, pki, tmp_path, clients):
    cert, sha1, sha256 = _cert_files(pki, tmp_path, "xdev1")
    rsa_cert, rsa_sha1, _ = _cert_files(pki, tmp_path, "xdev2", kind="rsa2048")
    emu.add_device("xdev1", x509_thumbprint=sha256.lower())
    emu.add_device("xdev2", x509_thumbprint=":".join(rsa_sha1[i : i + 2] for i in range(0, 40, 2)))
    for dev, c in (("xdev1", cert), ("xdev2", rsa_cert)):
        r, (sp, rc) = raw_connect(emu, dev, None, cert=c)
        clients.append(r)
        assert rc == 0
        assert emu.connect_info(dev)["auth"] == "x509"
    # the other device's certificate is refused
    r, (sp, rc) = raw_connect(emu, "xdev1", None, cert=rsa_cert)
    assert rc == 5 and "thumbprint does not match" in last(emu, "xdev1", "connect")["reason"]
    r.close()


def test_x509_by_device_ca(emu, pki, tmp_path, clients):
    good, _, _ = _cert_files(pki, tmp_path, "cadev", ca="device-ca")
    wrong_cn, _, _ = _cert_files(pki, tmp_path, "someone-else", ca="device-ca")
    self_signed, _, _ = _cert_files(pki, tmp_path, "cadev")
    emu.add_device("cadev", x509_ca=True)
    r, (sp, rc) = raw_connect(emu, "cadev", None, cert=good)
    clients.append(r)
    assert rc == 0 and emu.connect_info("cadev")["auth"] == "x509_ca"
    for cert, words in (
        (wrong_cn, "CN 'someone-else'"),
        (self_signed, "not signed by the registered device CA"),
    ):
        r2, (sp, rc) = raw_connect(emu, "cadev", None, cert=cert)
        assert rc == 5 and words in last(emu, "cadev", "connect")["reason"]
        r2.close()


# ---- telemetry --------------------------------------------------------------------------------


def test_telemetry_properties_decoded_and_acked(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    base = "devices/dev1/messages/events/"
    d.publish(
        base + "$.mid=m1&$.ct=application%2Fjson&$.ce=utf-8&temp%20unit=%C2%B0C&flag",
        b'{"t":21}',
        qos=1,
    )
    d.publish(base + "?%24.cid=c%2f1&a=1%2b2&empty=", b"q0", qos=0)
    d.publish(base, b"\x00\xff", qos=1)
    got = emu.wait_telemetry(3, "dev1")
    assert got[0]["payload"] == b'{"t":21}' and got[0]["qos"] == 1 and got[0]["packet_id"]
    assert got[0]["system_properties"] == {"mid": "m1", "ct": "application/json", "ce": "utf-8"}
    assert got[0]["properties"] == {"temp unit": "°C", "flag": None}
    assert got[1]["system_properties"] == {"cid": "c/1"} and got[1]["properties"] == {
        "a": "1+2",
        "empty": "",
    }
    assert got[1]["qos"] == 0 and got[1]["packet_id"] is None
    assert (
        got[2]["payload"] == b"\x00\xff"
        and got[2]["properties"] == {}
        and got[2]["module_id"] is None
    )
    assert emu.telemetry("other") == []


def test_retained_publish_is_marked_not_stored(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    d.c.publish("devices/dev1/messages/events/", b"r", 1, retain=True).wait_for_publish(5)
    assert emu.wait_telemetry(1, "dev1")[0]["properties"] == {"mqtt-retain": "true"}


@pytest.mark.parametrize(
    "action, words",
    [
        (
            lambda d: d.publish("devices/dev2/messages/events/", b"x", qos=0),
            "another device's topic",
        ),
        (lambda d: d.publish("devices/dev1/messages/devicebound/", b"x", qos=0), "does not accept"),
        (
            lambda d: d.publish("$iothub/twin/PATCH/properties/desired/?$rid=1", b"{}", qos=0),
            "unknown twin operation",
        ),
        (lambda d: d.publish("devices/dev1/messages/events/", b"x", qos=2, wait=False), "QoS 2"),
        (
            lambda d: d.c.subscribe("devices/dev2/messages/devicebound/#", 1),
            "another device's topic",
        ),
        (
            lambda d: d.publish("devices/dev1/messages/events/", b"x" * (256 * 1024 + 1), qos=0),
            "256 KB",
        ),
    ],
    ids=[
        "foreign-telemetry",
        "devicebound",
        "desired-publish",
        "qos2",
        "foreign-subscribe",
        "oversize",
    ],
)
def test_violations_disconnect_with_reason(emu, clients, action, words):
    key = emu.add_device("dev1")
    emu.add_device("dev2")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    action(d)
    assert d.gone.wait(5)
    reason = emu.wait_disconnect("dev1", 5)
    assert words in reason


def test_unknown_filter_refused_and_five_subscriptions_max(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    assert d.subscribe("$iothub/#", "$iothub/twin/res/#") == (128, 1)
    assert d.subscribe(
        "$iothub/methods/POST/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "devices/dev1/messages/devicebound/#",
        qos=2,
    ) == (1, 1, 1)
    assert d.subscribe("devices/+/messages/devicebound/#", qos=0) == (0,)  # the fifth
    assert d.subscribe("devices/dev1/messages/devicebound/#", qos=1) == (
        1,
    )  # re-subscribe: still five
    assert emu.connected("dev1")
    # A module has enough accepted filters to ask for a sixth.
    mkey = emu.add_device("dev1", module_id="m1")
    m = Device(emu, "dev1", mkey, module_id="m1")
    clients.append(m)
    m.connect()
    base = "devices/dev1/modules/"
    want = (1, 1, 1, 1, 1, 128)
    assert (
        m.subscribe(
            "$iothub/twin/res/#",
            "$iothub/methods/POST/#",
            "$iothub/twin/PATCH/properties/desired/#",
            base + "m1/inputs/#",
            base + "m1/#",
            base + "+/inputs/#",
        )
        == want
    )


def test_malformed_packet_disconnects(emu, clients):
    key = emu.add_device("dev1")
    r, (sp, rc) = raw_connect(emu, "dev1", token_for(emu, "dev1", key).encode())
    clients.append(r)
    r.send(bytes([0x32, 3, 0, 9, 0x61]))  # topic length runs past the packet
    assert r.closed_within(3)
    assert "malformed packet" in emu.wait_disconnect("dev1")


def test_keepalive_timeout(emu, clients):
    key = emu.add_device("dev1")
    r, (sp, rc) = raw_connect(emu, "dev1", token_for(emu, "dev1", key).encode(), keepalive=1)
    clients.append(r)
    t0 = time.monotonic()
    r.send(bytes([0xC0, 0]))
    assert r.packet() == (0xD0, b"")  # PINGRESP
    assert r.closed_within(4)
    assert 1.3 < time.monotonic() - t0 < 3.0
    assert "keep-alive timeout" in emu.wait_disconnect("dev1")


def test_will_published_on_abnormal_close(emu, clients):
    key = emu.add_device("dev1")
    r, (sp, rc) = raw_connect(
        emu,
        "dev1",
        token_for(emu, "dev1", key).encode(),
        will=("devices/dev1/messages/events/", b"gone", 1),
    )
    assert rc == 0
    r.s.close()  # no DISCONNECT
    t = emu.wait_telemetry(1, "dev1")[0]
    assert t["payload"] == b"gone" and t["properties"] == {"iothub-MessageType": "Will"}


# ---- twin ---------------------------------------------------------------------------------------


def _twin_res(d):
    m = d.next()
    assert m.topic.startswith("$iothub/twin/res/"), m.topic
    status = int(m.topic.split("/")[3])
    props = dict(p.split("=") for p in m.topic.split("?", 1)[1].split("&"))
    return status, props, m.payload


def test_twin_get_patch_versions_null_deletes_and_errors(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    d.subscribe("$iothub/twin/res/#")
    d.publish("$iothub/twin/GET/?$rid=1", b"", qos=0)
    status, props, body = _twin_res(d)
    assert (status, props) == (200, {"$rid": "1"})
    assert json.loads(body) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    d.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        json.dumps({"fw": {"v": "1.0", "ok": True}, "n": 1}),
        qos=1,
    )
    assert _twin_res(d)[:2] == (204, {"$rid": "2", "$version": "2"})
    d.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=3",
        json.dumps({"fw": {"ok": None}, "n": None}),
        qos=0,
    )
    assert _twin_res(d)[:2] == (204, {"$rid": "3", "$version": "3"})
    assert emu.twin("dev1")["reported"] == {"fw": {"v": "1.0"}, "$version": 3}
    d.publish("$iothub/twin/PATCH/properties/reported/?$rid=4", b"{not json", qos=0)
    status, props, body = _twin_res(d)
    assert (status, props["$rid"]) == (400, "4") and "$version" not in props
    assert json.loads(body)["errorCode"] == 400000
    d.publish("$iothub/twin/PATCH/properties/reported/?$rid=5", b"[1,2]", qos=0)
    assert _twin_res(d)[0] == 400
    assert emu.twin("dev1")["reported"]["$version"] == 3


def test_twin_response_only_when_subscribed(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    d.publish("$iothub/twin/GET/?$rid=1", b"", qos=1)
    emu.wait_event(lambda e: e[2] == "twin_response_dropped")
    with pytest.raises(queue.Empty):
        d.next(0.3)


def test_desired_patch_pushed_with_version(emu, clients):
    key = emu.add_device("dev1")
    assert emu.patch_desired("dev1", {"rate": 1}) == 2  # offline: stored, not pushed
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    d.subscribe("$iothub/twin/PATCH/properties/desired/#")
    assert emu.patch_desired("dev1", {"rate": 5, "mode": {"a": 1}}) == 3
    m = d.next()
    assert m.topic == "$iothub/twin/PATCH/properties/desired/?$version=3"
    assert json.loads(m.payload) == {"rate": 5, "mode": {"a": 1}, "$version": 3}
    assert m.qos == 1
    emu.patch_desired("dev1", {"mode": None})
    assert json.loads(d.next().payload) == {"mode": None, "$version": 4}
    assert emu.twin("dev1")["desired"] == {"rate": 5, "$version": 4}


# ---- methods ------------------------------------------------------------------------------------


def test_method_round_trip_timeout_and_offline(emu, clients):
    key = emu.add_device("dev1")
    assert emu.invoke_method("dev1", "reboot", timeout=1)[0] == 404
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    assert emu.invoke_method("dev1", "reboot", timeout=1)[0] == 404  # not subscribed
    d.subscribe("$iothub/methods/POST/#")

    def answer(cl, u, m):
        name = m.topic.split("/")[3]
        rid = m.topic.split("?$rid=")[1]
        assert m.qos == 0
        if name == "slow":
            return
        body = json.dumps({"name": name, "got": json.loads(m.payload) if m.payload else None})
        cl.publish("$iothub/methods/res/%d/?$rid=%s" % (201 if name == "a" else 500, rid), body, 1)

    d.c.on_message = answer
    assert emu.invoke_method("dev1", "a", {"x": [1, 2]}, timeout=3) == (
        201,
        {"name": "a", "got": {"x": [1, 2]}},
    )
    assert emu.invoke_method("dev1", "b", timeout=3) == (500, {"name": "b", "got": None})
    assert (
        emu.invoke_method("dev1", "thermostat*getReport", timeout=3)[1]["name"]
        == "thermostat*getReport"
    )
    with pytest.raises(Exception, match="method name"):
        emu.invoke_method("dev1", "a/b")
    t0 = time.monotonic()
    status, payload = emu.invoke_method("dev1", "slow", timeout=0.5)
    assert status == 504 and payload["errorCode"] == 504101
    assert 0.4 < time.monotonic() - t0 < 2


# ---- cloud-to-device ------------------------------------------------------------------------------


def test_c2d_with_properties_completed_on_puback(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    d.subscribe("devices/dev1/messages/devicebound/#")
    mid = emu.send_c2d(
        "dev1", b"hello", {"path": "/a b", "k&=": "v"}, message_id="m-1", correlation_id="c 1"
    )
    assert mid == "m-1"
    m = d.next()
    assert m.qos == 1 and m.payload == b"hello"
    assert (
        m.topic
        == "devices/dev1/messages/devicebound/$.mid=m-1&$.cid=c%201&$.to=%2Fdevices%2Fdev1%2Fmessages%2FdeviceBound&k%26%3D=v&path=%2Fa%20b"
    )
    emu.wait_event(lambda e: e[2] == "c2d_complete" and e[3] == "m-1")
    assert emu.pending_c2d("dev1") == []


def test_c2d_queued_offline_and_redelivered_until_acked(emu, clients):
    key = emu.add_device("dev1")
    emu.send_c2d("dev1", "one")
    mid2 = emu.send_c2d("dev1", "two")
    tok = token_for(emu, "dev1", key).encode()
    r, (sp, rc) = raw_connect(emu, "dev1", tok)
    assert (sp, rc) == (0, 0)
    r.send(_pkt(0x82, b"\x00\x01" + _s("devices/dev1/messages/devicebound/#") + b"\x01"))
    assert r.packet() == (0x90, b"\x00\x01\x01")
    first = [r.packet(), r.packet()]
    assert [f[0] for f in first] == [0x32, 0x32]  # QoS 1, DUP clear
    assert [f[1].endswith(p) for f, p in zip(first, (b"one", b"two"), strict=True)] == [True, True]
    r.s.close()  # no PUBACK: both stay queued
    emu.wait_disconnect("dev1")
    assert len(emu.pending_c2d("dev1")) == 2
    # Reconnect with the persistent session: no re-subscribe needed, delivery again with DUP.
    d = Device(emu, "dev1", key)
    clients.append(d)
    assert d.connect() == (0, 1)
    got = [d.next(), d.next()]
    assert [g.payload for g in got] == [b"one", b"two"] and all(g.dup for g in got)
    emu.wait_event(lambda e: e[2] == "c2d_complete" and e[3] == mid2)
    assert emu.pending_c2d("dev1") == []


def test_clean_session_purges_c2d_and_subscriptions(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    d.connect()
    d.subscribe("devices/dev1/messages/devicebound/#")
    d.close()
    emu.wait_disconnect("dev1")
    emu.send_c2d("dev1", "lost")
    d2 = Device(emu, "dev1", key, clean=True)
    clients.append(d2)
    assert d2.connect() == (0, 0)
    assert emu.pending_c2d("dev1") == []
    assert last(emu, "dev1", "c2d_purged") == 1


def test_one_connection_per_device(emu, clients):
    key = emu.add_device("dev1")
    a = Device(emu, "dev1", key)
    b = Device(emu, "dev1", key)
    clients += [a, b]
    a.connect()
    assert b.connect()[0] == 0
    assert a.gone.wait(3)
    assert "400027" in emu.wait_disconnect("dev1")
    assert emu.connected("dev1") and not b.gone.is_set(), emu.events


def test_modules_have_their_own_identity_topics_and_twin(emu, clients):
    emu.add_device("dev1")
    mkey = emu.add_device("dev1", module_id="m1")
    d = Device(emu, "dev1", mkey, module_id="m1")
    clients.append(d)
    assert d.connect()[0] == 0
    assert emu.connected("dev1", module_id="m1") and not emu.connected("dev1")
    d.publish("devices/dev1/modules/m1/messages/events/$.on=out1", b"m")
    t = emu.wait_telemetry(1, "dev1")[0]
    assert (t["module_id"], t["system_properties"]) == ("m1", {"on": "out1"})
    d.subscribe("$iothub/twin/res/#")
    d.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", b'{"m":1}', qos=0)
    assert _twin_res(d)[0] == 204
    assert (
        emu.twin("dev1", module_id="m1")["reported"]["m"] == 1
        and "m" not in emu.twin("dev1")["reported"]
    )


# ---- SAS expiry and faults -------------------------------------------------------------------


def test_sas_expiry_closes_the_connection(pki, tmp_path, clients):
    offset = [0.0]
    emu = Emulator(str(tmp_path), pki=pki, clock=lambda: time.time() + offset[0]).start()
    try:
        key = emu.add_device("dev1")
        d = Device(emu, "dev1", key, token=token_for(emu, "dev1", key, ttl=60))
        clients.append(d)
        assert d.connect()[0] == 0
        assert emu.wait_connected("dev1")
        offset[0] = 61  # the hub's clock passes se
        assert d.gone.wait(20)
        assert emu.wait_disconnect("dev1") == "SAS token expired"
        # The fault switch keeps an expired connection open (the 2018 service bug).
        emu.faults.close_at_token_expiry = False
        offset[0] = 0
        d2 = Device(emu, "dev1", key, token=token_for(emu, "dev1", key, ttl=60))
        clients.append(d2)
        assert d2.connect()[0] == 0
        offset[0] = 120
        # Two acknowledged PUBLISHes after expiry: the hub's connection loop checks the token
        # deadline after every packet it handles, so it has checked (and kept the link open)
        # before it read the second one.
        for i in range(2):
            d2.publish("devices/dev1/messages/events/", b"after-expiry-%d" % i, qos=1)
        assert not d2.gone.is_set() and emu.connected("dev1")
        # A short real token expires on its own.
        emu.faults.close_at_token_expiry = True
        offset[0] = 0
        d3 = Device(emu, "dev1", key, token=token_for(emu, "dev1", key, ttl=2))
        clients.append(d3)
        d3.connect()
        assert d3.gone.wait(30)
    finally:
        emu.stop()


def test_fault_refuse_connack_and_stall(emu, clients):
    key = emu.add_device("dev1")
    emu.faults.refuse_connack = 3
    d = Device(emu, "dev1", key)
    assert d.connect()[0] == 3
    d.close()
    emu.faults.reset()
    r, (sp, rc) = raw_connect(emu, "dev1", token_for(emu, "dev1", key).encode())
    clients.append(r)
    assert rc == 0
    emu.faults.stall = True
    r.send(bytes([0xC0, 0]))
    r.send(_pkt(0x32, _s("devices/dev1/messages/events/") + b"\x00\x05x"))
    with pytest.raises(TimeoutError):
        r.packet(0.5)
    assert emu.telemetry("dev1") == []
    emu.faults.stall = False
    r.send(bytes([0xC0, 0]))
    assert r.packet() == (0xD0, b"")


def test_fault_drop_publish_delay_puback_and_twin_override(emu, clients):
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    d.connect()
    emu.faults.drop_next_publish = True
    d.publish("devices/dev1/messages/events/", b"x", qos=1, wait=False)
    assert d.gone.wait(3)
    assert "fault" in emu.wait_disconnect("dev1") and emu.telemetry() == []
    assert emu.faults.drop_next_publish == 0
    d2 = Device(emu, "dev1", key)
    clients.append(d2)
    d2.connect()
    emu.faults.delay_puback_s = 0.6
    t0 = time.monotonic()
    d2.publish("devices/dev1/messages/events/", b"y", qos=1)
    # a lower bound that load cannot break: the hub starts its 0.6 s timer only after t0
    assert time.monotonic() - t0 >= 0.55
    emu.faults.delay_puback_s = 0
    emu.faults.twin_status_override = 429
    d2.subscribe("$iothub/twin/res/#")
    d2.publish("$iothub/twin/GET/?$rid=9", b"", qos=0)
    assert _twin_res(d2)[:2] == (429, {"$rid": "9"})


def test_drop_send_raw_and_restart(emu, clients):
    key = emu.add_device("dev1")
    r, _ = raw_connect(emu, "dev1", token_for(emu, "dev1", key).encode())
    emu.send_raw("dev1", bytes([0x20, 0x02, 0, 0]))  # a second CONNACK, as the hub never would
    assert r.packet() == (0x20, b"\x00\x00")
    assert emu.drop("dev1")
    assert r.closed_within(2)
    port = emu.port
    d = Device(emu, "dev1", key)
    d.connect()
    emu.send_c2d("dev1", "kept")
    emu.restart()
    assert d.gone.wait(3)
    assert emu.port == port
    d2 = Device(emu, "dev1", key)
    clients.append(d2)
    assert d2.connect()[0] == 0
    d2.subscribe("devices/dev1/messages/devicebound/#")
    assert d2.next().payload == b"kept"


def test_admin_api_round_trip(emu, clients):
    from iothub_emulator.admin import AdminError

    emu.start_admin()
    key = emu.add_device("dev1")
    d = Device(emu, "dev1", key)
    clients.append(d)
    d.connect()
    d.subscribe("devices/dev1/messages/devicebound/#")
    d.publish("devices/dev1/messages/events/a=1", b"hi")
    emu.wait_telemetry(1, "dev1")

    call = emu.admin_call  # with the bearer token, as the CLI sends it
    assert call("GET", "/telemetry?device_id=dev1")[0]["payload"] == "hi"
    assert call("POST", "/c2d", {"device_id": "dev1", "payload": "x", "properties": {"p": "1"}})[
        "message_id"
    ]
    assert d.next().topic.endswith("&p=1")
    assert call("POST", "/desired", {"device_id": "dev1", "patch": {"a": 1}}) == {"version": 2}
    assert call("POST", "/faults", {"refuse_connack": 5})["refuse_connack"] == 5
    assert emu.faults.refuse_connack == 5
    with pytest.raises(AdminError) as e:
        call("POST", "/faults", {"nope": 1})
    assert e.value.status == 400
