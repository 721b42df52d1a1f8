"""MQTT interop: our codec (iothub.mqtt), driven by a tiny loop on the real unix port, against
mosquitto (Debian package) over plain TCP and over TLS (tls.SSLContext, CA loaded as DER,
server_hostname="localhost"). An independent client (paho-mqtt on CPython) watches the same
broker: it publishes a retained message the device must receive, and checks what the device
published, including its will. Every wait is bounded; everything stays on 127.0.0.1."""

import datetime
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import mpyrun

MOSQUITTO = "/usr/sbin/mosquitto"


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(cn, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_pki(d):
    # Throwaway CA and server certificate for "localhost" (EC P-256), plus an unrelated CA.
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca = _make_ca("iothub interop test CA", now)
    _, other = _make_ca("iothub interop unrelated CA", now)
    (d / "other_ca.der").write_bytes(other.public_bytes(serialization.Encoding.DER))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "ca.der").write_bytes(ca.public_bytes(serialization.Encoding.DER))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(d / "server.key", 0o644)  # readable if mosquitto drops to its own user


def _wait_port(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed: run `make setup` (apt package mosquitto)")
    d = tmp_path_factory.mktemp("mosquitto")
    _make_pki(d)
    for _attempt in range(3):  # a free port can be taken between probing and binding
        plain, tls_port = _free_port(), _free_port()
        conf = d / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous true",
                    "persistence false",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "user root" if os.geteuid() == 0 else "",
                    "listener %d 127.0.0.1" % plain,
                    "listener %d 127.0.0.1" % tls_port,
                    "cafile %s" % (d / "ca.pem"),
                    "certfile %s" % (d / "server.pem"),
                    "keyfile %s" % (d / "server.key"),
                    "tls_version tlsv1.2",
                    "",
                ]
            )
        )
        log = open(d / "mosquitto.log", "wb")
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        if _wait_port(plain, proc) and _wait_port(tls_port, proc):
            break
        proc.kill()
        proc.wait(timeout=5)
        log.close()
    else:
        pytest.fail("mosquitto did not start: " + (d / "mosquitto.log").read_text())
    try:
        yield {
            "plain": plain,
            "tls": tls_port,
            "ca_der": str(d / "ca.der"),
            "other_ca_der": str(d / "other_ca.der"),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


class Observer:
    """paho-mqtt client on CPython: an independent implementation on the same broker."""

    def __init__(self, port, prefix):
        self.messages = []
        self.cond = threading.Condition()
        self.c = paho.Client(client_id=prefix + "-observer", clean_session=True)
        self.c.on_message = self._on_message
        self.subscribed = threading.Event()
        self.c.on_subscribe = lambda client, userdata, mid, granted: self.subscribed.set()
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        r, mid = self.c.subscribe(prefix + "/#", qos=1)
        assert r == paho.MQTT_ERR_SUCCESS

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, msg.qos, msg.retain))
            self.cond.notify_all()

    def publish_retained(self, topic, payload):
        info = self.c.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout=5)
        assert info.is_published()

    def wait_for(self, topic, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for m in self.messages:
                    if m[0] == topic:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _packet_len(b):
    # 1 byte type/flags + remaining length (varint) + remaining bytes.
    rem, mul, i = 0, 1, 1
    while True:
        rem += (b[i] & 0x7F) * mul
        mul <<= 7
        i += 1
        if not b[i - 1] & 0x80:
            return i + rem


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_device_codec_against_mosquitto(broker, transport):
    prefix = "interop/%s/%d" % (transport, os.getpid())
    obs = Observer(broker["plain"], prefix)
    try:
        # the broker's SUBACK: the observer's subscription is in place before traffic starts
        assert obs.subscribed.wait(20), "mosquitto did not acknowledge the SUBSCRIBE"
        obs.publish_retained(prefix + "/in/retained", b"retained from paho")
        args = ["127.0.0.1", broker[transport], prefix]
        if transport == "tls":
            args.append(broker["ca_der"])
        proc = mpyrun.run(
            script=mpyrun.DEVICE_HELPERS / "mqtt_loop.py", args=args, timeout=60, check=True
        )
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        print("socket writes per packet write (%s):" % transport, [c for _h, c in out["sent"]])

        # One write() per packet, and each write is exactly one whole MQTT packet.
        sent = [bytes.fromhex(h) for h, _calls in out["sent"]]
        types = [b[0] >> 4 for b in sent]
        for b in sent:
            assert _packet_len(b) == len(b), "a write that is not exactly one packet"
        assert types == [1, 8, 4, 3, 3, 4, 3, 4, 12, 10, 3, 12, 14, 1], types
        big = [b for b in sent if b[0] >> 4 == 3 and len(b) > 20000]
        # type byte, 3-byte remaining length, topic length, topic, packet id, payload
        assert len(big) == 1 and len(big[0]) == 1 + 3 + 2 + len(prefix + "/in/big") + 2 + 20000

        # What the device received, decoded by our decoder.
        rx = out["received"]
        kinds = [r["type"] for r in rx]
        assert kinds.count("CONNACK") == 2 and kinds.count("PINGRESP") == 2
        ret = [r for r in rx if r["type"] == "PUBLISH" and r["retain"]]
        assert ret and ret[0]["head"] == "retained from paho"
        echoes = [r for r in rx if r["type"] == "PUBLISH" and r["topic"] == prefix + "/echo"]
        assert [e["head"] for e in echoes] == ["q0 round trip"]  # nothing after unsubscribe
        bigs = [r for r in rx if r["type"] == "PUBLISH" and r["topic"] == prefix + "/in/big"]
        assert bigs and bigs[0]["len"] == 20000 and bigs[0]["qos"] == 1

        # What an independent client saw of the device's messages.
        assert obs.wait_for(prefix + "/in/q1")[1:3] == (b"q1 round trip", 1)
        assert obs.wait_for(prefix + "/in/big")[1] == b"B" * 20000
        assert obs.wait_for(prefix + "/echo")[1] == b"q0 round trip"
        will = obs.wait_for(prefix + "/will")
        assert will is not None, "the broker did not publish the device's will"
        assert will[1] == "device gone \u2013 abnormally".encode() and will[2] == 1
        assert obs.wait_for(prefix + "/will-clean", timeout=0.3) is None
    finally:
        obs.close()


def test_tls_refuses_a_broker_certificate_from_another_ca(broker):
    # The TLS leg above is verified TLS: with an unrelated CA the handshake fails.
    args = ["127.0.0.1", broker["tls"], "interop/badca", broker["other_ca_der"]]
    proc = mpyrun.run(script=mpyrun.DEVICE_HELPERS / "mqtt_loop.py", args=args, timeout=60)
    assert proc.returncode != 0
    assert "CERT" in (proc.stdout + proc.stderr).upper(), proc.stdout + proc.stderr


def test_mosquitto_binary_is_the_debian_one():
    # The interop target is pinned by the Makefile's apt install; say which one ran.
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).splitlines()[0]
    assert first.startswith("mosquitto version"), first
    assert shutil.which("mosquitto") or os.path.exists(MOSQUITTO)
