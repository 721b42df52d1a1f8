"""Field lifecycle under fault injection (README "Lifecycle"): the device, running the precompiled
package on the unix port with a device-sized heap, keeps sending numbered QoS 1 messages
while the emulator misbehaves. For every fault it recovers without a restart, loses no
message, and the time to recover is recorded (printed at the end of the run). Every fault scenario runs
against both clients (the `client_kind` fixture: the blocking DeviceClient, and iothub.aio's
through devkit's synchronous facade); the recovery figures are recorded per client.

TLS buffers: on the unix port mbedTLS allocates with the C heap, outside the MicroPython
heap that -X heapsize bounds (on the Pico W they come from the GC heap; see README)."""

import collections
import json
import os
import time
import uuid

import pytest
from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator

# Smallest heap the whole scenario runs in, found by bisecting with
# `pytest host_tests/test_lifecycle.py -k smallest_heap` (see test_smallest_heap).
DEVICE_HEAP = os.environ.get("IOTHUB_TEST_HEAP", "192k")
RECOVERY = collections.OrderedDict()  # fault -> seconds from fault to the next CONNACK 0

LOOP = r"""
import devkit, time, json, gc, iothub
c = devkit.client(CFG)
auth_since = [None]
def on_state(state, detail):
    print("STATE", state, detail)
    auth_since[0] = time.ticks_ms() if state == "auth_failed" else None
c.on_connection_state = on_state
desired = []
c.on_desired = lambda patch, v: desired.append(v) or print("DESIRED", v)
c.connect()
print("READY")
flag = CFG.get("flag")


def new_credentials_when_flagged(flag):
    # After an authentication refusal, the test creates `flag` when the application may
    # replace the credentials (here with the same, now accepted, connection string).
    if flag and c.state == "auth_failed":
        wait = CFG.get("auth_wait_ms")
        if wait and time.ticks_diff(time.ticks_ms(), auth_since[0]) >= wait:
            # by the device's own clock: this long in auth_failed, polling all the while
            print("AUTH_WAITED", wait)
            CFG["auth_wait_ms"] = None
        try:
            open(flag).close()
        except OSError:
            return flag
        c.update_credentials(connection_string=CFG["cs"])
        print("CREDENTIALS replaced")
        return None
    return flag


n = CFG["n"]
i = 0
while i < n:
    c.send({"i": i}, message_id=str(i), block=False)
    i += 1
    c.poll(CFG["interval_ms"])
    flag = new_credentials_when_flagged(flag)
t0 = time.ticks_ms()
while (c.queued or not c.is_connected) and time.ticks_diff(time.ticks_ms(), t0) < CFG.get("drain_ms", 20000):
    c.poll(100)
    flag = new_credentials_when_flagged(flag)
gc.collect()
print("RESULT", json.dumps({"queued": c.queued, "dropped": c.dropped, "stats": c.stats,
      "heap": gc.mem_alloc(), "desired": desired, "state": c.state}))
c.disconnect()
"""


def make_emu(pki, path, **kw):
    e = Emulator(str(path), profile="ecc", pki=pki, **kw)
    e.start()
    return e


@pytest.fixture
def emu(pki, tmp_path):
    e = make_emu(pki, tmp_path)
    yield e
    e.faults.reset()
    e.stop()


def cfg_for(emu, **extra):
    device_id = "life-" + uuid.uuid4().hex[:8]
    emu.add_device(device_id)
    cfg = {
        "profile": "ecc",
        "port": emu.port,
        "root": emu.root_der_file,
        "cs": emu.connection_string(device_id, gateway=False),
        "device_id": device_id,
        "n": 30,
        "interval_ms": 100,
        "keepalive": 60,
        "queue_size": 64,
        "queue_bytes": 16384,  # 30 messages of ~200 B fit: no scenario may lose one
        "backoff": [200, 3000, 300],  # faster than the field defaults (1 s / 100 s / 5 s)
        "timeout_ms": 5000,
        "verbose": True,  # every scenario logs at its most verbose; finish() checks for secrets
    }
    cfg.update(extra)
    return cfg


def start(cfg, mpy_dir, heapsize=DEVICE_HEAP):
    return DeviceProcess(LOOP, cfg, heapsize=heapsize, extra_path=[mpy_dir])


def assert_no_secret(text, cfg):
    key = cfg["cs"].split("SharedAccessKey=")[1]
    for fragment in (key, key[:12], key[-12:]):
        assert fragment not in text, "the device key appears in the device's output"
    assert "sig=" not in text and "SharedAccessSignature" not in text


def finish(dev, emu, cfg, timeout=60):
    result = json.loads(dev.expect("RESULT", timeout))
    assert dev.wait(10) == 0, dev.output
    if cfg.get("verbose"):
        assert "LOG " in dev.output
    assert_no_secret(dev.output, cfg)
    msgs = emu.telemetry(cfg["device_id"])
    ids = [int(m["system_properties"]["mid"]) for m in msgs]
    counts = collections.Counter(ids)
    assert sorted(counts) == list(range(cfg["n"])), "lost: %s\n%s" % (
        sorted(set(range(cfg["n"])) - set(counts)),
        dev.output,
    )
    # a duplicate is allowed only as an MQTT retransmission (DUP set) of a message whose
    # PUBACK was lost; the first copy never carries DUP
    for mid, k in counts.items():
        if k > 1:
            copies = [m for m in msgs if m["system_properties"]["mid"] == str(mid)]
            assert all(m["dup"] for m in copies[1:]), copies
    assert result["queued"] == 0 and result["dropped"] == 0, result
    return result, msgs


def connack_times(emu, device_id):
    return [ev[0] for ev in emu.events if ev[1] == device_id and ev[2] == "connack" and ev[3] == 0]


def record_recovery(name, emu, cfg, t_fault):
    after = [t for t in connack_times(emu, cfg["device_id"]) if t > t_fault]
    assert after, "no reconnect after %s" % name
    name = "%s [%s]" % (name, cfg.get("client_kind", "blocking"))
    RECOVERY[name] = after[0] - t_fault
    return RECOVERY[name]


def run_fault(emu, mpy_dir, name, inject, heal=None, settle=0.0, until=None, **cfg_extra):
    """Inject a fault; heal it once until(cfg, dev) returned (the event the fault waits for),
    or after `settle` seconds for faults defined by their duration (an outage)."""
    cfg = cfg_for(emu, **cfg_extra)
    dev = start(cfg, mpy_dir)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        t_fault = time.time()
        inject(cfg)
        if until:
            until(cfg, dev)
        if settle:
            time.sleep(settle)  # the fault's length, not a wait for something to happen
        if heal:
            heal(cfg)
        result, msgs = finish(dev, emu, cfg)
    finally:
        dev.kill()
    record_recovery(name, emu, cfg, t_fault)
    assert result["stats"]["reconnects"] >= 1, result
    return result, msgs, dev


def test_drop_mid_publish(emu, mpy_dir, client_kind):
    result, msgs, dev = run_fault(
        emu,
        mpy_dir,
        "drop mid-publish",
        lambda cfg: emu.faults.set(drop_next_publish=1),
        client_kind=client_kind,
    )
    assert "STATE retrying" in dev.output


def test_connection_reset(emu, mpy_dir, client_kind):
    run_fault(
        emu,
        mpy_dir,
        "connection reset",
        lambda cfg: emu.drop(cfg["device_id"]),
        client_kind=client_kind,
    )


def test_stall_detected_by_keepalive(emu, mpy_dir, client_kind):
    # no PINGRESP, no PUBACK: the device's keepalive (3 s) finds the dead link
    run_fault(
        emu,
        mpy_dir,
        "stall (no PINGRESP/PUBACK)",
        lambda cfg: emu.faults.set(stall=True),
        heal=lambda cfg: emu.faults.set(stall=False),
        until=lambda cfg, dev: dev.expect("STATE retrying", 60),  # the device saw the dead link
        keepalive=3,
        n=60,
        client_kind=client_kind,
    )


def test_connack_3_is_retried(emu, mpy_dir, client_kind):
    def inject(cfg):
        emu.faults.set(refuse_connack=3)
        emu.drop(cfg["device_id"])

    def two_refusals(cfg, dev):
        for _ in range(2):
            n = len(emu.events)
            emu.wait_event(
                lambda ev: ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[3] == 3,
                timeout=60,
                since=n,
            )

    result, msgs, dev = run_fault(
        emu,
        mpy_dir,
        "CONNACK 3 (server unavailable), two attempts",
        inject,
        heal=lambda cfg: emu.faults.set(refuse_connack=None),
        until=two_refusals,
        client_kind=client_kind,
    )
    refused = [ev for ev in emu.events if ev[2] == "connack" and ev[3] == 3]
    assert len(refused) >= 2, "CONNACK 3 is retriable: expected several attempts"
    assert "auth_failed" not in dev.output


def test_connack_5_is_not_retried_until_credentials_change(emu, mpy_dir, tmp_path, client_kind):
    flag = tmp_path / "flag"
    # auth_wait_ms: twice the backoff maximum (3 s) of device time spent polling
    cfg = cfg_for(emu, flag=str(flag), n=40, auth_wait_ms=6000, client_kind=client_kind)
    dev = start(cfg, mpy_dir)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        emu.faults.set(refuse_connack=5)
        t_fault = time.time()
        emu.drop(cfg["device_id"])
        dev.expect("STATE auth_failed")
        # a retrying client would have tried again within 3 s of its own time
        dev.expect("AUTH_WAITED", 60)
        attempts = [
            ev
            for ev in emu.events
            if ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[0] > t_fault
        ]
        assert [ev[3] for ev in attempts] == [5], attempts
        emu.faults.set(refuse_connack=None)
        flag.write_text("go")  # the application replaces the credentials
        dev.expect("CREDENTIALS replaced")
        result, _ = finish(dev, emu, cfg)
    finally:
        dev.kill()
    record_recovery("CONNACK 5 (not authorized), then new credentials", emu, cfg, t_fault)


def test_hub_closes_at_token_expiry(pki, tmp_path, mpy_dir, client_kind):
    # The hub's clock runs 52 s ahead: a 60 s token expires 8 s after the device made it,
    # before the device's own renewal at 80 % (48 s). The device recovers with a new token.
    emu = make_emu(pki, tmp_path, clock=lambda: time.time() + 52)
    try:
        cfg = cfg_for(emu, sas_ttl=60, n=120, interval_ms=100, client_kind=client_kind)
        dev = start(cfg, mpy_dir)
        try:
            dev.expect("READY")
            t_fault = time.time()
            result, _ = finish(dev, emu, cfg, timeout=90)
        finally:
            dev.kill()
        closes = [
            ev
            for ev in emu.events
            if ev[1] == cfg["device_id"] and ev[2] == "disconnect" and "expired" in str(ev[3])
        ]
        assert closes, "the hub never closed the connection at token expiry"
        record_recovery("hub closes at SAS token expiry", emu, cfg, closes[0][0] - 0.0)
        assert t_fault  # recovered, nothing lost (checked in finish)
    finally:
        emu.stop()


def test_throttling_delayed_pubacks_and_twin_429(emu, mpy_dir, client_kind):
    cfg = cfg_for(emu, n=10, client_kind=client_kind)
    emu.faults.set(delay_puback_s=1.0)
    try:
        dev = start(cfg, mpy_dir)
        try:
            dev.expect("READY")
            result, _ = finish(dev, emu, cfg)
        finally:
            dev.kill()
    finally:
        emu.faults.set(delay_puback_s=0)
    assert result["stats"]["reconnects"] == 0  # slow PUBACKs are not a dead link
    body = r"""
import devkit, iothub
c = devkit.client(CFG)
c.connect()
try:
    c.get_twin()
    print("ERR none")
except iothub.StatusError as e:
    print("ERR", e.status, e.retriable, e)
"""
    emu.faults.set(twin_status_override=429)
    out = mpyrun.run("CFG=%r\n" % cfg + body, extra_path=[mpy_dir], heapsize=DEVICE_HEAP)
    emu.faults.set(twin_status_override=None)
    assert "ERR 429 True" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize(
    "name, raw",
    [
        ("bad remaining length", b"\x30\xff\xff\xff\xff\x7f"),
        ("truncated PUBLISH", b"\x30\x03\x00\x09a"),
        ("oversize packet", b"\x30\xff\xff\x7f"),
        ("wrong packet type (SUBSCRIBE)", b"\x82\x05\x00\x01\x00\x00\x00"),
    ],
)
def test_malformed_packets(emu, mpy_dir, name, raw, client_kind):
    run_fault(
        emu,
        mpy_dir,
        "malformed packet: " + name,
        lambda cfg: emu.send_raw(cfg["device_id"], raw),
        client_kind=client_kind,
    )


def test_hub_restart_with_outage(emu, mpy_dir, client_kind):
    def inject(cfg):
        emu.endpoint.stop()
        emu.hub.event(None, "restart", None)

    run_fault(
        emu,
        mpy_dir,
        "hub restart after a 3 s outage",
        inject,
        heal=lambda cfg: emu.start(),
        settle=3.0,
        n=50,
        client_kind=client_kind,
    )


def test_desired_patch_missed_offline_is_delivered_once(emu, mpy_dir, client_kind):
    cfg = cfg_for(emu, n=50, client_kind=client_kind)
    dev = start(cfg, mpy_dir)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        v1 = emu.patch_desired(cfg["device_id"], {"a": 1})
        dev.expect("DESIRED")
        emu.faults.set(refuse_connack=3)
        n_before = len(emu.events)
        emu.drop(cfg["device_id"])
        v2 = emu.patch_desired(cfg["device_id"], {"a": 2})  # while the device is offline
        emu.wait_event(  # the device tried while the patch was pending, and was refused
            lambda ev: ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[3] == 3,
            timeout=60,
            since=n_before,
        )
        emu.faults.set(refuse_connack=None)
        result, _ = finish(dev, emu, cfg)
    finally:
        dev.kill()
    assert result["desired"] == [v1, v2], result


def test_no_secret_in_verbose_logs(emu, mpy_dir, tmp_path, client_kind):
    """Every log line and error text at the most verbose level, across a wrong key, a
    refused CONNACK, a malformed packet and a renewal: no key, signature or private key."""
    cfg = cfg_for(emu, verbose=True, n=20, client_kind=client_kind)
    key = cfg["cs"].split("SharedAccessKey=")[1]
    dev = start(cfg, mpy_dir)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        n_before = len(emu.events)
        emu.send_raw(cfg["device_id"], b"\x30\xff\xff\xff\xff\x7f")
        emu.wait_event(  # the device refused the packet and reconnected
            lambda ev: ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[3] == 0,
            timeout=60,
            since=n_before,
        )
        result, _ = finish(dev, emu, cfg)
    finally:
        dev.kill()
    wrong = dict(cfg, cs=cfg["cs"].replace(key, "B" + key[1:]))
    out = mpyrun.run(
        "CFG=%r\nimport devkit\ntry:\n    devkit.client(CFG).connect()\nexcept Exception as e:\n    print('ERR', repr(e))\n"
        % wrong,
        extra_path=[mpy_dir],
    )
    x509_cert, x509_key, _, sha256 = emu.pki.issue_client_cert(
        "x-" + cfg["device_id"], kind="ec256"
    )
    (tmp_path / "k.pem").write_bytes(
        b"-----BEGIN EC PRIVATE KEY-----\nAAAA"
        + x509_key[40:80]
        + b"\n-----END EC PRIVATE KEY-----\n"
    )
    (tmp_path / "c.pem").write_bytes(x509_cert)
    bad_key = mpyrun.run(
        "import devkit, iothub\ntry:\n    iothub.tls_context('ecc', cert=devkit.read(%r), key=devkit.read(%r))\nexcept Exception as e:\n    print('ERR', repr(e))\n"
        % (str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),
        extra_path=[mpy_dir],
    )
    text = dev.output + out.stdout + out.stderr + bad_key.stdout + bad_key.stderr
    assert "LOG" in dev.output and "ERR" in out.stdout and "ERR" in bad_key.stdout
    sig_fragments = [key, key[:16], "B" + key[1:17]]
    for s in sig_fragments:
        assert s not in text
    assert "sig=" not in text and "SharedAccessSignature" not in text
    body = b"".join(x509_key.splitlines()[1:-1]).decode()
    for i in range(0, len(body) - 16, 16):
        assert body[i : i + 16] not in text


@pytest.mark.slow
def test_soak_renewals_no_growth_no_loss(pki, tmp_path, mpy_dir, client_kind):
    """About two minutes: 15 s tokens renewed at 12 s (about nine renewals) while sending
    every 100 ms, with two connection drops on top; the heap after collect must not grow
    and nothing is lost."""
    emu = make_emu(pki, tmp_path)
    try:
        # A sample every 100 messages, taken at the first moment after it that the client is
        # connected with its connection-time code unloaded: between a drop and the next
        # connect that code (about 8 KB) is loaded on purpose, and is not growth.
        body = "import sys\npend = None\n" + LOOP.replace(
            '    c.poll(CFG["interval_ms"])\n',
            '    c.poll(CFG["interval_ms"])\n'
            "    if i % 100 == 0:\n"
            "        pend = i\n"
            '    if pend is not None and c.is_connected and "iothub.clientx" not in sys.modules:\n'
            "        gc.collect()\n"
            '        print("HEAPAT", pend, gc.mem_alloc())\n'
            "        pend = None\n",
            1,
        )
        cfg = cfg_for(emu, sas_ttl=15, n=1100, interval_ms=100, client_kind=client_kind)
        dev = DeviceProcess(body, cfg, heapsize=DEVICE_HEAP, extra_path=[mpy_dir])
        try:
            dev.expect("READY")
            for at in (400, 800):  # two drops, after 400 and 800 messages (device's count)
                dev.expect("HEAPAT %d " % at, 120)
                emu.drop(cfg["device_id"])
            result, _ = finish(dev, emu, cfg, timeout=180)
        finally:
            dev.kill()
        heap = [int(ln.split()[2]) for ln in dev.lines if ln.startswith("HEAPAT")]
        assert result["stats"]["renewals"] >= 5, result
        # after the first samples (first renewal, first reconnect), no growth
        steady = heap[3:]
        assert max(steady) - min(steady) < 2048, heap
        print(
            "\nsoak: %d messages, renewals %d, reconnects %d, heap after collect %s"
            % (cfg["n"], result["stats"]["renewals"], result["stats"]["reconnects"], heap)
        )
        RECOVERY["soak heap samples (bytes) [%s]" % client_kind] = heap
    finally:
        emu.stop()


def test_smallest_heap(emu, mpy_dir):
    """The smallest -X heapsize (in KiB, .mpy package) under which the fault scenario
    (connect, drop, reconnect, 15 messages) completes, found by bisection. A run that ran
    out of memory (MemoryError, or the client's "out of memory" back-off) and a run that was
    only too slow for the test's timeouts are told apart and reported separately; any other
    failure fails the test."""
    outcomes = {}

    def attempt(kib):
        cfg = cfg_for(emu, n=15, interval_ms=50)
        del cfg["queue_bytes"]  # the client's default ring (4 KB), as a device would run it
        dev = start(cfg, mpy_dir, heapsize="%dk" % kib)
        try:
            try:
                dev.expect("READY", 20)
                emu.drop(cfg["device_id"])
                finish(dev, emu, cfg, timeout=40)
                outcome = "ok"
            except AssertionError:
                out = dev.output
                # Python's MemoryError, the client's back-off, or mbedTLS allocating from the
                # GC heap (Pico W-like builds) failing its handshake with ENOMEM.
                if "MemoryError" in out or "out of memory" in out or "ENOMEM" in out:
                    outcome = "memory"
                elif dev.proc.poll() is None:
                    outcome = "slow"  # still running: out of time, not of memory
                else:
                    raise  # it ended for another reason: a real failure
        finally:
            dev.kill()
        outcomes[kib] = outcome
        return outcome

    lo, hi = 16, 256
    assert attempt(hi) == "ok", outcomes
    while hi - lo > 4:
        mid = (lo + hi) // 2
        if attempt(mid) == "ok":
            hi = mid
        else:
            lo = mid
    kind = "frozen package" if mpyrun.frozen() else ".mpy package"
    memory = sorted(k for k, o in outcomes.items() if o == "memory")
    slow = sorted(k for k, o in outcomes.items() if o == "slow")
    RECOVERY["smallest -X heapsize for the fault scenario (KiB, %s)" % kind] = hi
    RECOVERY["  heaps that ran out of memory (KiB)"] = memory
    RECOVERY["  heaps that were only too slow, not counted as out of memory (KiB)"] = slow
    # the claim is about memory: every heap that ran out of memory is below the tests' heap
    assert not memory or max(memory) < int(DEVICE_HEAP.rstrip("k")), outcomes
