"""Heap discipline of DeviceClient on the unix port, against the emulator over TLS:

- the send path allocates nothing: QoS 1 sends (until their PUBACK) of a bytes payload
  with no properties, or with the same properties (and Plug and Play component) as the
  previous send, and QoS 0 sends, all under micropython.heap_lock() (any allocation raises
  MemoryError there);
- a long outage cannot fragment the heap: a few hundred queued sends of random sizes
  with the hub down (queue full, drop-oldest), then an 8 KB contiguous block must still
  be allocatable, and once the hub is back the newest queued messages arrive in order.

Both with the package as .py sources and compiled to .mpy."""

import json

import pytest
from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator


@pytest.fixture
def emu(pki, tmp_path):
    with Emulator(str(tmp_path), profile="ecc", pki=pki) as e:
        yield e


def cfg_for(emu, device_id, **extra):
    emu.add_device(device_id)
    cfg = {
        "profile": "ecc",
        "port": emu.port,
        "root": emu.root_der_file,
        "cs": emu.connection_string(device_id, gateway=False),
        "device_id": device_id,
    }
    cfg.update(extra)
    return cfg


HEAP_LOCKED = r"""
import json, micropython
import devkit

c = devkit.client(CFG)
c.connect()
props = {"sensor": "bme280", "alert": "low"}
comp = CFG.get("component")  # a Plug and Play component: part of the cached topic
body = b'{"temperature":21.5,"humidity":40.25,"pressure":1013.25,"seq":1}'


def locked(n):
    step = "start"
    done = 0
    micropython.heap_lock()
    try:
        for i in range(n):
            step = "QoS 1, same properties"
            c.send(body, properties=props, component=comp)
            step = "QoS 1, no properties"
            c.send(body)
            step = "QoS 0, no properties"
            c.send(body, qos=0)
            step = "poll(0)"
            c.poll(0)
            done += 1
        step = "done"
    except MemoryError:
        pass
    micropython.heap_unlock()
    return step, done


# warm up: the cached topic, the decoder's packet, ipoll's result tuple are made once
for _ in range(3):
    c.send(body, properties=props, component=comp)
    c.send(body)
    c.send(body, qos=0)
    c.poll(0)
step, done = locked(CFG["n"])
c.send(body)  # the link is still good
print("RESULT", json.dumps({"step": step, "done": done, "queued": c.queued, "stats": c.stats}))
c.disconnect()
"""


@pytest.mark.parametrize("form", ["py", "mpy"])
def test_send_path_allocates_nothing(emu, mpy_dir, form):
    cfg = cfg_for(emu, "heap-lock-" + form, n=100)
    extra = [mpy_dir] if form == "mpy" else []
    out = mpyrun.run("CFG=%r\n" % cfg + HEAP_LOCKED, timeout=120, extra_path=extra, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stdout + out.stderr
    r = json.loads(line[-1][7:])
    assert r["step"] == "done", "allocated under heap_lock at: %s\n%s" % (r["step"], out.stdout)
    assert r["done"] == 100 and r["queued"] == 0, r
    # every message reached the hub: 3 per round, the warm-up's 9 and the last one
    emu.wait_telemetry(3 * 100 + 9 + 1, cfg["device_id"], timeout=20)
    assert len(emu.telemetry(cfg["device_id"])) == 3 * 100 + 9 + 1


@pytest.mark.parametrize("form", ["py", "mpy"])
def test_component_send_allocates_nothing(emu, mpy_dir, form):
    # send(component=) keys the topic cache too: unchanged properties and component reuse it
    cfg = cfg_for(emu, "heap-lock-pnp-" + form, n=100, component="thermostat1")
    extra = [mpy_dir] if form == "mpy" else []
    out = mpyrun.run("CFG=%r\n" % cfg + HEAP_LOCKED, timeout=120, extra_path=extra, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, out.stdout + out.stderr
    r = json.loads(line[-1][7:])
    assert r["step"] == "done", "allocated under heap_lock at: %s\n%s" % (r["step"], out.stdout)
    assert r["done"] == 100 and r["queued"] == 0, r
    emu.wait_telemetry(3 * 100 + 9 + 1, cfg["device_id"], timeout=20)
    msgs = emu.telemetry(cfg["device_id"])
    # one component send per round and in the warm-up, the others bare
    assert [m["component"] for m in msgs].count("thermostat1") == 100 + 3
    first = msgs[0]
    assert first["component"] == "thermostat1" and first["properties"] == {
        "sensor": "bme280",
        "alert": "low",
    }


CFG_HEAP = 160 * 1024

OUTAGE = r"""
import gc, json, os, time
import devkit


def wait_flag(path):
    # the host's signal (a file appears); the client keeps running meanwhile
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < 60000:
        try:
            os.stat(path)
            return
        except OSError:
            c.poll(20)
    raise SystemExit("no signal from the host: " + path)


c = devkit.client(CFG)
c.connect()
print("READY")
wait_flag(CFG["flag"] + ".down")  # the host has stopped the hub
sizes = [0] * CFG["n"]  # preallocated: the test's own bookkeeping must not fragment the heap
seed = 12345
for i in range(CFG["n"]):
    seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
    size = 20 + seed % 1981  # 20..2000 bytes
    sizes[i] = size
    payload = bytearray(size)  # the application's buffer: garbage once queued (copied)
    payload[0] = i & 0xFF
    c.send(payload, message_id=str(i), block=False)
    c.poll(0)
gc.collect()
big = None
try:
    big = bytearray(8192)  # what a Pico W handshake needs with the rsa preset: 6 + 2 KB
except MemoryError:
    pass
ok8k = big is not None
big = None
print("OUTAGE", json.dumps({"queued": c.queued, "dropped": c.dropped, "ok8k": ok8k, "stats": c.stats, "mods": sorted(k for k in __import__("sys").modules if k.startswith("iothub")),
      "heap": gc.mem_alloc(), "free": gc.mem_free()}))
wait_flag(CFG["flag"] + ".up")  # the hub is back
t0 = time.ticks_ms()
while (c.queued or not c.is_connected) and time.ticks_diff(time.ticks_ms(), t0) < 30000:
    c.poll(100)
print("RESULT", json.dumps({"queued": c.queued, "state": c.state, "sizes": sizes}))
c.disconnect()
"""


@pytest.mark.parametrize("form", ["mpy"])
def test_long_outage_does_not_fragment_the_heap(emu, mpy_dir, form, tmp_path):
    n = 300
    flag = str(tmp_path / "flag")
    cfg = cfg_for(
        emu,
        "outage-" + form,
        n=n,
        backoff=[200, 1000, 100],
        timeout_ms=5000,
        queue_size=64,  # the ring (queue_bytes, default 4096) is the limit that bites
        flag=flag,
    )
    dev = DeviceProcess(OUTAGE, cfg, heapsize=CFG_HEAP, extra_path=[mpy_dir])
    try:
        dev.expect("READY", 60)
        emu.endpoint.stop()
        open(flag + ".down", "w").close()
        outage = json.loads(dev.expect("OUTAGE", 120))
        emu.start()
        open(flag + ".up", "w").close()
        result = json.loads(dev.expect("RESULT", 60))
        assert dev.wait(10) == 0, dev.output
    finally:
        dev.kill()
    assert outage["ok8k"], "no 8 KB contiguous block after the outage: %r" % (outage,)
    assert outage["dropped"] > 0 and outage["queued"] > 0, outage
    assert result["queued"] == 0 and result["state"] == "connected", result
    # The newest queued messages arrived, in the order they were sent.
    ids = [int(m["system_properties"]["mid"]) for m in emu.telemetry(cfg["device_id"])]
    assert ids == sorted(ids), ids
    assert ids[-1] == n - 1 and len(ids) == outage["queued"], (ids, outage)
    assert ids == list(range(n - len(ids), n)), ids
    sizes = result["sizes"]
    got = {
        int(m["system_properties"]["mid"]): len(m["payload"])
        for m in emu.telemetry(cfg["device_id"])
    }
    assert all(got[i] == sizes[i] for i in ids)
