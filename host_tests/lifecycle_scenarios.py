"""The field-lifecycle fault scenarios, shared by host_tests/test_lifecycle.py (which asserts
the behaviour: recovered, nothing lost, within wide bounds) and tools/bench/bench_lifecycle.py
(which measures the recovery times and soak figures the README shows). One definition of each
scenario, so the figures come from exactly what the tests check.

The device runs the precompiled package on the unix port with a bounded heap and keeps sending
numbered QoS 1 messages (LOOP) while the emulator injects a fault. Every runner returns an
Outcome read from the wire (the hub's events and the telemetry it recorded) and from the
device's final report; finish() fails (AssertionError with the device's output) when a message
was lost, a duplicate was not an MQTT retransmission, or a secret appears in the output.

TLS buffers: on the unix port mbedTLS allocates with the C heap, outside the MicroPython heap
that -X heapsize bounds (on the Pico W they come from the GC heap; see README)."""

import collections
import json
import os
import time
import uuid

from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator

# The device's -X heapsize (IOTHUB_TEST_HEAP overrides it, e.g. for a Pico W-like build).
DEVICE_HEAP = os.environ.get("IOTHUB_TEST_HEAP", "192k")
BACKOFF = [200, 3000, 300]  # ms: faster than the field defaults (1 s / 100 s / 5 s)

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
    # After an authentication refusal, the host creates `flag` when the application may
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

# The soak's LOOP: a heap sample every CFG["sample_every"] messages, taken at the first moment
# after it that the client is connected with its connection-time code unloaded: between a
# drop and the next connect that code (about 8 KB) is loaded on purpose, and is not growth.
SOAK_LOOP = "import sys\npend = None\n" + LOOP.replace(
    '    c.poll(CFG["interval_ms"])\n',
    '    c.poll(CFG["interval_ms"])\n'
    '    if i % CFG["sample_every"] == 0:\n'
    "        pend = i\n"
    '    if pend is not None and c.is_connected and "iothub.clientx" not in sys.modules:\n'
    "        gc.collect()\n"
    '        print("HEAPAT", pend, gc.mem_alloc())\n'
    "        pend = None\n",
    1,
)


def make_emu(pki, path, **kw):
    e = Emulator(str(path), profile="ecc", pki=pki, **kw)
    e.start()
    return e


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
        "backoff": BACKOFF,
        "timeout_ms": 5000,
        "verbose": True,  # every scenario logs at its most verbose; finish() checks for secrets
    }
    cfg.update(extra)
    return cfg


def start(cfg, mpy_dir, heapsize=None, body=LOOP):
    return DeviceProcess(body, cfg, heapsize=heapsize or DEVICE_HEAP, extra_path=[mpy_dir])


def assert_no_secret(text, cfg):
    key = cfg["cs"].split("SharedAccessKey=")[1]
    for fragment in (key, key[:12], key[-12:]):
        assert fragment not in text, "the device key appears in the device's output"
    assert "sig=" not in text and "SharedAccessSignature" not in text


def finish(dev, emu, cfg, timeout=60):
    """Wait for the device's RESULT and exit; check on the hub's side that every message
    arrived, duplicates only as retransmissions with DUP set, and no secret in the output."""
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


class Outcome:
    """What one scenario run did, as the hub saw it: `recovery_s` from the fault to the hub's
    next accepted CONNACK (None where the scenario needs no reconnect), `attempts` the CONNACK
    codes the hub sent after the fault up to that one, `lost` and `dup` (retransmitted copies)
    counted in the telemetry the hub recorded, `result` the device's final report, and
    `facts`, what a scenario checks beyond that (e.g. the twin's error)."""

    def __init__(self, name, cfg, result, msgs, dev, recovery_s=None, attempts=(), **facts):
        ids = collections.Counter(int(m["system_properties"]["mid"]) for m in msgs)
        self.name = name
        self.client_kind = cfg.get("client_kind", "blocking")
        self.cfg = cfg
        self.result = result
        self.dev = dev
        self.recovery_s = recovery_s
        self.attempts = list(attempts)
        self.reconnects = result["stats"]["reconnects"]
        self.sent = cfg["n"]
        self.lost = len(set(range(cfg["n"])) - set(ids))
        self.dup = sum(k - 1 for k in ids.values())
        self.facts = facts

    def as_dict(self):
        return {
            "recovery_s": self.recovery_s,
            "attempts": self.attempts,
            "reconnects": self.reconnects,
            "sent": self.sent,
            "lost": self.lost,
            "dup": self.dup,
            "facts": self.facts,
        }


def recovered(name, emu, cfg, t_fault, result, msgs, dev, **facts):
    """Outcome of a scenario whose device had to reconnect: the first CONNACK 0 the hub sent
    after t_fault (the hub's clock, like its events) ends the recovery."""
    after = [
        ev
        for ev in emu.events
        if ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[0] > t_fault
    ]
    accepted = [i for i, ev in enumerate(after) if ev[3] == 0]
    assert accepted, "no reconnect after %s\n%s" % (name, dev.output)
    first = accepted[0]
    return Outcome(
        name,
        cfg,
        result,
        msgs,
        dev,
        recovery_s=after[first][0] - t_fault,
        attempts=[ev[3] for ev in after[: first + 1]],
        **facts,
    )


class Fault:
    """A fault injected into a running device: inject(emu, cfg) at t_fault; then, when given,
    until(emu, cfg, dev) returns on the event the fault waits for, `settle` seconds pass for a
    fault defined by its length (an outage), and heal(emu, cfg) ends it. `cfg` overrides the
    scenario's device settings; `bound_s` is the tests' wide upper bound on the recovery."""

    def __init__(self, label, inject, heal=None, until=None, settle=0.0, bound_s=30, **cfg):
        self.label = label
        self.inject = inject
        self.heal = heal
        self.until = until
        self.settle = settle
        self.bound_s = bound_s
        self.cfg = cfg


def _refuse_3(emu, cfg):
    emu.faults.set(refuse_connack=3)
    emu.drop(cfg["device_id"])


def _two_refusals(emu, cfg, dev):
    for _ in range(2):
        n = len(emu.events)
        emu.wait_event(
            lambda ev: ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[3] == 3,
            timeout=60,
            since=n,
        )


def _outage(emu, cfg):
    emu.endpoint.stop()
    emu.hub.event(None, "restart", None)


def _raw(data):
    return lambda emu, cfg: emu.send_raw(cfg["device_id"], data)


# The faults run_fault() injects, by key (test ids and the bench's rows use the keys).
FAULTS = collections.OrderedDict(
    [
        (
            "drop-mid-publish",
            Fault(
                "connection dropped mid-publish (no PUBACK)",
                lambda emu, cfg: emu.faults.set(drop_next_publish=1),
            ),
        ),
        (
            "connection-reset",
            Fault("connection reset", lambda emu, cfg: emu.drop(cfg["device_id"])),
        ),
        (
            # no PINGRESP, no PUBACK: the device's keepalive (3 s) finds the dead link
            "stall",
            Fault(
                "hub stalls (no PINGRESP, no PUBACK); keepalive 3 s, ack timeout 5 s",
                lambda emu, cfg: emu.faults.set(stall=True),
                heal=lambda emu, cfg: emu.faults.set(stall=False),
                until=lambda emu, cfg, dev: dev.expect("STATE retrying", 60),  # saw the dead link
                bound_s=60,
                keepalive=3,
                n=60,
            ),
        ),
        (
            "connack-3",
            Fault(
                "CONNACK 3 (server unavailable) until the device has been refused twice",
                _refuse_3,
                heal=lambda emu, cfg: emu.faults.set(refuse_connack=None),
                until=_two_refusals,
                bound_s=60,
            ),
        ),
        (
            "malformed-length",
            Fault("malformed packet: bad remaining length", _raw(b"\x30\xff\xff\xff\xff\x7f")),
        ),
        (
            "malformed-truncated",
            Fault("malformed packet: truncated PUBLISH", _raw(b"\x30\x03\x00\x09a")),
        ),
        (
            "malformed-type",
            Fault(
                "malformed packet: wrong packet type (SUBSCRIBE)",
                _raw(b"\x82\x05\x00\x01\x00\x00\x00"),
            ),
        ),
        (
            # announces 2 MB that never come: read through as a poison message, so only the
            # first PUBACK missing for timeout_ms tells the link is dead
            "oversize",
            Fault(
                "a PUBLISH announcing 2 MB that never come", _raw(b"\x30\xff\xff\x7f"), bound_s=60
            ),
        ),
        (
            "hub-restart",
            Fault(
                "hub restart after a 3 s outage",
                _outage,
                heal=lambda emu, cfg: emu.start(),
                settle=3.0,
                bound_s=60,
                n=50,
            ),
        ),
    ]
)


def run_fault(emu, mpy_dir, key, client_kind="blocking", heapsize=None):
    """Run FAULTS[key] against a new device on `emu`; its Outcome."""
    fault = FAULTS[key]
    cfg = cfg_for(emu, client_kind=client_kind, **fault.cfg)
    dev = start(cfg, mpy_dir, heapsize)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        t_fault = time.time()
        fault.inject(emu, cfg)
        if fault.until:
            fault.until(emu, cfg, dev)
        if fault.settle:
            time.sleep(fault.settle)  # the fault's length, not a wait for something to happen
        if fault.heal:
            fault.heal(emu, cfg)
        result, msgs = finish(dev, emu, cfg)
    finally:
        dev.kill()
    return recovered(fault.label, emu, cfg, t_fault, result, msgs, dev)


# CONNACK 5: the device waits this long in auth_failed, by its own clock and polling all the
# while, before the application replaces its credentials: twice the backoff maximum, so a
# client that retried would have tried again within it.
AUTH_WAIT_MS = 2 * BACKOFF[1]


def run_connack_5(emu, mpy_dir, flag, client_kind="blocking", heapsize=None):
    """CONNACK 5 (not authorized) after a drop: the device must not retry; after AUTH_WAIT_MS
    the host creates the file `flag` and the application calls update_credentials().
    facts["attempts_while_refused"]: the CONNACK codes the hub sent until then."""
    cfg = cfg_for(emu, flag=str(flag), n=40, auth_wait_ms=AUTH_WAIT_MS, client_kind=client_kind)
    dev = start(cfg, mpy_dir, heapsize)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        emu.faults.set(refuse_connack=5)
        t_fault = time.time()
        emu.drop(cfg["device_id"])
        dev.expect("STATE auth_failed")
        dev.expect("AUTH_WAITED", 60)
        refused = [
            ev[3]
            for ev in emu.events
            if ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[0] > t_fault
        ]
        emu.faults.set(refuse_connack=None)
        flag.write_text("go")  # the application replaces the credentials
        dev.expect("CREDENTIALS replaced")
        result, msgs = finish(dev, emu, cfg)
    finally:
        dev.kill()
    return recovered(
        "CONNACK 5 (not authorized), then new credentials",
        emu,
        cfg,
        t_fault,
        result,
        msgs,
        dev,
        attempts_while_refused=refused,
    )


# The hub's clock runs this far ahead: a 60 s token expires 8 s after the device made it,
# before the device's own renewal at 80 % (48 s).
EXPIRY_SKEW_S = 52


def run_token_expiry(pki, path, mpy_dir, client_kind="blocking", heapsize=None):
    """The hub closes the connection when the device's SAS token expires (by the hub's clock);
    the device recovers with a new token. Recovery from the hub's close."""
    emu = make_emu(pki, path, clock=lambda: time.time() + EXPIRY_SKEW_S)
    try:
        cfg = cfg_for(emu, sas_ttl=60, n=120, interval_ms=100, client_kind=client_kind)
        dev = start(cfg, mpy_dir, heapsize)
        try:
            dev.expect("READY")
            result, msgs = finish(dev, emu, cfg, timeout=90)
        finally:
            dev.kill()
        closes = [
            ev
            for ev in emu.events
            if ev[1] == cfg["device_id"] and ev[2] == "disconnect" and "expired" in str(ev[3])
        ]
        assert closes, "the hub never closed the connection at token expiry\n" + dev.output
        return recovered(
            "hub closes at SAS token expiry", emu, cfg, closes[0][0], result, msgs, dev
        )
    finally:
        emu.stop()


TWIN_429 = r"""
import devkit, iothub
c = devkit.client(CFG)
c.connect()
try:
    c.get_twin()
    print("ERR none")
except iothub.StatusError as e:
    print("ERR", e.status, e.retriable, e)
"""


def run_throttling(emu, mpy_dir, client_kind="blocking", heapsize=None, delay_s=1.0):
    """PUBACKs delayed `delay_s` (slow acknowledgements are not a dead link), then a twin
    request answered 429. facts: twin_error, the device's "ERR status retriable" line."""
    cfg = cfg_for(emu, n=10, client_kind=client_kind)
    emu.faults.set(delay_puback_s=delay_s)
    try:
        dev = start(cfg, mpy_dir, heapsize)
        try:
            dev.expect("READY")
            result, msgs = finish(dev, emu, cfg)
        finally:
            dev.kill()
    finally:
        emu.faults.set(delay_puback_s=0)
    emu.faults.set(twin_status_override=429)
    try:
        out = mpyrun.run(
            "CFG=%r\n" % cfg + TWIN_429, extra_path=[mpy_dir], heapsize=heapsize or DEVICE_HEAP
        )
    finally:
        emu.faults.set(twin_status_override=None)
    err = [ln for ln in out.stdout.splitlines() if ln.startswith("ERR")]
    assert err, out.stdout + out.stderr
    return Outcome(
        "throttling: PUBACKs delayed, twin 429", cfg, result, msgs, dev, twin_error=err[0]
    )


def run_desired_offline(emu, mpy_dir, client_kind="blocking", heapsize=None):
    """A desired patch made while the device is offline (its reconnect refused once with
    CONNACK 3) is delivered once after it reconnects. facts: versions (the hub's) and
    delivered (the device's on_desired calls)."""
    cfg = cfg_for(emu, n=50, client_kind=client_kind)
    dev = start(cfg, mpy_dir, heapsize)
    try:
        dev.expect("READY")
        emu.wait_telemetry(3, cfg["device_id"], timeout=20)
        v1 = emu.patch_desired(cfg["device_id"], {"a": 1})
        dev.expect("DESIRED")
        emu.faults.set(refuse_connack=3)
        n_before = len(emu.events)
        t_fault = time.time()
        emu.drop(cfg["device_id"])
        v2 = emu.patch_desired(cfg["device_id"], {"a": 2})  # while the device is offline
        emu.wait_event(  # the device tried while the patch was pending, and was refused
            lambda ev: ev[1] == cfg["device_id"] and ev[2] == "connack" and ev[3] == 3,
            timeout=60,
            since=n_before,
        )
        emu.faults.set(refuse_connack=None)
        result, msgs = finish(dev, emu, cfg)
    finally:
        dev.kill()
    return recovered(
        "desired patch made while the device was offline",
        emu,
        cfg,
        t_fault,
        result,
        msgs,
        dev,
        versions=[v1, v2],
        delivered=result["desired"],
    )


def run_soak(
    pki,
    path,
    mpy_dir,
    client_kind="blocking",
    n=1100,
    sample_every=100,
    drops=(400, 800),
    sas_ttl=15,
    heapsize=None,
    timeout=180,
):
    """`n` messages every 100 ms with `sas_ttl` s tokens (renewed at 80 %) and a connection
    drop after each count in `drops` (the device's count). facts["heap"]: the heap after
    gc.collect() every `sample_every` messages, as [count, bytes]."""
    emu = make_emu(pki, path)
    try:
        cfg = cfg_for(
            emu,
            sas_ttl=sas_ttl,
            n=n,
            interval_ms=100,
            sample_every=sample_every,
            client_kind=client_kind,
        )
        dev = start(cfg, mpy_dir, heapsize, body=SOAK_LOOP)
        try:
            dev.expect("READY")
            for at in drops:
                dev.expect("HEAPAT %d " % at, 120)
                emu.drop(cfg["device_id"])
            result, msgs = finish(dev, emu, cfg, timeout=timeout)
        finally:
            dev.kill()
        heap = [[int(x) for x in ln.split()[1:3]] for ln in dev.lines if ln.startswith("HEAPAT")]
        return Outcome(
            "soak", cfg, result, msgs, dev, heap=heap, renewals=result["stats"]["renewals"]
        )
    finally:
        emu.stop()
