"""Device-client figures: wire cost of one telemetry message, heap by import, heap across
many sends, and the smallest heap for the demo scenario -- all measured in one run.

The device is the real MicroPython unix port running the iothub package (as .py sources
and as .mpy compiled by mpy-cross); the hub is the emulator over real TLS on loopback,
whose endpoint counts every byte and TLS record on the wire.

    .venv/bin/python tools/bench/bench_client.py [--quick] [--sends 1000] [--mp BINARY] [--json FILE]
        [--figures docs/figures.md]      # also write the README's blocks "client-wire", "client-heap"

 1. One QoS 1 message (64-byte JSON body, two custom properties) on an open connection,
    ECC and RSA hub: TLS bytes and records each way (hub counters sampled just before and
    just after the send), MQTT bytes (device link counters), TLS overhead per record,
    records per MQTT packet; and the same message written as umqtt.simple writes it
    (five writes: header, topic length, topic, packet id, payload) over a context from
    iothub.tls_context, with the ratio ours / baseline.
 2. GC heap retained after `import iothub`, after `import iothub.client` (+ its deps),
    after what connect() adds, and by a DeviceClient object; .py and .mpy.
 3. Heap after gc.collect() every 100 of N QoS 1 sends on one connection (slope), and the
    garbage per call (gc.mem_alloc delta with the collector off).
 4. The smallest `-X heapsize` under which tools/demo_device.py (connect, telemetry with
    properties, twin get, reported patch, desired patch, method, C2D) completes; bisected,
    .py and .mpy. On the unix port mbedTLS allocates its TLS buffers with the C allocator,
    outside the MicroPython heap: these figures are the Python side only.

Not a test: it prints what this run measured (host_tests/test_bench_client_smoke.py runs
--quick). `make bench` runs it with the defaults.
"""

import argparse
import ast
import datetime
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402
from iothub_tool.mpy import compile_package  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

DEVICE = HERE / "device_client_bench.py"
DEMO_DEVICE = ROOT / "tools" / "demo_device.py"
FIRMWARE = ROOT / "firmware"

BODY = '{"temperature":21.5,"humidity":40.25,"pressure":1013.25,"seq":1}'
PROPS = {"sensor": "bme280", "alert": "low"}
assert len(BODY) == 64
# A syntactically valid connection string for the no-network import measurement.
DUMMY_CS = "HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=" + "A" * 43 + "="


def micropython():
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    return str(ROOT / ".venv" / "bin" / "micropython")


def device_env(pkg_dir):
    """MICROPYPATH with only the package under test (sources or .mpy) on it."""
    return dict(os.environ, MICROPYPATH="%s:.frozen" % pkg_dir)


def revision():
    """Commit of the measured package, '+changes' when its files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=str(ROOT),
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "firmware/iothub"],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=str(ROOT),
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" +local changes" if dirty else "")


class DeviceFailed(Exception):
    pass


def run_device(
    binary, mode, cfg, env, timeout=120, on_mark=None, heapsize=None, script=DEVICE, lines=None
):
    """Run a device script (device_client_bench.py) in MODE; answer its marks; return its
    last JSON line (every line of its output is added to `lines` when given)."""
    cmd = [binary]
    if heapsize:
        cmd += ["-X", "heapsize=%d" % heapsize]
    fd, cfg_path = tempfile.mkstemp(prefix="bench-cfg-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)  # a file: argv elements >= 256 chars crash the unix port
    cmd += [str(script), mode, cfg_path]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    killer = threading.Timer(timeout, proc.kill)  # bounds every wait below
    killer.start()
    keep, lines = lines, []
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.startswith("MARK "):
                _, name, data = line.split(" ", 2)
                if on_mark is not None:
                    on_mark(name, json.loads(data))
                proc.stdin.write("\n")
                proc.stdin.flush()
        rc = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.unlink(cfg_path)
    if keep is not None:
        keep.extend(lines)
    out = [ln for ln in lines if ln.strip() and not ln.startswith("MARK ")]
    if rc != 0 or not out:
        raise DeviceFailed("device %s exited %s:\n%s" % (mode, rc, "\n".join(lines[-30:])))
    return json.loads(out[-1])


# ---- 1. bytes on the wire ---------------------------------------------------------------------


def _snap(conn):
    return {
        "bytes_in": conn.bytes_in,
        "bytes_out": conn.bytes_out,
        "sizes_in": list(conn.record_sizes_in),
        "sizes_out": list(conn.record_sizes_out),
    }


def _window(a, b):
    """Wire traffic between two snapshots of the same connection."""
    return {
        "tls_in": b["bytes_in"] - a["bytes_in"],
        "tls_out": b["bytes_out"] - a["bytes_out"],
        "records_in": b["sizes_in"][len(a["sizes_in"]) :],
        "records_out": b["sizes_out"][len(a["sizes_out"]) :],
    }


def measure_wire(binary, pki, state, profile):
    with Emulator(os.path.join(state, "wire-" + profile), profile=profile, pki=pki) as emu:
        device_id = "bench-wire-" + profile
        emu.add_device(device_id)
        root = os.path.join(state, "root-%s.der" % profile)
        pathlib.Path(root).write_bytes(emu.root_der)
        cfg = {
            "cs": emu.connection_string(device_id, gateway=False),
            "profile": profile,
            "root": root,
            "port": emu.port,
            "body": BODY,
            "props": PROPS,
        }
        marks = {}

        def on_mark(name, data):
            conn = emu.endpoint.connections[-1]
            marks[name] = (conn, _snap(conn), data)

        dev = run_device(binary, "wire", cfg, device_env(FIRMWARE), on_mark=on_mark)
        ours_conn, a, ours_before = marks["ours_before"]
        conn2, b, ours_after = marks["ours_after"]
        base_conn, c, _ = marks["base_before"]
        conn4, d, base_after = marks["base_after"]
        if ours_conn is not conn2 or base_conn is not conn4 or ours_conn is base_conn:
            raise SystemExit("wire: marks were sampled on unexpected connections")
        ours = _window(a, b)
        base = _window(c, d)
        la, lb = ours_before["link"], ours_after["link"]
        ours.update(
            mqtt_out=lb["out"] - la["out"],
            mqtt_in=lb["in"] - la["in"],
            writes=lb["writes"] - la["writes"],
            cipher=ours_before["cipher"][0],
            hub_cipher=ours_conn.cipher,
        )
        base.update(
            mqtt_out=base_after["publish"],
            mqtt_in=base_after["puback"],
            writes=base_after["writes"],
            hub_cipher=base_conn.cipher,
        )
        tel = emu.telemetry(device_id)
        if len(tel) != 2 or any(bytes(m["payload"]) != BODY.encode() for m in tel):
            raise SystemExit("wire: the hub did not record both messages intact: %r" % (tel,))
        if any(m["properties"] != PROPS for m in tel):
            raise SystemExit("wire: properties arrived changed: %r" % (tel,))
    for r in (ours, base):
        n_in, n_out = len(r["records_in"]), len(r["records_out"])
        r["overhead_in"] = (r["tls_in"] - r["mqtt_out"]) / n_in if n_in else 0
        r["overhead_out"] = (r["tls_out"] - r["mqtt_in"]) / n_out if n_out else 0
    return {"ours": ours, "base": base, "device": dev}


# ---- 2. heap by import --------------------------------------------------------------------------


def package_deps(pkg=FIRMWARE / "iothub"):
    """{module: set of sibling modules it imports at module level} from the sources."""
    deps = {}
    for path in sorted(pkg.glob("*.py")):
        name = path.stem
        deps[name] = set()
        for node in ast.parse(path.read_text()).body:  # top level only (lazy imports are not)
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps[name].add(node.module.split(".")[0])
                else:
                    deps[name].update(a.name for a in node.names)
    return deps


def leaves_first(names, deps):
    order, seen = [], set()

    def visit(n):
        if n in seen or n not in deps:
            return
        seen.add(n)
        for d in sorted(deps[n]):
            visit(d)
        order.append(n)

    for n in sorted(names):
        visit(n)
    return order


QSTR_INFO = re.compile(
    r"qstr pool: n_pool=\d+, n_qstr=\d+, n_str_data_bytes=(\d+), n_total_bytes=(\d+)"
)


def modules_heap(binary, order, env):
    """{"heap": {module: B}, "pools": B}: the heap each module keeps, imported alone in
    `order` (leaves first), without the qstr pools its import happened to grow; "pools":
    those pools together. Names are interned in pools that double in size (MicroPython's
    py/qstr.c): the import that fills one pays for the next, a step that belongs to all the
    names before it. Read from micropython.qstr_info() after each import."""
    lines = []
    heap = run_device(binary, "modules", {"order": order}, env, lines=lines)
    pool = {}  # module (or "None": before the first) -> bytes of the pools, names excluded
    name = None
    for ln in lines:
        if ln.startswith("QSTR "):
            name = ln[5:]
        else:
            m = QSTR_INFO.search(ln)
            if m and name is not None:
                pool[name] = int(m.group(2)) - int(m.group(1))
    if len(pool) != len(order) + 1:  # a port without qstr_info: the plain deltas
        return {"heap": heap, "pools": 0}
    steps, prev = {}, pool["None"]
    for m in order:
        steps[m] = pool[m] - prev
        prev = pool[m]
    return {"heap": {m: heap[m] - steps[m] for m in order}, "pools": sum(steps.values())}


def measure_imports(binary, pkg_dirs, root):
    cfg = {"cs": DUMMY_CS, "profile": "ecc", "root": root}
    out = {}
    for kind, d in pkg_dirs.items():
        r = run_device(binary, "imports", cfg, device_env(d))
        suffix = ".mpy" if kind == "mpy" else ".py"
        if not str(r["client_file"]).endswith(suffix):
            raise SystemExit(
                "imports %s: loaded %s, not a %s file" % (kind, r["client_file"], suffix)
            )
        loaded = [m.split(".", 1)[1] for m in r["modules_all"] if "." in m]
        order = leaves_first(loaded, package_deps())
        per = modules_heap(binary, order, device_env(d))
        r["per_module"], r["qstr_pools"] = per["heap"], per["pools"]
        r["order"] = order
        out[kind] = r
    return out


# ---- 3. heap across sends -----------------------------------------------------------------------


def slope(samples):
    """Least-squares slope of heap (bytes) over sends."""
    n = len(samples)
    mx = sum(s[0] for s in samples) / n
    my = sum(s[1] for s in samples) / n
    sxx = sum((s[0] - mx) ** 2 for s in samples)
    sxy = sum((s[0] - mx) * (s[1] - my) for s in samples)
    return sxy / sxx if sxx else 0.0


def measure_sends(binary, pki, state, pkg_dirs, n, every, garbage_n):
    out = {}
    with Emulator(os.path.join(state, "sends"), profile="ecc", pki=pki) as emu:
        root = os.path.join(state, "root-ecc.der")
        pathlib.Path(root).write_bytes(emu.root_der)
        for kind, d in pkg_dirs.items():
            device_id = "bench-sends-" + kind
            emu.add_device(device_id)
            cfg = {
                "cs": emu.connection_string(device_id, gateway=False),
                "profile": "ecc",
                "root": root,
                "port": emu.port,
                "body": BODY,
                "props": PROPS,
                "n": n,
                "every": every,
                "warmup": 10,
                "garbage_n": garbage_n,
            }
            r = run_device(binary, "sends", cfg, device_env(d), timeout=300)
            r["slope"] = slope(r["samples"])
            out[kind] = r
    return out


# ---- 4. smallest heap for the demo scenario -----------------------------------------------------


def demo_once(binary, emu, root, env, heapsize, timeout=40):
    """Run tools/demo_device.py under -X heapsize and act as the service side.
    Returns (completed, reason)."""
    device_id = "heap-%07d-%s" % (heapsize, uuid.uuid4().hex[:6])  # same length each trial
    emu.add_device(device_id)
    cmd = [binary, "-X", "heapsize=%d" % heapsize, str(DEMO_DEVICE), emu.hostname]
    cmd += [
        str(emu.port),
        emu.profile,
        root,
        "sas",
        emu.connection_string(device_id, gateway=False),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(ROOT)
    )
    lines = []
    ready = threading.Event()
    bad = threading.Event()
    got_ready = []

    def reader():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "device | READY" in line:
                got_ready.append(True)
                ready.set()
            if "MemoryError" in line or " raised " in line:
                bad.set()
        ready.set()  # EOF: stop waiting

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        if not ready.wait(timeout) or not got_ready or bad.is_set():
            return False, _last(lines) or "no READY"
        emu.patch_desired(device_id, {"interval_s": 30})
        status, payload = emu.invoke_method(device_id, "reboot", {"delay": 5}, timeout=10)
        if status != 200 or payload != {"scheduled_in_s": 5}:
            return False, "method answered %s %s; %s" % (status, payload, _last(lines))
        emu.send_c2d(device_id, b"led:on", properties={"command": "led"}, message_id="c2d-1")
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end and not bad.is_set():
            time.sleep(0.02)
        if proc.poll() is None:
            return False, "did not finish: %s" % _last(lines)
        t.join(5)
        if proc.returncode != 0 or bad.is_set():
            return False, _last(lines)
        if not any("round trip complete" in ln for ln in lines):
            return False, _last(lines)
        tel = emu.telemetry(device_id)
        if len(tel) != 1 or tel[0]["properties"].get("sensor") != "bme280":
            return False, "telemetry not recorded by the hub"
        if emu.twin(device_id)["reported"].get("firmware") != "1.0.0":
            return False, "reported property not recorded by the hub"
        return True, "ok"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        t.join(5)


def _last(lines):
    """The last line, with the innermost traceback frame when there is one."""
    last = ""
    for ln in reversed(lines):
        if ln.strip():
            last = ln.strip()
            break
    frames = [ln.strip() for ln in lines if ln.strip().startswith('File "')]
    if frames and "Error" in last:
        where = frames[-1].replace(str(ROOT) + "/", "")
        return "%s (at %s)" % (last, where)
    return last


def bisect_heap(run, lo, hi, step):
    """Smallest heap (multiple of step) for which run(heap) succeeds, given run(hi) succeeds.
    Returns (size or None, trials, last failure reason)."""
    trials = []
    ok, why = run(hi)
    trials.append((hi, ok))
    if not ok:
        return None, trials, why
    ok, why_lo = run(lo)
    trials.append((lo, ok))
    if ok:
        return lo, trials, None
    fail_reason = why_lo
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            mid = lo + step
        ok, why = run(mid)
        trials.append((mid, ok))
        if ok:
            hi = mid
        else:
            lo = mid
            fail_reason = why
    return hi, trials, fail_reason


ABOVE = (1024, 2048)  # sizes above the smallest heap (B) that must complete too (measure_min_heap)


def measure_min_heap(binary, pki, state, pkg_dirs, lo, hi, step, repeat):
    out = {}
    with Emulator(os.path.join(state, "heap"), profile="ecc", pki=pki) as emu:
        root = os.path.join(state, "root-ecc.der")
        pathlib.Path(root).write_bytes(emu.root_der)
        for kind, d in pkg_dirs.items():
            env = device_env(d)
            size, trials, why = bisect_heap(
                lambda h, env=env: demo_once(binary, emu, root, env, h), lo, hi, step
            )
            # Allocation sizes vary a little from run to run (the SAS signature's
            # percent-encoding, port digits), and where a heap runs out of contiguous
            # blocks is not monotonic in its size (a size can pass where the next one
            # fails): from the bisected edge, step up until `repeat` runs in a row complete
            # at a size and at 1 and 2 KiB above it (ABOVE).
            edge = size
            runs = []
            while size is not None and size <= hi:
                bad = None
                for probe in [size] + [size + d for d in ABOVE if size + d <= hi]:
                    runs = []
                    while len(runs) < repeat and all(runs):
                        runs.append(demo_once(binary, emu, root, env, probe)[0])
                    if not all(runs):
                        bad = probe
                        break
                if bad is None:
                    break
                size = bad + step
            else:
                size = None
            out[kind] = {
                "min": size,
                "edge": edge,
                "trials": trials,
                "below": why,
                "confirmed": runs,
            }
    return out


# ---- report ------------------------------------------------------------------------------------


def _ratio(a, b):
    return a / b if b else float("nan")


def report(res, args):
    w = res["wire"]
    p = print
    p("iothub device-client figures -- %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    p(
        "device: MicroPython unix port %s (%s); hub: the emulator on loopback"
        % (res["mp_version"], args.mp)
    )
    p("package: firmware/iothub at %s" % res["revision"])
    p("")
    p(
        "1. One QoS 1 telemetry message, %d-byte JSON body, 2 custom properties, open connection"
        % len(BODY)
    )
    topic = w["ecc"]["device"]["topic"]
    p("   topic (%d B): %s" % (len(topic), topic))
    cols = [("ecc", "ours"), ("rsa", "ours"), ("ecc", "base"), ("rsa", "base")]
    p(
        "   %-34s %12s %12s %14s %14s"
        % ("", "iothub ECC", "iothub RSA", "umqtt-like ECC", "umqtt-like RSA")
    )

    def row(name, fn, fmt="%12s %12s %14s %14s"):
        vals = tuple(fn(w[prof][who]) for prof, who in cols)
        p("   %-34s " % name + fmt % vals)

    p("   %-34s %s" % ("suite (device / hub)", w["ecc"]["ours"]["cipher"]))
    p("   %-34s %s" % ("", w["rsa"]["ours"]["cipher"]))
    row("MQTT PUBLISH bytes  device->hub", lambda r: r["mqtt_out"])
    row("MQTT PUBACK bytes   hub->device", lambda r: r["mqtt_in"])
    row("writes by the client", lambda r: r["writes"])
    row("TLS records         device->hub", lambda r: len(r["records_in"]))
    row("TLS records         hub->device", lambda r: len(r["records_out"]))
    row("TLS bytes           device->hub", lambda r: r["tls_in"])
    row("TLS bytes           hub->device", lambda r: r["tls_out"])
    row("TLS bytes           total", lambda r: r["tls_in"] + r["tls_out"])
    row(
        "TLS overhead/record device->hub",
        lambda r: r["overhead_in"],
        "%12.1f %12.1f %14.1f %14.1f",
    )
    row(
        "TLS overhead/record hub->device",
        lambda r: r["overhead_out"],
        "%12.1f %12.1f %14.1f %14.1f",
    )
    row(
        "TLS records per MQTT packet (d->h)",
        lambda r: len(r["records_in"]),
        "%12d %12d %14d %14d",
    )
    for prof in ("ecc", "rsa"):
        o, b = w[prof]["ours"], w[prof]["base"]
        p(
            "   %s ours/umqtt-like: bytes device->hub %.2f, bytes both ways %.2f, records device->hub %.2f"
            % (
                prof.upper(),
                _ratio(o["tls_in"], b["tls_in"]),
                _ratio(o["tls_in"] + o["tls_out"], b["tls_in"] + b["tls_out"]),
                _ratio(len(o["records_in"]), len(b["records_in"])),
            )
        )
    p(
        "   (record sizes seen device->hub, ours ECC: %s; umqtt-like ECC: %s)"
        % (w["ecc"]["ours"]["records_in"], w["ecc"]["base"]["records_in"])
    )
    p("")

    im = res["imports"]
    p(
        "2. GC heap retained (gc.mem_alloc after gc.collect, delta from before the import), unix port"
    )
    p("   %-56s %8s %8s" % ("", ".py", ".mpy"))
    nclient = len(im["py"]["modules_client"])
    extra = [m[7:] for m in im["py"]["modules_all"] if m not in im["py"]["modules_client"]]
    for key, name in (
        ("package", "import iothub"),
        ("client", "import iothub.client (+ deps: %d modules in all)" % nclient),
        ("connect", "+ what from_connection_string/connect load (below)"),
        ("object", "one DeviceClient object (buffers, session), extra"),
    ):
        p("   %-56s %8d %8d" % (name, im["py"][key], im["mpy"][key]))
    p("   (those: %s)" % ", ".join(extra))
    p(
        "   per module, leaves first (.py / .mpy; without the qstr pools the imports grew: %d / %d):"
        % (im["py"].get("qstr_pools", 0), im["mpy"].get("qstr_pools", 0))
    )
    per_py, per_mpy = im["py"]["per_module"], im["mpy"]["per_module"]
    names = sorted(per_py, key=lambda m: -per_py[m])
    for i in range(0, len(names), 4):
        p(
            "     "
            + "  ".join(
                "%-10s %6d /%6d" % (m, per_py[m], per_mpy.get(m, 0)) for m in names[i : i + 4]
            )
        )
    dev = w["ecc"]["device"]
    p(
        "   a connected DeviceClient (.py, ECC, object + TLS context + session): %d B;"
        % dev["heap_connected"]
    )
    p(
        "   of that, a context from tls_context() holds %d B, a wrap_socket (handshake done) %d B;"
        % (dev["heap_tls_context"], dev["heap_tls_session"])
    )
    p("   mbedTLS's record buffers, session and parsed certificates are C malloc on the unix")
    p("   port, outside the GC heap and these figures")
    missing = sorted(set(dev["modules_connected"]) - set(im["py"]["modules_all"]))
    if missing:
        p("   NOTE: connect() also loaded %s, not counted above" % ", ".join(missing))
    p("")

    s = res["sends"]
    n = args.sends
    p("3. Heap across %d QoS 1 sends on one connection (ECC), gc.collect() before each sample" % n)
    p("   %-14s %s" % ("after sends", " ".join("%6d" % x[0] for x in s["py"]["samples"])))
    for kind in ("py", "mpy"):
        base0 = s[kind]["samples"][0][1]
        p(
            "   %-14s %s"
            % (
                "." + kind + " heap-h0",
                " ".join("%6d" % (x[1] - base0) for x in s[kind]["samples"]),
            )
        )
    for kind in ("py", "mpy"):
        r = s[kind]
        growth = r["samples"][-1][1] - r["samples"][0][1]
        p(
            "   .%-4s slope %+.3f B/send (%+.1f B per 100 sends), first->last %+d B, %.2f ms/send"
            % (kind, r["slope"], r["slope"] * 100, growth, r["ms_per_send"])
        )
    p("   garbage per call (gc.mem_alloc delta, collector off, mean of %d calls):" % args.garbage_n)
    p("   %-56s %8s %8s" % ("", ".py", ".mpy"))
    for key, name in (
        ("send_qos1", "send(body, 2 properties) QoS 1, until its PUBACK"),
        ("send_qos0", "send(body, 2 properties, qos=0)"),
        ("telemetry_topic", "  topics.telemetry_topic(dev, None, 2 properties)"),
        ("events_prefix", "    topics.telemetry_topic(dev, None) (no properties)"),
        ("items", "    topics._bag([], 2 properties, sort=True)"),
        ("quote", "    sas.quote('bme280') (nothing to escape)"),
        ("props_size", "  clientrun.props_size(2 properties) (near the D2C limit only)"),
        ("session_publish", "  Session.publish(topic, body) (encode + write)"),
        ("poll_idle", "poll(0) with nothing to read"),
    ):
        p("   %-56s %8.1f %8.1f" % (name, s["py"]["garbage"][key], s["mpy"]["garbage"][key]))
    p("")

    h = res["min_heap"]
    p(
        "4. Smallest -X heapsize for the demo scenario (tools/demo_device.py, ECC, SAS), bisected %d..%d, step %d"
        % (args.heap_lo, args.heap_hi, args.heap_step)
    )
    for kind in ("py", "mpy"):
        r = h[kind]
        if r["min"] is None:
            p("   .%-4s did not complete even at %d: %s" % (kind, args.heap_hi, r["below"]))
            continue
        p(
            "   .%-4s %6d B (%.1f KiB): %d runs in a row complete, and at %s B more"
            " (bisection edge %d B, %d trials)"
            % (
                kind,
                r["min"],
                r["min"] / 1024,
                len(r["confirmed"]),
                " and ".join(str(d) for d in ABOVE),
                r["edge"],
                len(r["trials"]),
            )
        )
        p("         below the edge: %s" % (r["below"] or "-"))
    p("   (package as .py or .mpy; the demo script itself is compiled from source in both;")
    p("    roots= is the emulator's DER root, which loads iothub.pem; mbedTLS's record buffers")
    p("    are outside this heap on the unix port, on Pico W they would come out of it)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--sends", type=int, default=None, help="QoS 1 sends for item 3 (1000)")
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--state", default=None, help="PKI/emulator state dir (default: temporary)")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    if args.sends is None:
        args.sends = 200 if args.quick else 1000
    args.every = max(args.sends // 10, 1)
    args.garbage_n = 20 if args.quick else 100
    args.heap_lo, args.heap_hi = 8 * 1024, 256 * 1024
    args.heap_step = 16384 if args.quick else 256
    args.repeat = 1 if args.quick else 3

    state = args.state or tempfile.mkdtemp(prefix="iothub-bench-client-")
    try:
        res = run_all(args, state)
    finally:
        if args.state is None:
            shutil.rmtree(state, ignore_errors=True)
    report(res, args)
    print("")
    print("measured in %.0f s" % res["seconds"])
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.figures:
        wire, heap = markdown(res, args)
        figures.write_block(args.figures, "client-wire", wire, figures.source_line())
        figures.write_block(args.figures, "client-heap", heap, figures.source_line())
    return 0


def _kb(n):
    return "%.1f KB" % (n / 1000)


def markdown(res, args):
    """The README's device-client tables: (block "client-wire", block "client-heap")."""
    w = res["wire"]
    ecc, rsa, base = w["ecc"]["ours"], w["rsa"]["ours"], w["ecc"]["base"]
    cols = (ecc, rsa, base)

    def row(name, fn, bold=False):
        cells = [fn(r) for r in cols]
        if bold:
            cells = ["**%s**" % c for c in cells[:2]] + cells[2:]
        return [name] + cells

    wire = figures.table(
        ["", "iothub, ECC hub", "iothub, RSA hub", "umqtt.simple-style writes"],
        [
            row("MQTT PUBLISH / PUBACK", lambda r: "%d B / %d B" % (r["mqtt_out"], r["mqtt_in"])),
            row("TLS records device → hub", lambda r: "%d" % len(r["records_in"]), True),
            row("TLS bytes device → hub", lambda r: "%d" % r["tls_in"], True),
            row("TLS bytes hub → device (PUBACK)", lambda r: "%d" % r["tls_out"]),
            row("TLS overhead per record (AES-128-GCM)", lambda r: "%.0f B" % r["overhead_in"]),
        ],
    )
    s = res["sends"]
    wire += (
        "\niothub against the baseline (ECC hub): **%.2f** of the bytes device → hub, %.2f of the "
        "bytes both ways, and **%.2f** of the records. A blocking QoS 1 `send()` took %.1f ms "
        "(`.py`) on loopback in this run.\n"
        % (
            _ratio(ecc["tls_in"], base["tls_in"]),
            _ratio(ecc["tls_in"] + ecc["tls_out"], base["tls_in"] + base["tls_out"]),
            _ratio(len(ecc["records_in"]), len(base["records_in"])),
            s["py"]["ms_per_send"],
        )
    )
    im, h = res["imports"], res["min_heap"]

    def growth(kind):
        smp = s[kind]["samples"]
        return "**%d B**" % (smp[-1][1] - smp[0][1])

    def min_heap(kind):
        m = h[kind]["min"]
        return "not reached" if m is None else "%.1f KiB" % (m / 1024)

    heap = figures.table(
        ["", "`.py`", "`.mpy`"],
        [
            ["`import iothub` (names load lazily)"]
            + [_kb(im[k]["package"]) for k in ("py", "mpy")],
            ["`import iothub.client` and its dependencies"]
            + [_kb(im[k]["client"]) for k in ("py", "mpy")],
            [
                "with connstr and tlsprofile loaded too (construction loads connstr and "
                "tlsconf, a connect tlsconf again, each then drops them)"
            ]
            + [_kb(im[k]["connect"]) for k in ("py", "mpy")],
            [
                "one `DeviceClient` before its first connect (4 KB outbox ring, 8 B TX and "
                "64 B RX buffers: no handler set, TLS context, and what construction leaves "
                "loaded: nothing, its code is dropped once the client is made)"
            ]
            + [_kb(im[k]["object"]) for k in ("py", "mpy")],
            ["growth across %d QoS 1 sends on one connection" % args.sends]
            + [growth(k) for k in ("py", "mpy")],
            ["garbage per QoS 1 send (freed by the collector)"]
            + [_kb(s[k]["garbage"]["send_qos1"]) for k in ("py", "mpy")],
            [
                "smallest `-X heapsize` for the demo scenario (%d runs in a row at it and at "
                "%s KiB more)" % (args.repeat, " and ".join(str(d // 1024) for d in ABOVE))
            ]
            + [min_heap(k) for k in ("py", "mpy")],
        ],
    )
    per = im["mpy"]["per_module"]
    top = sorted(per, key=lambda m: -per[m])[:4]
    heap += (
        "\nThe biggest modules as `.mpy` (retained on import; the qstr pools the imports grew, "
        "%s in all, apart): %s.\n"
        % (
            _kb(im["mpy"].get("qstr_pools", 0)),
            ", ".join("%s (%s)" % (m, _kb(per[m])) for m in top),
        )
    )
    return wire, heap


def run_all(args, state):
    t0 = time.monotonic()
    pki = TestPKI.load_or_create(os.path.join(state, "pki"))
    mpy_dir = os.path.join(state, "mpy")
    compile_package(mpy_dir)
    pkg_dirs = {"py": str(FIRMWARE), "mpy": mpy_dir}
    ver = subprocess.run(
        [args.mp, "-c", "import sys; print(sys.version.split('; ')[1])"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    res = {"mp_version": ver, "revision": revision()}
    res["wire"] = {p: measure_wire(args.mp, pki, state, p) for p in ("ecc", "rsa")}
    res["imports"] = measure_imports(args.mp, pkg_dirs, os.path.join(state, "root-ecc.der"))
    res["sends"] = measure_sends(
        args.mp, pki, state, pkg_dirs, args.sends, args.every, args.garbage_n
    )
    res["min_heap"] = measure_min_heap(
        args.mp, pki, state, pkg_dirs, args.heap_lo, args.heap_hi, args.heap_step, args.repeat
    )
    res["seconds"] = time.monotonic() - t0
    return res


if __name__ == "__main__":
    sys.exit(main())
