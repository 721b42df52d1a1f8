"""The asyncio client (iothub.aio) next to the blocking one, measured in one run on the unix port.

The device is the stock MicroPython unix port running the package precompiled to .mpy (as mip
installs it); the hub is the emulator over real TLS on loopback. Each figure comes from a fresh
device process (tools/bench/device_aio_bench.py).

    .venv/bin/python tools/bench/bench_aio.py [--quick] [--n 200] [--repeat 3] [--json FILE]
        [--figures docs/figures.md]      # also write the README's block "aio"

 1. Loop stall, per TLS profile (ECC and RSA hub): a coroutine ticking every 10 ms runs beside
    the aio client; the longest gap between two of its ticks while the loop is idle (the
    reference), during connect, during 50 QoS 1 sends, during get_twin + update_reported, and
    through a reconnect forced by the emulator (it drops the connection; fast test backoff,
    200 ms minimum). What blocks the loop is CPU work between two awaits: the TLS handshake,
    which MicroPython's ssl module runs to completion in one call.
 2. Throughput: 200 QoS 1 messages (64-byte body) with 1 and with 8 unacknowledged at a time,
    blocking client (1: send(); 8: send(block=False) while fewer than 8 are queued, else poll(0):
    the fastest reaction to each PUBACK, busy-waiting meanwhile, which its CPU figure includes)
    and aio client (1: await send() in turn; 8: asyncio.gather of 8 coroutines awaiting send() in
    turn); messages per second and the device's CPU time per message (/proc/<pid>/schedstat,
    which other load on the machine disturbs less than the wall clock), median of --repeat
    rounds in which the two clients take turns, and the ratios, all from this run.
 3. GC heap (gc.mem_alloc after gc.collect, minus the heap before any import) after the imports
    and after connect(), aio next to blocking, as bench_ram.py measures it; and whether
    importing iothub.aio loads iothub.client.

Not a test: it prints what this run measured. host_tests/test_bench_aio_smoke.py runs --quick.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import figures  # noqa: E402
from bench_client import BODY, device_env, micropython, revision, run_device  # noqa: E402

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402
from iothub_tool.mpy import compile_package  # noqa: E402

DEVICE = HERE / "device_aio_bench.py"
PROFILES = ("ecc", "rsa")
PHASES = (
    ("idle", "loop idle (reference)"),
    ("connect", "connect (TLS handshake, CONNECT)"),
    ("sends", "QoS 1 sends, one after the other"),
    ("twin", "get_twin + update_reported"),
    ("reconnect", "reconnect after the hub dropped the link"),
)
BACKOFF = [200, 2000, 100]  # ms: fast, so the reconnect phase is short (field: 1 s / 100 s / 5 s)


def new_device(emu, prefix):
    device_id = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
    emu.add_device(device_id)
    return device_id


def base_cfg(emu, root, device_id, profile):
    return {
        "cs": emu.connection_string(device_id, gateway=False),
        "profile": profile,
        "root": root,
        "port": emu.port,
        "body": BODY,
        "backoff": BACKOFF,
    }


def measure_stall(binary, env, emu, root, profile, sends, idle_ms=300, timeout=120):
    """Run the device's stall mode against `emu`; returns its result plus the device id. The
    emulator drops the connection when the device asks for it (MARK drop)."""
    device_id = new_device(emu, "stall-" + profile)
    cfg = base_cfg(emu, root, device_id, profile)
    cfg.update(sends=sends, idle_ms=idle_ms, reconnect_ms=30000)

    def on_mark(name, data):
        if name == "drop":
            emu.drop(device_id)
            emu.wait_disconnect(device_id, timeout=10)

    r = run_device(binary, "stall", cfg, env, timeout=timeout, on_mark=on_mark, script=DEVICE)
    got = len(emu.telemetry(device_id))
    if got != sends:
        raise SystemExit(
            "stall %s: the hub recorded %d messages, the device sent %d" % (profile, got, sends)
        )
    r["device_id"] = device_id
    return r


def run_ns(pid):
    """Time on CPU of the process's main thread in ns (/proc/<pid>/schedstat)."""
    return int(pathlib.Path("/proc/%d/schedstat" % pid).read_text().split()[0])


def measure_throughput(binary, env, emu, root, kind, n, windows=(1, 8), warmup=5):
    """One device process: connect, warm up, then one timed run per window. Returns
    {"rate": {w: messages/s}, "cpu_us": {w: device CPU per message}, ...}."""
    device_id = new_device(emu, "tp-" + kind)
    cfg = base_cfg(emu, root, device_id, "ecc")
    cfg.update(kind=kind, n=n, repeat=1, windows=list(windows), warmup=warmup)
    cpu = {}
    started = {}

    def on_mark(name, data):
        if name == "run":
            started["pid"] = data["pid"]
            started["ns"] = run_ns(data["pid"])
        else:
            cpu[str(data["w"])] = (run_ns(started["pid"]) - started["ns"]) / n / 1e3

    r = run_device(binary, "throughput", cfg, env, timeout=300, on_mark=on_mark, script=DEVICE)
    want = warmup + n * len(windows)
    got = len(emu.telemetry(device_id))
    if r["queued"] or got < want:
        raise SystemExit(
            "throughput %s: the hub recorded %d of %d messages (%d left queued)"
            % (kind, got, want, r["queued"])
        )
    return {"rate": {w: v[0] for w, v in r["runs"].items()}, "cpu_us": cpu, "stats": r["stats"]}


def throughput_rounds(binary, env, emu, root, n, repeat):
    """`repeat` rounds, each one blocking process then one aio process, so that load from
    elsewhere on the machine falls on both alike; per client and window, every run's rate and
    CPU per message, and their medians."""
    out = {kind: {"runs": {}, "cpu_runs": {}} for kind in ("blocking", "aio")}
    for _ in range(repeat):
        for kind in ("blocking", "aio"):
            r = measure_throughput(binary, env, emu, root, kind, n)
            for w, v in r["rate"].items():
                out[kind]["runs"].setdefault(w, []).append(v)
            for w, v in r["cpu_us"].items():
                out[kind]["cpu_runs"].setdefault(w, []).append(v)
            out[kind]["queued"] = 0  # measure_throughput fails otherwise
    for kind in out:
        o = out[kind]
        o["median"] = {w: statistics.median(v) for w, v in o["runs"].items()}
        o["cpu_us"] = {w: statistics.median(v) for w, v in o["cpu_runs"].items()}
    return out


def measure_heap(binary, env, emu, root, kind):
    device_id = new_device(emu, "heap-" + kind)
    cfg = base_cfg(emu, root, device_id, "ecc")
    cfg["kind"] = kind
    r = run_device(binary, "heap", cfg, env, timeout=120, script=DEVICE)
    if not str(r["file"]).endswith(".mpy"):
        raise SystemExit("heap %s: the client came from %s, not a .mpy file" % (kind, r["file"]))
    return r


def combine_stall(runs):
    """Per phase, over the runs: the median of the longest gaps (and their maximum), the
    fewest ticks and the median phase length; states and stats of the last run."""
    phases = {}
    for key, _label in PHASES:
        ps = [r["phases"][key] for r in runs]
        phases[key] = {
            "longest_gap_ms": statistics.median(p["longest_gap_ms"] for p in ps),
            "max_gap_ms": max(p["longest_gap_ms"] for p in ps),
            "gaps_ms": [p["longest_gap_ms"] for p in ps],
            "ticks": min(p["ticks"] for p in ps),
            "wall_ms": statistics.median(p["wall_ms"] for p in ps),
        }
    last = runs[-1]
    return {"phases": phases, "states": last["states"], "stats": last["stats"], "runs": len(runs)}


def run_all(args, state):
    t0 = time.monotonic()
    pkg = os.path.join(state, "mpy")
    compile_package(pkg)
    env = device_env(pkg)
    pki = TestPKI.load_or_create(os.path.join(state, "pki"))
    res = {"package": "firmware/iothub at %s (.mpy)" % revision(), "stall": {}, "n": args.n}
    for profile in PROFILES:
        with Emulator(os.path.join(state, "hub-" + profile), profile=profile, pki=pki) as emu:
            root = os.path.join(state, "root-%s.der" % profile)
            pathlib.Path(root).write_bytes(emu.root_der)
            runs = [
                measure_stall(args.mp, env, emu, root, profile, args.sends)
                for _ in range(args.stall_runs)
            ]
            res["stall"][profile] = combine_stall(runs)
            if profile != "ecc":
                continue
            res["throughput"] = throughput_rounds(args.mp, env, emu, root, args.n, args.repeat)
            res["heap"] = {
                kind: measure_heap(args.mp, env, emu, root, kind) for kind in ("blocking", "aio")
            }
    res["seconds"] = time.monotonic() - t0
    return res


def stall_rows(res):
    rows = []
    for key, label in PHASES:
        row = [label]
        for profile in PROFILES:
            p = res["stall"][profile]["phases"][key]
            row.append(
                "%.0f ms (max %.0f; %d ticks in %.0f ms)"
                % (p["longest_gap_ms"], p["max_gap_ms"], p["ticks"], p["wall_ms"])
            )
        rows.append(row)
    return rows


def throughput_rows(res):
    tp = res["throughput"]
    b, a = tp["blocking"]["median"], tp["aio"]["median"]
    bc, ac = tp["blocking"]["cpu_us"], tp["aio"]["cpu_us"]
    return [
        ["messages/s, 1 in flight", "%.0f" % b["1"], "%.0f" % a["1"], "%.2f" % (a["1"] / b["1"])],
        ["messages/s, 8 in flight", "%.0f" % b["8"], "%.0f" % a["8"], "%.2f" % (a["8"] / b["8"])],
        ["8 / 1 in flight", "%.2f" % (b["8"] / b["1"]), "%.2f" % (a["8"] / a["1"]), "-"],
        [
            "device CPU per message, 1 in flight (us)",
            "%.0f" % bc["1"],
            "%.0f" % ac["1"],
            "%.2f" % (ac["1"] / bc["1"]),
        ],
        [
            "device CPU per message, 8 in flight (us)",
            "%.0f" % bc["8"],
            "%.0f" % ac["8"],
            "%.2f" % (ac["8"] / bc["8"]),
        ],
    ]


def heap_rows(res):
    h = res["heap"]
    b, a = h["blocking"], h["aio"]
    return [
        [
            "after the imports",
            "%d" % b["heap_import"],
            "%d (asyncio %d of it)" % (a["heap_import"], a["heap_asyncio"]),
            "%.2f" % (a["heap_import"] / b["heap_import"]),
        ],
        [
            "after connect()",
            "%d" % b["heap_connect"],
            "%d" % a["heap_connect"],
            "%.2f" % (a["heap_connect"] / b["heap_connect"]),
        ],
    ]


def markdown(res):
    out = (
        "Loop stall: longest gap between the ticks of a 10 ms coroutine beside the aio client, "
        "median of %d runs (the largest; the fewest ticks in the phase, its length):\n\n"
        % res["stall"]["ecc"]["runs"]
    )
    out += figures.table(["phase", "ECC hub", "RSA hub"], stall_rows(res))
    out += "\nThroughput, %d QoS 1 messages (median of %d runs, the clients taking turns):\n\n" % (
        res["n"],
        len(res["throughput"]["aio"]["runs"]["1"]),
    )
    out += figures.table(["", "blocking", "aio", "aio / blocking"], throughput_rows(res))
    out += "\nGC heap (B, .mpy, minus the heap before any import):\n\n"
    out += figures.table(["", "blocking", "aio", "aio / blocking"], heap_rows(res))
    loaded = res["heap"]["aio"]["client_loaded_by_import"]
    out += "\n`import iothub.aio` loads `iothub.client`: %s.\n" % ("yes" if loaded else "no")
    return out


def report(res, args):
    p = print
    p("iothub.aio next to the blocking client -- %s, %s" % (res["package"], args.mp))
    p("1. Loop stall: longest gap between the ticks of a 10 ms coroutine beside the aio client")
    p("   (median of %d runs; max, fewest ticks, phase length)" % args.stall_runs)
    p("   %-42s %36s %36s" % ("phase", "ECC hub", "RSA hub"))
    for row in stall_rows(res):
        p("   %-42s %36s %36s" % tuple(row))
    for profile in PROFILES:
        s = res["stall"][profile]
        p(
            "   %s: states after the drop %s, stats %s"
            % (profile, s["states"], json.dumps(s["stats"]))
        )
    p(
        "2. Throughput, %d QoS 1 messages of %d bytes (median of %d rounds, clients taking turns)"
        % (args.n, len(BODY), args.repeat)
    )
    p("   %-42s %10s %10s %15s" % ("", "blocking", "aio", "aio / blocking"))
    for row in throughput_rows(res):
        p("   %-42s %10s %10s %15s" % tuple(row))
    for kind in ("blocking", "aio"):
        for key, what in (("runs", "messages/s"), ("cpu_runs", "CPU us/message")):
            runs = res["throughput"][kind][key]
            p(
                "   %s, %s, each round: %s"
                % (
                    kind,
                    what,
                    "; ".join(
                        "%s in flight: %s" % (w, " ".join("%.0f" % x for x in v))
                        for w, v in runs.items()
                    ),
                )
            )
    p("3. GC heap (bytes, .mpy)")
    p("   %-20s %10s %28s %15s" % ("", "blocking", "aio", "aio / blocking"))
    for row in heap_rows(res):
        p("   %-20s %10s %28s %15s" % tuple(row))
    p(
        "   import iothub.aio loads iothub.client: %s"
        % ("yes" if res["heap"]["aio"]["client_loaded_by_import"] else "no")
    )
    p("   modules after connect, aio: %s" % " ".join(res["heap"]["aio"]["modules"]))
    p("measured in %.0f s" % res["seconds"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--n", type=int, default=None, help="messages per throughput run (200)")
    ap.add_argument("--repeat", type=int, default=None, help="throughput rounds (5)")
    ap.add_argument("--sends", type=int, default=None, help="sends in the stall phase (50)")
    ap.add_argument("--stall-runs", type=int, default=None, help="stall runs per profile (3)")
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--state", default=None, help="PKI/emulator/build dir (default: temporary)")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    if args.n is None:
        args.n = 24 if args.quick else 200
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    if args.stall_runs is None:
        args.stall_runs = 1 if args.quick else 3
    if args.sends is None:
        args.sends = 10 if args.quick else 50
    state = args.state or tempfile.mkdtemp(prefix="iothub-bench-aio-")
    try:
        os.makedirs(state, exist_ok=True)
        res = run_all(args, state)
    finally:
        if args.state is None:
            shutil.rmtree(state, ignore_errors=True)
    report(res, args)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.figures:
        figures.write_block(args.figures, "aio", markdown(res), figures.source_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
