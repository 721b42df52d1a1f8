"""The umqtt.simple route against DeviceClient: GC heap and TLS records per telemetry message.

Both routes run on the real MicroPython unix port against the emulator (ECC hub, SAS) in the
same run: micropython-lib's umqtt.simple driven by iothub.umqtt_simple, and iothub's
DeviceClient (the baseline). Each route runs in its own fresh process and reports the GC heap
retained (gc.mem_alloc() after gc.collect(), minus the same before any import) after its
imports, after building its client, and after connecting and sending one QoS 1 message. The
emulator counts the TLS records and bytes of that message (sampled just before and after it).

umqtt.simple is not part of this repository: set UMQTT_SIMPLE to a copy of micropython-lib's
micropython/umqtt.simple/umqtt/simple.py. Without it the bench says so and writes nothing.

    UMQTT_SIMPLE=/path/umqtt/simple.py .venv/bin/python tools/bench/bench_umqtt_route.py
        [--mp BINARY] [--figures docs/figures.md]   # block "umqtt-route"

Not a test: it prints what this run measured (host_tests/test_umqtt_simple.py checks the route).
"""

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

BODY = b'{"temperature":21.5,"humidity":40.25,"pressure":1013.25,"seq":1}'
PROPS = {"sensor": "bme280", "alert": "low"}

# The device program. argv: route ("umqtt" or "client"), config JSON path. MARK lines make
# the host sample the emulator's counters; the host answers each with a newline on stdin.
DEVICE = r"""
import gc, json, sys
gc.collect()
h0 = gc.mem_alloc()
route = sys.argv[1]
with open(sys.argv[2]) as f:
    cfg = json.load(f)
with open(cfg["root"], "rb") as f:
    root = f.read()
gc.collect()
h0 = gc.mem_alloc()

def mark(name):
    print("MARK " + name)
    sys.stdin.readline()

def heap():
    gc.collect()
    return gc.mem_alloc() - h0

out = {}
if route == "umqtt":
    from umqtt.simple import MQTTClient
    from iothub.umqtt_simple import from_connection_string
    out["import"] = heap()
    hub = from_connection_string(cfg["cs"], tls="ecc", roots=[root], host="localhost",
                                 port=cfg["port"])
    c = MQTTClient(**hub.kwargs())
    out["object"] = heap()
    c.connect(clean_session=False)
    topic = hub.telemetry_topic(cfg["props"])
    mark("before")
    c.publish(topic, cfg["body"].encode(), qos=1)
    mark("after")
else:
    from iothub.client import DeviceClient
    out["import"] = heap()
    c = DeviceClient.from_connection_string(cfg["cs"], tls="ecc", roots=[root],
                                            host="127.0.0.1", port=cfg["port"])
    out["object"] = heap()
    c.connect()
    mark("before")
    c.send(cfg["body"].encode(), properties=cfg["props"])
    mark("after")
out["connected"] = heap()
out["modules"] = sorted(m for m in sys.modules if m.startswith("iothub") or m.startswith("umqtt"))
c.disconnect()
print(json.dumps(out))
"""


def micropython():
    return os.environ.get("MICROPYTHON") or str(ROOT / ".venv/bin/micropython")


def run_route(binary, route, cfg, path, emu, timeout=60):
    tmp = pathlib.Path(path)
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    (tmp / "device.py").write_text(DEVICE)
    env = dict(os.environ, MICROPYPATH="%s:%s" % (tmp / "lib", ROOT / "firmware"))
    proc = subprocess.Popen(
        [binary, str(tmp / "device.py"), route, str(tmp / "cfg.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    killer = threading.Timer(timeout, proc.kill)  # bounds every wait below
    killer.start()
    marks, lines = {}, []
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("MARK "):
                conn = emu.endpoint.connections[-1]
                marks[line.split()[1]] = (conn, conn.bytes_in, len(conn.record_sizes_in))
                proc.stdin.write("\n")
                proc.stdin.flush()
        rc = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if rc != 0 or not lines:
        raise SystemExit("%s route failed (exit %s):\n%s" % (route, rc, "\n".join(lines[-20:])))
    res = json.loads(lines[-1])
    (c1, b1, r1), (c2, b2, r2) = marks["before"], marks["after"]
    if c1 is not c2:
        raise SystemExit("%s route: the marks were sampled on different connections" % route)
    res["records"], res["bytes"] = r2 - r1, b2 - b1
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mp", default=micropython(), help="MicroPython unix binary")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    src = os.environ.get("UMQTT_SIMPLE")
    if not src:
        print(
            "UMQTT_SIMPLE is not set: nothing measured (point it at a copy of micropython-lib's "
            "micropython/umqtt.simple/umqtt/simple.py)"
        )
        return 0
    if not os.path.isfile(src):
        raise SystemExit("UMQTT_SIMPLE=%s: no such file" % src)
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-umqtt-") as tmp:
        (pathlib.Path(tmp) / "lib" / "umqtt").mkdir(parents=True)
        shutil.copy(src, pathlib.Path(tmp) / "lib" / "umqtt" / "simple.py")
        with Emulator(os.path.join(tmp, "emu"), profile="ecc") as emu:
            (pathlib.Path(tmp) / "root.der").write_bytes(emu.root_der)
            for route in ("umqtt", "client"):
                device = "bench-" + route
                emu.add_device(device)
                cfg = {
                    "cs": emu.connection_string(device, gateway=False),
                    "root": str(pathlib.Path(tmp) / "root.der"),
                    "port": emu.port,
                    "body": BODY.decode(),
                    "props": PROPS,
                }
                res[route] = run_route(args.mp, route, cfg, tmp, emu)
                got = emu.wait_telemetry(1, device)
                if got[0]["payload"] != BODY or got[0]["properties"] != PROPS:
                    raise SystemExit("%s route: the hub got %r" % (route, got[0]))
    u, c = res["umqtt"], res["client"]
    print("umqtt.simple route vs DeviceClient, unix port %s, ECC hub, SAS" % args.mp)
    print("%-44s %12s %14s %6s" % ("GC heap retained (B)", "umqtt route", "DeviceClient", "ratio"))
    for key, name in (
        ("import", "after the imports"),
        ("object", "after building the client"),
        ("connected", "connected, one QoS 1 message sent"),
    ):
        print("%-44s %12d %14d %6.2f" % (name, u[key], c[key], u[key] / c[key]))
    print(
        "%-44s %12d %14d" % ("TLS records device -> hub, one message", u["records"], c["records"])
    )
    print("%-44s %12d %14d" % ("TLS bytes device -> hub, one message", u["bytes"], c["bytes"]))
    print("modules, umqtt route: %s" % ", ".join(u["modules"]))
    if args.figures:
        digest = hashlib.sha256(pathlib.Path(src).read_bytes()).hexdigest()[:12]
        source = figures.source_line() + ", umqtt/simple.py with sha256 prefix %s" % digest
        figures.write_block(args.figures, "umqtt-route", markdown(u, c), source)
    return 0


def _kb(n):
    return "%.1f KB" % (n / 1000)


def markdown(u, c):
    rows = []
    for key, name in (
        ("import", "after the imports"),
        ("object", "after building the client (TLS context, SAS token)"),
        ("connected", "connected, one QoS 1 telemetry message sent"),
    ):
        rows.append((name, _kb(u[key]), _kb(c[key]), "%.2f" % (u[key] / c[key])))
    rows.append(
        (
            "TLS records device → hub for that message",
            "%d" % u["records"],
            "%d" % c["records"],
            "%.2f" % (u["records"] / c["records"]),
        )
    )
    return figures.table(["", "umqtt.simple + iothub.umqtt_simple", "DeviceClient", "ratio"], rows)


if __name__ == "__main__":
    sys.exit(main())
