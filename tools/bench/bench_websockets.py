"""MQTT over WebSockets versus plain MQTT (the baseline, measured in the same run): what port 443
costs on the wire and on the device.

The device is the real MicroPython unix port running the iothub package; the hub is the
emulator over real TLS on loopback, serving the same hub on its MQTT and WebSocket ports. Its
endpoints count every byte and TLS record in each direction.

    python tools/bench/bench_websockets.py [--messages 20] [--mp BINARY] [--json FILE]

 1. Connection setup, ECC hub, SAS: TLS handshake bytes, the WebSocket upgrade (request and
    101 answer), CONNECT + CONNACK; the total until CONNACK; ratio websockets / mqtt.
 2. Per QoS 1 message (64-byte JSON body, two custom properties): bytes and TLS records of the
    PUBLISH (device -> hub) and of the PUBACK (hub -> device), incl. the 5-byte record headers;
    WebSocket frame header bytes; ratio websockets / mqtt.
 3. Masking cost on the device: microseconds per KiB for the viper loop and for the portable
    loop (the fallback, also the baseline), and for a whole WebSocket.write() of a 1 KiB packet
    into a sink; ratio portable / viper.
 4. GC heap: retained by `import iothub.websocket` (with wsproto, and the viper loop compiled),
    by `import iothub.proxy`, and by one WebSocket object (its buffers) with the default
    1 KiB txbuf; .py sources and .mpy.

Not a test: it prints what this run measured (host_tests/test_websockets_e2e.py runs it with
--messages 3 and checks the structural facts). `make bench` runs it with the defaults.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

import figures  # noqa: E402

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402
from iothub_tool.mpy import compile_package  # noqa: E402

BODY = '{"temperature":21.5,"humidity":40.25,"pressure":1013.25,"seq":1}'
PROPS = {"sensor": "bme280", "alert": "low"}
TLS_HEADER = 5

SENDER = r"""
import sys, iothub
a = sys.argv
with open(a[3], "rb") as f:
    root = f.read()
c = iothub.DeviceClient.from_connection_string(
    a[1], tls="ecc", roots=[root], host="127.0.0.1", port=int(a[2]), transport=a[4])
c.connect()
for i in range(int(a[5])):
    c.send(a[6], properties={"sensor": "bme280", "alert": "low"})
c.disconnect()
print("SENT", a[5])
"""

MASKING = r"""
import json, time
from iothub import wsproto, websocket
src = bytearray(1024)
for i in range(1024):
    src[i] = i & 255
dst = bytearray(1024)
key = b"\x12\x34\x56\x78"
def per_kib(fn, rounds):
    t = time.ticks_us()
    for _ in range(rounds):
        fn()
    return time.ticks_diff(time.ticks_us(), t) / rounds
class Sink:
    def write(self, buf, off, n):
        return n
ws = websocket.WebSocket(Sink(), None, None, 1024)
print(json.dumps({
    "viper": wsproto.mask is not wsproto.mask_py,
    "fast_us": per_kib(lambda: wsproto.mask(dst, 0, src, 0, 1024, key), 2000),
    "portable_us": per_kib(lambda: wsproto.mask_py(dst, 0, src, 0, 1024, key), 50),
    "write_us": per_kib(lambda: ws.write(src), 2000),
}))
"""

HEAP = r"""
import gc, json
gc.collect()
a0 = gc.mem_alloc()
import iothub.errors, iothub.clock
gc.collect()
a1 = gc.mem_alloc()
import iothub.websocket
gc.collect()
a2 = gc.mem_alloc()
import iothub.proxy
gc.collect()
a3 = gc.mem_alloc()
class Sink:
    def write(self, buf, off, n):
        return n
w = iothub.websocket.WebSocket(Sink(), None, None, 1024, 32768)
gc.collect()
a4 = gc.mem_alloc()
print(json.dumps({"base": a1 - a0, "websocket": a2 - a1, "proxy": a3 - a2, "object": a4 - a3,
    "mask_viper": iothub.wsproto.mask is not iothub.wsproto.mask_py}))
"""


def micropython(arg=None):
    return arg or os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")


def run_mp(mp, code, pkg, args=()):
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % pkg)
    p = subprocess.run(
        [mp, "-c", code] + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(ROOT),
    )
    if p.returncode != 0:
        raise SystemExit("device run failed:\n%s\n%s" % (p.stdout, p.stderr))
    return p.stdout.strip().splitlines()[-1]


def wire(emu, mp, transport, n, root):
    device_id = "bench-%s" % transport[:2]  # same length: same topic and CONNECT sizes
    if emu.device_key(device_id) is None:
        emu.add_device(device_id)
    ep = emu.ws_endpoint if transport == "websockets" else emu.endpoint
    before = len(ep.connections)
    port = emu.ws_port if transport == "websockets" else emu.port
    cs = emu.connection_string(device_id, gateway=False)
    run_mp(mp, SENDER, ROOT / "firmware", [cs, port, root, transport, n, BODY])
    conn = ep.connections[before]
    conn.closed.wait(10)
    hs_in, hs_out = conn.handshake_bytes_in, conn.handshake_bytes_out
    recs_in = conn.record_sizes_in[conn.handshake_records_in :]
    recs_out = conn.record_sizes_out[conn.handshake_records_out :]
    ws = transport == "websockets"
    # device -> hub after the handshake: [upgrade], CONNECT, n x PUBLISH, DISCONNECT, ...
    up_in = recs_in[0] + TLS_HEADER if ws else 0
    connect = recs_in[1 if ws else 0] + TLS_HEADER
    pubs = recs_in[(2 if ws else 1) : (2 if ws else 1) + n]
    # hub -> device: [101 answer], CONNACK, n x PUBACK
    up_out = recs_out[0] + TLS_HEADER if ws else 0
    connack = recs_out[1 if ws else 0] + TLS_HEADER
    pubacks = recs_out[(2 if ws else 1) : (2 if ws else 1) + n]
    assert len(pubs) == n and len(set(pubs)) == 1, pubs
    assert len(pubacks) == n and len(set(pubacks)) == 1, pubacks
    return {
        "tls_handshake": hs_in + hs_out,
        "upgrade": up_in + up_out,
        "connect_connack": connect + connack,
        "setup_total": hs_in + hs_out + up_in + up_out + connect + connack,
        "publish_bytes": pubs[0] + TLS_HEADER,
        "publish_records": 1,
        "puback_bytes": pubacks[0] + TLS_HEADER,
        "message_total": pubs[0] + pubacks[0] + 2 * TLS_HEADER,
        "frames_in": getattr(conn, "ws_frames_in", None),
    }


def ratio(a, b):
    return "%.3f" % (a / b) if b else "-"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--mp", default=None)
    ap.add_argument("--json", default=None)
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    mp = micropython(args.mp)
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        pki = TestPKI.load_or_create(os.path.join(tmp, "pki"))
        with Emulator(os.path.join(tmp, "hub"), profile="ecc", pki=pki, ws_port=0) as emu:
            root = os.path.join(tmp, "root.der")
            with open(root, "wb") as f:
                f.write(emu.root_der)
            for t in ("mqtt", "websockets"):
                res[t] = wire(emu, mp, t, args.messages, root)
        mpy_dir = pathlib.Path(tmp) / "mpy"
        compile_package(mpy_dir)
        res["masking"] = json.loads(run_mp(mp, MASKING, ROOT / "firmware"))
        res["heap_py"] = json.loads(run_mp(mp, HEAP, ROOT / "firmware"))
        res["heap_mpy"] = json.loads(run_mp(mp, HEAP, mpy_dir))

    m, w = res["mqtt"], res["websockets"]
    print(
        "MQTT over WebSockets vs plain MQTT (baseline), ECC hub, SAS, %d messages" % args.messages
    )
    print()
    print("1. Connection setup, bytes on the wire (both directions, TLS record headers included)")
    print("   %-34s %10s %12s %8s" % ("", "mqtt", "websockets", "ratio"))
    for k, label in (
        ("tls_handshake", "TLS handshake"),
        ("upgrade", "WebSocket upgrade + 101"),
        ("connect_connack", "CONNECT + CONNACK"),
        ("setup_total", "total until CONNACK"),
    ):
        print("   %-34s %10d %12d %8s" % (label, m[k], w[k], ratio(w[k], m[k])))
    print()
    print("2. One QoS 1 message (64-byte JSON body, 2 properties), bytes incl. record headers")
    print("   %-34s %10s %12s %8s" % ("", "mqtt", "websockets", "ratio"))
    for k, label in (
        ("publish_bytes", "PUBLISH record, device -> hub"),
        ("puback_bytes", "PUBACK record, hub -> device"),
        ("message_total", "message total"),
        ("publish_records", "TLS records per PUBLISH"),
    ):
        print("   %-34s %10d %12d %8s" % (label, m[k], w[k], ratio(w[k], m[k])))
    print()
    k = res["masking"]
    print("3. Masking on the unix port (%s loop in use)" % ("viper" if k["viper"] else "portable"))
    print("   portable loop (baseline)          %8.1f us/KiB" % k["portable_us"])
    print(
        "   viper loop                        %8.2f us/KiB  (portable / viper = %.0f x)"
        % (k["fast_us"], k["portable_us"] / k["fast_us"])
    )
    print("   WebSocket.write(1 KiB) to a sink  %8.2f us" % k["write_us"])
    print()
    print("4. GC heap retained (bytes)                  .py      .mpy")
    for key, label in (
        ("websocket", "import iothub.websocket (+ wsproto)"),
        ("proxy", "import iothub.proxy"),
        ("object", "one WebSocket (txbuf 1 KiB)"),
    ):
        print("   %-38s %8d %9d" % (label, res["heap_py"][key], res["heap_mpy"][key]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.figures:
        rows = []
        for key, label in (
            ("setup_total", "bytes until CONNACK (handshake, upgrade, CONNECT)"),
            ("message_total", "bytes per QoS 1 message, both ways"),
            ("publish_records", "TLS records per PUBLISH"),
        ):
            rows.append([label, m[key], w[key], ratio(w[key], m[key])])
        rows.append(
            [
                "masking, us per KiB (portable / viper)",
                "-",
                "%.1f / %.2f" % (k["portable_us"], k["fast_us"]),
                "-",
            ]
        )
        rows.append(
            [
                "heap of `import iothub.websocket` (.mpy)",
                "-",
                "%d B" % res["heap_mpy"]["websocket"],
                "-",
            ]
        )
        md = figures.table(["", "MQTT (8883)", "WebSockets (443)", "ratio"], rows)
        figures.write_block(args.figures, "websockets", md, figures.source_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
