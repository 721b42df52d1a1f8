"""iothub.aio.DeviceClient on the real unix port (its own asyncio) against the emulator over
real TLS: what the hub saw on the wire is what is asserted."""

import json
import uuid

import pytest
from devproc import DeviceProcess

import mpyrun
from iothub_emulator import Emulator


@pytest.fixture(scope="module")
def emu(pki, tmp_path_factory):
    with Emulator(str(tmp_path_factory.mktemp("emu-aio")), profile="ecc", pki=pki) as e:
        yield e


def cfg_for(emu, **extra):
    device_id = "aio-%s" % uuid.uuid4().hex[:8]
    emu.add_device(device_id)
    cfg = {
        "profile": emu.profile,
        "port": emu.port,
        "root": emu.root_der_file,
        "cs": emu.connection_string(device_id, gateway=False),
        "device_id": device_id,
    }
    cfg.update(extra)
    return cfg


def run(cfg, body, timeout=60):
    """Run an async main() on the device; returns its stdout lines (exit code checked)."""
    code = "CFG = %r\nimport asyncio, json, devkit, iothub\n%s\nasyncio.run(main())\n" % (cfg, body)
    proc = mpyrun.run(code, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def lines_with(lines, prefix):
    return [ln[len(prefix) :].strip() for ln in lines if ln.startswith(prefix)]


def test_connect_send_puback_disconnect(emu):
    cfg = cfg_for(emu)
    out = run(
        cfg,
        r"""
async def main():
    c = devkit.aio_client(CFG)
    states = []
    c.on_connection_state = lambda s, d: states.append(s)
    sp = await c.connect()
    print("CONNECTED", c.is_connected, c.state, sp)
    pid = await c.send({"t": 1}, properties={"k": "v"})
    print("PID", pid, c.queued)
    await c.send(b"qos0", qos=0)
    print("CIPHER", json.dumps(c.tls_info()["cipher"]))
    await c.disconnect()
    print("STATES", json.dumps(states))
    print("AFTER", c.state, c.is_connected, c.queued)
""",
    )
    assert lines_with(out, "CONNECTED") == ["True connected False"]
    assert lines_with(out, "PID") == ["1 0"]
    assert json.loads(lines_with(out, "STATES")[0]) == ["connected", "disconnected"]
    assert lines_with(out, "AFTER") == ["disconnected False 0"]
    msgs = emu.telemetry(cfg["device_id"])
    assert [m["payload"] for m in msgs] == [b'{"t":1}', b"qos0"]
    assert msgs[0]["properties"] == {"k": "v"}
    assert msgs[0]["system_properties"]["ct"] == "application/json"
    assert [m["qos"] for m in msgs] == [1, 0]


def test_pipelined_sends_are_acknowledged_in_order(emu):
    cfg = cfg_for(emu)
    emu.faults.delay_puback_s = 0.3  # every PUBACK held back: all eight are in flight at once
    try:
        out = run(
            cfg,
            r"""
async def main():
    c = devkit.aio_client(CFG, queue_size=16, queue_bytes=4096)
    await c.connect()
    done = []
    async def one(i):
        pid = await c.send(b"m%d" % i)
        done.append(pid)
    tasks = [asyncio.create_task(one(i)) for i in range(8)]
    await asyncio.sleep_ms(0)
    print("INFLIGHT", c.queued)
    await asyncio.gather(*tasks)
    print("DONE", json.dumps(done), c.queued)
    await c.disconnect()
""",
        )
    finally:
        emu.faults.delay_puback_s = 0
    assert lines_with(out, "INFLIGHT") == ["8"]
    done, queued = lines_with(out, "DONE")[0].rsplit(" ", 1)
    # every send resolved by its own PUBACK (the waiters wake in no particular order)
    assert sorted(json.loads(done)) == list(range(1, 9)) and queued == "0"
    msgs = emu.telemetry(cfg["device_id"])
    assert [m["payload"] for m in msgs] == [b"m%d" % i for i in range(8)]
    assert [m["packet_id"] for m in msgs] == list(range(1, 9))
    assert not any(m["dup"] for m in msgs)


INBOUND = r"""
import asyncio, json, devkit
got = set()
def on_desired(patch, version):
    print("DESIRED", json.dumps([patch, version]))
    got.add("desired")
def on_method(name, payload):
    if name == "slow":
        return slow(payload)  # a coroutine: answered when it returns
    got.add("plain")
    return 201, {"echo": payload}
async def slow(payload):
    await asyncio.sleep_ms(50)
    got.add("slow")
    return {"slept": payload}
async def on_message(msg):  # a coroutine handler runs as its own task
    await asyncio.sleep_ms(10)
    print("C2D", json.dumps([msg.body.decode(), msg.properties]))
    got.add("c2d")
async def main():
    c = devkit.aio_client(CFG)
    c.on_desired = on_desired
    c.on_method = on_method
    c.on_message = on_message
    await c.connect()
    twin = await c.get_twin()
    print("TWIN", json.dumps(twin))
    v = await c.update_reported({"fw": "1.0"})
    print("REPORTED", v)
    print("READY")
    for _ in range(300):
        if len(got) == 4:
            break
        await asyncio.sleep_ms(20)
    await asyncio.sleep_ms(100)  # the last method response goes out
    await c.disconnect()
    print("DONE", json.dumps(sorted(got)))
asyncio.run(main())
"""


def test_c2d_methods_twin_and_desired(emu):
    cfg = cfg_for(emu)
    dev = DeviceProcess(INBOUND, cfg)
    try:
        dev.expect("READY", 30)
        device_id = cfg["device_id"]
        twin = json.loads(dev.output.split("TWIN ", 1)[1].splitlines()[0])
        assert "desired" in twin and "reported" in twin
        assert emu.twin(device_id)["reported"]["fw"] == "1.0"
        v = emu.patch_desired(device_id, {"interval": 5})
        assert emu.invoke_method(device_id, "plain", {"x": 1}, timeout=10) == (
            201,
            {"echo": {"x": 1}},
        )
        assert emu.invoke_method(device_id, "slow", 7, timeout=10) == (200, {"slept": 7})
        emu.send_c2d(device_id, b"hello", properties={"cmd": "on"})
        assert json.loads(dev.expect("DESIRED")) == [{"interval": 5, "$version": v}, v]
        assert json.loads(dev.expect("C2D")) == ["hello", {"cmd": "on"}]
        assert json.loads(dev.expect("DONE")) == ["c2d", "desired", "plain", "slow"]
        assert dev.wait() == 0, dev.output
    finally:
        dev.kill()


RECONNECT = r"""
import asyncio, json, devkit
async def main():
    c = devkit.aio_client(CFG)
    states = []
    c.on_connection_state = lambda s, d: states.append(s)
    await c.connect()
    print("READY")
    for i in range(10):
        await c.send(b"r%d" % i, block=False)
        print("SENT", i)
        await asyncio.sleep_ms(60)
    await c.wait_sent(20000)
    print("QUEUED", c.queued, c.stats["reconnects"])
    print("STATES", json.dumps(states))
    await c.disconnect()
asyncio.run(main())
"""


def test_reconnect_after_drop_loses_nothing(emu):
    cfg = cfg_for(emu, backoff=[100, 500, 50])
    dev = DeviceProcess(RECONNECT, cfg)
    try:
        dev.expect("READY", 30)
        dev.expect("SENT 3")
        assert emu.drop(cfg["device_id"])
        assert dev.expect("QUEUED", 30) == "0 1"
        states = json.loads(dev.expect("STATES"))
        assert states[:4] == ["connected", "disconnected", "retrying", "connected"]
        assert dev.wait() == 0, dev.output
    finally:
        dev.kill()
    got = [m["payload"] for m in emu.telemetry(cfg["device_id"])]
    # each message arrives; one written before the drop may arrive twice (DUP, QoS 1)
    assert sorted(set(got)) == sorted(b"r%d" % i for i in range(10))
    first = [got.index(b"r%d" % i) for i in range(10)]
    assert first == sorted(first)  # in order


def test_auth_failure_stops_with_auth_failed(emu):
    cfg = cfg_for(emu)
    good = cfg["cs"].split("SharedAccessKey=")[1]
    cfg["cs"] = cfg["cs"].replace(good, "AAAA" + good[4:])
    out = run(
        cfg,
        r"""
async def main():
    c = devkit.aio_client(CFG)
    states = []
    c.on_connection_state = lambda s, d: states.append([s, d])
    try:
        await c.connect()
        print("ERR none")
    except iothub.AuthenticationError as e:
        print("ERR", repr(e))
    print("STATE", c.state, c.is_connected, json.dumps(states))
""",
    )
    err = lines_with(out, "ERR")[0]
    assert err.startswith("AuthenticationError") and "CONNACK 5" in err
    assert lines_with(out, "STATE") == ['auth_failed False [["auth_failed", 5]]']
    assert good not in "\n".join(out) and good[4:] not in "\n".join(out)


def test_cancelled_send_is_still_delivered(emu):
    cfg = cfg_for(emu)
    emu.faults.delay_puback_s = 0.5
    try:
        out = run(
            cfg,
            r"""
async def main():
    c = devkit.aio_client(CFG)
    await c.connect()
    t = asyncio.create_task(c.send(b"cancelled"))
    await asyncio.sleep_ms(50)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        print("CANCELLED", c.queued)
    try:
        await asyncio.wait_for_ms(c.send(b"timed-out"), 50)
    except asyncio.TimeoutError:
        print("TIMEDOUT", c.queued)
    try:
        await c.send(b"short", timeout_ms=50)
    except iothub.Timeout as e:
        print("TIMEOUT", c.queued, e)
    await c.wait_sent(10000)
    print("QUEUED", c.queued)
    await c.send(b"after")
    await c.disconnect()
""",
        )
    finally:
        emu.faults.delay_puback_s = 0
    assert lines_with(out, "CANCELLED") == ["1"]
    assert lines_with(out, "TIMEDOUT") == ["2"]
    assert lines_with(out, "TIMEOUT")[0].startswith("3 no PUBACK for message 3 within 50 ms")
    assert lines_with(out, "QUEUED") == ["0"]
    got = [m["payload"] for m in emu.telemetry(cfg["device_id"])]
    assert got == [b"cancelled", b"timed-out", b"short", b"after"]


def test_async_with_and_no_blocking_client_loaded(emu):
    cfg = cfg_for(emu)
    out = run(
        cfg,
        r"""
import sys
from iothub.aio import DeviceClient
print("LOADED", "iothub.client" in sys.modules)
async def main():
    async with devkit.aio_client(CFG) as c:
        print("INSIDE", c.is_connected)
        await c.send(b"with")
    print("AFTER", c.state, "iothub.client" in sys.modules)
""",
    )
    assert lines_with(out, "LOADED") == ["False"]
    assert lines_with(out, "INSIDE") == ["True"]
    assert lines_with(out, "AFTER") == ["disconnected False"]
    assert [m["payload"] for m in emu.telemetry(cfg["device_id"])] == [b"with"]


def test_disconnect_keeps_queued_messages(emu):
    cfg = cfg_for(emu)
    emu.faults.delay_puback_s = 1.0
    try:
        out = run(
            cfg,
            r"""
async def main():
    c = devkit.aio_client(CFG)
    await c.connect()
    await c.send(b"q1", block=False)
    await c.send(b"q2", block=False)
    await c.disconnect()
    print("QUEUED", c.queued)
    try:
        await c.send(b"q3")
    except iothub.ConnectionLost as e:
        print("ERR", e)
    print("QUEUED", c.queued)
    await c.connect()
    await c.wait_sent(10000)
    print("QUEUED", c.queued, c.stats["redelivered"])
    await c.disconnect()
""",
        )
    finally:
        emu.faults.delay_puback_s = 0
    assert lines_with(out, "QUEUED") == ["2", "3", "0 2"]
    assert "stays queued" in lines_with(out, "ERR")[0]
    msgs = emu.telemetry(cfg["device_id"])
    assert [m["payload"] for m in msgs] == [b"q1", b"q2", b"q1", b"q2", b"q3"]
    assert [m["dup"] for m in msgs] == [False, False, True, True, False]


def test_unsupported_transports_are_refused(emu):
    cfg = cfg_for(emu)
    out = run(
        cfg,
        r"""
async def main():
    for kw in ({"transport": "websockets"}, {"proxy": ("127.0.0.1", 3128, "u", "secret-pw")}):
        try:
            devkit.aio_client(CFG, **kw)
        except iothub.ConfigError as e:
            print("ERR", e)
""",
    )
    errs = lines_with(out, "ERR")
    assert len(errs) == 2
    assert "transport='websockets'" in errs[0] and "iothub.client.DeviceClient" in errs[0]
    assert "proxy" in errs[1] and "secret-pw" not in errs[1]


AUTH_LATER = r"""
import asyncio, json, devkit, iothub
async def main():
    c = devkit.aio_client(CFG)
    states = []
    c.on_connection_state = lambda s, d: states.append(s)
    await c.connect()
    print("READY")
    while c.state != "auth_failed":
        await asyncio.sleep_ms(20)
    print("AUTH_FAILED", c.stats["connects"])
    await asyncio.sleep_ms(600)  # longer than the backoff: no attempt is made meanwhile
    print("STILL", c.state, c.stats["connects"])
    try:
        await c.send(b"while refused")
    except iothub.ConnectionLost as e:
        print("SENDERR", c.queued, e)
    import os
    while True:  # until the test lifts the refusal
        try:
            os.stat(CFG["go"])
            break
        except OSError:
            await asyncio.sleep_ms(20)
    c.update_credentials(connection_string=CFG["cs"])
    while not c.is_connected:
        await asyncio.sleep_ms(20)
    await c.send(b"after")
    print("STATES", json.dumps(states))
    await c.disconnect()
asyncio.run(main())
"""


def test_auth_failed_waits_for_new_credentials(emu, tmp_path):
    go = tmp_path / "go"
    cfg = cfg_for(emu, backoff=[100, 200, 10], go=str(go))
    dev = DeviceProcess(AUTH_LATER, cfg)
    try:
        dev.expect("READY", 30)
        emu.faults.refuse_connack = 5
        assert emu.drop(cfg["device_id"])
        assert dev.expect("AUTH_FAILED", 30) == "1"
        assert dev.expect("STILL") == "auth_failed 1"
        # nothing more can happen until new credentials: the send gives up at once, queued
        assert dev.expect("SENDERR").startswith("1 authentication failed")
        emu.faults.refuse_connack = None
        go.write_text("go")
        states = json.loads(dev.expect("STATES", 30))
        assert states == ["connected", "disconnected", "retrying", "auth_failed", "connected"]
        assert dev.wait() == 0, dev.output
    finally:
        emu.faults.refuse_connack = None
        dev.kill()
    # the message queued while refused went out after the new credentials, before "after"
    assert [m["payload"] for m in emu.telemetry(cfg["device_id"])] == [b"while refused", b"after"]


def test_sas_token_renewed_at_80_percent(emu):
    cfg = cfg_for(emu, sas_ttl=10)
    out = run(
        cfg,
        r"""
async def main():
    c = devkit.aio_client(CFG)
    states = []
    c.on_connection_state = lambda s, d: states.append(s)
    await c.connect()
    t0 = time.ticks_ms()
    while c.stats["renewals"] == 0:
        await asyncio.sleep_ms(50)
    while not c.is_connected:
        await asyncio.sleep_ms(20)
    print("RENEWED", time.ticks_diff(time.ticks_ms(), t0) // 1000, c.stats["connects"])
    await c.send(b"renewed")
    print("STATES", json.dumps(states))
    await c.disconnect()
import time
""",
    )
    # 80 % of 10 s: not before 8 s (7 by whole seconds); before the hub would close the
    # link at expiry (no "retrying": the client left on its own, cleanly)
    secs, connects = lines_with(out, "RENEWED")[0].split()
    assert int(secs) >= 7 and connects == "2"
    assert json.loads(lines_with(out, "STATES")[0]) == ["connected", "disconnected", "connected"]
    assert [m["payload"] for m in emu.telemetry(cfg["device_id"])] == [b"renewed"]


PNP = r"""
import asyncio, json, devkit
async def main():
    c = devkit.aio_client(CFG, model_id="dtmi:com:example:iothub:Thermostat;1")
    c.components = ("thermostat1",)
    stop = asyncio.Event()
    def on_writable(component, name, value, version):
        print("WRITABLE", json.dumps([component, name, value, version]))
        return 200, "applied"
    def on_command(component, name, payload):
        if name == "stop":
            stop.set()
            return 200, None
        return 200, {"cmd": name, "component": component}
    c.on_writable = on_writable
    c.on_command = on_command
    await c.connect()
    await c.send({"temperature": 21.5}, component="thermostat1")
    v = await c.report_properties({"maxTempSinceLastReboot": 21.5}, component="thermostat1")
    print("REPORTED", v)
    print("READY")
    await stop.wait()
    await asyncio.sleep_ms(100)  # the stop response goes out
    await c.disconnect()
asyncio.run(main())
"""


def test_plug_and_play_with_plain_handlers(emu):
    cfg = cfg_for(emu)
    d = cfg["device_id"]
    dev = DeviceProcess(PNP, cfg)
    try:
        dev.expect("READY", 30)
        assert [m["component"] for m in emu.telemetry(d)] == ["thermostat1"]
        assert emu.twin(d)["reported"]["thermostat1"] == {
            "__t": "c",
            "maxTempSinceLastReboot": 21.5,
        }
        v = emu.set_writable(d, "targetTemperature", 23.5, component="thermostat1")
        st = emu.wait_writable_ack(d, "targetTemperature", "thermostat1", v, timeout=20)
        assert st["ack"] == {"ac": 200, "av": v, "ad": "applied", "value": 23.5}
        assert emu.invoke_command(d, "getReport", 1, component="thermostat1", timeout=20) == (
            200,
            {"cmd": "getReport", "component": "thermostat1"},
        )
        assert emu.invoke_command(d, "stop", timeout=20) == (200, None)
        assert dev.wait(30) == 0, dev.output
    finally:
        dev.kill()


def test_one_tls_record_per_packet(emu):
    """Pipelined sends are still one write, so one TLS record, per MQTT packet."""
    cfg = cfg_for(emu)
    before = len(emu.endpoint.connections)
    run(
        cfg,
        r"""
async def main():
    c = devkit.aio_client(CFG)
    await c.connect()
    await asyncio.gather(*[c.send({"i": i}, properties={"a": "1"}) for i in range(5)])
    await c.disconnect()
""",
    )
    conn = emu.endpoint.connections[before]
    conn.closed.wait(5)
    # after the handshake: CONNECT + 5 PUBLISH + DISCONNECT = 7 application-data records
    assert conn.records_in - conn.handshake_records_in == 7, (
        conn.records_in,
        conn.handshake_records_in,
    )
    assert len(emu.telemetry(cfg["device_id"])) == 5


def test_asyncio_without_io_queue_is_a_config_error(emu, tmp_path):
    """A port whose asyncio lacks the I/O queue: the constructor names what is missing (a
    stub asyncio package shadows the frozen one)."""
    stub = tmp_path / "asyncio"
    stub.mkdir()
    (stub / "__init__.py").write_text("class Event:\n    pass\n")
    (stub / "core.py").write_text("cur_task = None\n")
    cfg = cfg_for(emu)
    code = (
        "CFG = %r\nimport devkit, iothub\n"
        "try:\n    devkit.aio_client(CFG)\n    print('ERR none')\n"
        "except iothub.ConfigError as e:\n    print('ERR', e)\n" % cfg
    )
    proc = mpyrun.run(code, extra_path=[tmp_path], timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    err = lines_with(proc.stdout.splitlines(), "ERR")[0]
    assert "asyncio" in err and "_io_queue" in err, err
