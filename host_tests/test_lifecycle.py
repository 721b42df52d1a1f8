"""Field lifecycle under fault injection (README "Lifecycle"): the device, running the precompiled
package on the unix port with a device-sized heap, keeps sending numbered QoS 1 messages
while the emulator misbehaves. For every fault it recovers without a restart, within a wide
bound, and loses no message. Every fault scenario runs against both clients (the
`client_kind` fixture: the blocking DeviceClient, and iothub.aio's through devkit's
synchronous facade).

The scenarios themselves are in lifecycle_scenarios.py, shared with
tools/bench/bench_lifecycle.py, which measures the recovery times and soak figures the README
shows: these tests assert behaviour and print no figures."""

import pytest
from lifecycle_scenarios import (
    DEVICE_HEAP,
    FAULTS,
    cfg_for,
    finish,
    make_emu,
    run_connack_5,
    run_desired_offline,
    run_fault,
    run_soak,
    run_throttling,
    run_token_expiry,
    start,
)

import mpyrun

# Only test_smallest_heap's bisection (a measurement for custom builds, README "Device heap in
# board-like conditions"), printed in pytest's summary by conftest.py.
RECOVERY = {}


@pytest.fixture
def emu(pki, tmp_path):
    e = make_emu(pki, tmp_path)
    yield e
    e.faults.reset()
    e.stop()


def fault(emu, mpy_dir, key, client_kind):
    """Run FAULTS[key]: the device reconnected, within the fault's wide bound."""
    o = run_fault(emu, mpy_dir, key, client_kind)
    assert o.reconnects >= 1, o.result
    assert o.lost == 0
    assert o.recovery_s < FAULTS[key].bound_s, (o.recovery_s, o.dev.output)
    return o


def test_drop_mid_publish(emu, mpy_dir, client_kind):
    o = fault(emu, mpy_dir, "drop-mid-publish", client_kind)
    assert "STATE retrying" in o.dev.output


def test_connection_reset(emu, mpy_dir, client_kind):
    fault(emu, mpy_dir, "connection-reset", client_kind)


def test_stall_detected_by_keepalive(emu, mpy_dir, client_kind):
    fault(emu, mpy_dir, "stall", client_kind)


def test_connack_3_is_retried(emu, mpy_dir, client_kind):
    o = fault(emu, mpy_dir, "connack-3", client_kind)
    assert o.attempts.count(3) >= 2, "CONNACK 3 is retriable: expected several attempts"
    assert o.attempts[-1] == 0, o.attempts
    assert "auth_failed" not in o.dev.output


def test_connack_5_is_not_retried_until_credentials_change(emu, mpy_dir, tmp_path, client_kind):
    o = run_connack_5(emu, mpy_dir, tmp_path / "flag", client_kind)
    # one attempt in twice the backoff maximum of the device's own time, polling all the while
    assert o.facts["attempts_while_refused"] == [5], o.facts
    assert o.attempts == [5, 0], o.attempts
    assert o.recovery_s < 60, o.recovery_s


def test_hub_closes_at_token_expiry(pki, tmp_path, mpy_dir, client_kind):
    o = run_token_expiry(pki, tmp_path, mpy_dir, client_kind)
    assert o.reconnects >= 1 and o.lost == 0, o.result
    assert o.recovery_s < 30, o.recovery_s


def test_throttling_delayed_pubacks_and_twin_429(emu, mpy_dir, client_kind):
    o = run_throttling(emu, mpy_dir, client_kind)
    assert o.reconnects == 0  # slow PUBACKs are not a dead link
    assert o.facts["twin_error"].startswith("ERR 429 True"), o.facts


@pytest.mark.parametrize(
    "key", ["malformed-length", "malformed-truncated", "oversize", "malformed-type"]
)
def test_malformed_packets(emu, mpy_dir, key, client_kind):
    fault(emu, mpy_dir, key, client_kind)


def test_hub_restart_with_outage(emu, mpy_dir, client_kind):
    fault(emu, mpy_dir, "hub-restart", client_kind)


def test_desired_patch_missed_offline_is_delivered_once(emu, mpy_dir, client_kind):
    o = run_desired_offline(emu, mpy_dir, client_kind)
    assert o.facts["delivered"] == o.facts["versions"], o.facts


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
    # another key: its first character changed (a random key starts with "B" once in 64)
    bad = ("A" if key[0] == "B" else "B") + key[1:]
    wrong = dict(cfg, cs=cfg["cs"].replace(key, bad))
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
    sig_fragments = [key, key[:16], bad[:17]]
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
    o = run_soak(pki, tmp_path, mpy_dir, client_kind)
    assert o.lost == 0 and o.facts["renewals"] >= 5, o.result
    heap = [b for _, b in o.facts["heap"]]
    # after the first samples (first renewal, first reconnect), no growth
    steady = heap[3:]
    assert max(steady) - min(steady) < 2048, heap


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
                # GC heap (Pico W-like builds) failing its handshake with ENOMEM, or failing
                # the chain's verification: mbedTLS reports an allocation that failed there
                # as an untrusted chain, and this chain was verified by the first connect
                # (READY), with the same roots (seen at 46 KiB on the Pico W-like build).
                if (
                    "MemoryError" in out
                    or "out of memory" in out
                    or "ENOMEM" in out
                    or ("READY" in out and "does not chain to a trusted root" in out)
                ):
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
