"""RAM and CPU of the iothub device client next to a umqtt.simple-style baseline, side by
side, all measured in one run.

The device is the stock MicroPython unix port running the package as .mpy (mpy-cross) and as
.py; the hub is the emulator (ECC profile) over real TLS on loopback, whose endpoint counts
every byte and TLS record. Each client runs in a fresh process (tools/bench/device_ram_bench.py).

    python tools/bench/bench_ram.py [--quick] [--sends 2000] [--json FILE]
                                    [--package DIR | --rev REV] [--no-py] [--mp BINARY]

Clients: iothub (DeviceClient.from_connection_string(..., tls="ecc") then connect()) and the
baseline tools/bench/umqtt_like.py (umqtt.simple's way of working, written from the MQTT 3.1.1
packet layout) with a context from iothub.tls_context and a token from iothub.sas_token; with
UMQTT_SIMPLE=path/to/umqtt/simple.py also micropython-lib's umqtt.simple itself (a column).

Rows: heap after the imports and after connect (gc.mem_alloc after gc.collect, minus the heap
before any import), and after the warm-up and garbage sends (what a connected client keeps
once it has sent: modules loaded by the first send count here); heap after connect with C2D, method and desired handlers (iothub only,
compared with the baseline's telemetry-only figure); garbage per QoS 1 send with the collector
off, for (a) the bench message (64-byte JSON body as bytes, properties sensor=bme280 and
alert=low) and (b) the body without properties; CPU time per send of (a) (process utime+stime
from /proc/<pid>/stat, read by the host around a loop of --sends sends, each waiting for its
PUBACK); the median wall time per send in that loop (time.ticks_us on the device); TLS bytes
and records device->hub per message (the emulator endpoint's counters around the same loop).
Then the heap each iothub module keeps, for the modules a connected telemetry-only client has
loaded (bench_client's `modules` mode).

Not a test: it prints what this run measured; the targets are the issue's, checked against the
figures of this run. host_tests/test_bench_ram_smoke.py runs --quick.
"""

import argparse
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import figures  # noqa: E402
from bench_client import (  # noqa: E402 - also puts tools/ on sys.path
    BODY,
    FIRMWARE,
    PROPS,
    ROOT,
    _snap,
    _window,
    device_env,
    leaves_first,
    micropython,
    modules_heap,
    package_deps,
    revision,
    run_device,
)

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402
from iothub_tool.mpy import OPT, compile_package, find_mpy_cross  # noqa: E402

RAM_DEVICE = HERE / "device_ram_bench.py"
UMQTT_LIKE = HERE / "umqtt_like.py"

# (key, label, target): target is (kind, limit) -- "ratio": iothub/baseline <= limit,
# "abs": the iothub figure <= limit -- or None (no target: a figure only).
ROWS = (
    ("heap_import", "heap after import (B)", None),
    ("heap_connect", "heap after connect, telemetry-only (B)", ("ratio", 1.5)),
    (
        "heap_sent",
        "heap after connect + sends (a), (b), telemetry-only (B)",
        ("ratio", 1.5),
    ),
    ("heap_handlers", "heap after connect + C2D/method/desired handlers (B)", ("ratio", 2.0)),
    ("garbage_a", "garbage per QoS 1 send (a) body + 2 props (B)", ("abs", 64)),
    ("garbage_b", "garbage per QoS 1 send (b) body, no props (B)", ("abs", 0)),
    ("cpu_us", "CPU per QoS 1 send (a), utime+stime (us)", ("ratio", 2.0)),
    ("wall_us", "wall per QoS 1 send (a), median (us)", None),
    ("tls_bytes_out", "TLS bytes device->hub per message (a)", None),
    ("tls_records_out", "TLS records device->hub per message (a)", None),
)
CLIENTS = ("iothub", "umqtt_like", "umqtt_simple")
LABELS = {"iothub": "iothub", "umqtt_like": "umqtt-like", "umqtt_simple": "umqtt.simple"}


def run_ram_device(binary, cfg, env, on_mark=None, timeout=300):
    """bench_client.run_device (config file, MARK lines answered on stdin, last JSON line)
    running device_ram_bench.py."""
    return run_device(binary, "ram", cfg, env, timeout=timeout, on_mark=on_mark, script=RAM_DEVICE)


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (clock-tick resolution)."""
    text = pathlib.Path("/proc/%d/stat" % pid).read_text()
    fields = text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ns(pid):
    """Time on CPU of the process's main thread in ns (/proc/<pid>/schedstat), or None: a
    finer cross-check of cpu_seconds (the unix port runs the bench on its main thread)."""
    try:
        return int(pathlib.Path("/proc/%d/schedstat" % pid).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ---- packages -----------------------------------------------------------------------------------


def prepare(args, state):
    """(the package's source dir, {variant: {"pkg", "base", "umqtt": MICROPYPATH dir}}):
    the iothub package, umqtt_like and umqtt.simple, as .mpy and as .py."""
    if args.rev:
        src_root = pathlib.Path(state) / "rev"
        src_root.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.rev, "firmware/iothub"],
            capture_output=True,
            cwd=str(ROOT),
            timeout=60,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(src_root)], input=archive, check=True, timeout=60)
        pkg = src_root / "firmware"
    else:
        pkg = pathlib.Path(args.package).resolve()
    if not (pkg / "iothub" / "__init__.py").is_file():
        raise SystemExit("no iothub package in %s" % pkg)

    simple = args.umqtt_simple
    dirs = {}
    for variant in ("mpy", "py") if args.py else ("mpy",):
        d = pathlib.Path(state) / variant
        base = d / "base"
        base.mkdir(parents=True)
        shutil.copyfile(UMQTT_LIKE, base / "umqtt_like.py")
        umqtt = d / "umqtt"
        if simple:
            (umqtt / "umqtt").mkdir(parents=True)
            shutil.copyfile(simple, umqtt / "umqtt" / "simple.py")
            (umqtt / "umqtt" / "__init__.py").write_text("")
        if variant == "mpy":
            pkg_dir = d / "pkg"
            compile_package(pkg_dir, src=pkg / "iothub")
            tool = find_mpy_cross()
            subprocess.run(
                # the optimisation level of the package (compile_package's): a fair pair
                [
                    tool,
                    "-O%d" % OPT,
                    "-o",
                    str(base / "umqtt_like.mpy"),
                    str(base / "umqtt_like.py"),
                ],
                check=True,
                timeout=60,
            )
            (base / "umqtt_like.py").unlink()
            if simple:
                compile_package(d / "umqtt-mpy", src=umqtt / "umqtt")
                umqtt = d / "umqtt-mpy"
        else:
            pkg_dir = pkg
        dirs[variant] = {"pkg": str(pkg_dir), "base": str(base), "umqtt": str(umqtt)}
    return pkg, dirs


def env_for(dirs, kind):
    env = device_env(dirs["pkg"])
    extra = {"umqtt_like": dirs["base"], "umqtt_simple": dirs["umqtt"]}.get(kind)
    if extra:
        env["MICROPYPATH"] = extra + ":" + env["MICROPYPATH"]
    return env


# ---- one client ---------------------------------------------------------------------------------


def measure_client(args, emu, root, dirs, kind, variant, handlers=False):
    device_id = "ram-%s-%s%s" % (variant, kind.replace("_", "-"), "-h" if handlers else "")
    key = emu.add_device(device_id)
    cfg = {
        "kind": kind,
        "handlers": handlers,
        "cs": emu.connection_string(device_id, gateway=False),
        "hostname": emu.hostname,
        "device_id": device_id,
        "key": key,
        "server": "127.0.0.1",
        "port": emu.port,
        "root": root,
        "body": BODY,
        "props": PROPS,
        "warmup": args.warmup,
        "garbage_n": args.garbage_n,
        "n": args.sends,
        "nodelay": not args.nagle,
    }
    marks = {}

    def on_mark(name, data):
        pid = data.get("pid") or marks["pid"]
        marks["pid"] = pid
        conn = emu.endpoint.connections[-1]
        marks[name] = (conn, _snap(conn), cpu_seconds(pid), run_ns(pid))

    r = run_ram_device(args.mp, cfg, env_for(dirs, kind), on_mark=on_mark)
    suffix = ".mpy" if variant == "mpy" else ".py"
    if not str(r["file"]).endswith(suffix):
        raise SystemExit(
            "%s %s: the client came from %s, not a %s file" % (kind, variant, r["file"], suffix)
        )
    if handlers:
        return r
    conn_a, a, cpu_a, ns_a = marks["loop_start"]
    conn_b, b, cpu_b, ns_b = marks["loop_end"]
    if conn_a is not conn_b:
        raise SystemExit(
            "%s %s: the loop's marks were sampled on two connections" % (kind, variant)
        )
    n = args.sends
    w = _window(a, b)
    r["cpu_s"] = cpu_b - cpu_a
    r["cpu_us"] = r["cpu_s"] / n * 1e6
    r["cpu_us_schedstat"] = (ns_b - ns_a) / n / 1e3 if ns_a is not None else None
    r["wall_us"] = r["wall_us_median"]
    r["tls_bytes_out"] = w["tls_in"] / n  # the endpoint's "in" is device->hub
    r["tls_records_out"] = len(w["records_in"]) / n
    r["tls_bytes_in"] = w["tls_out"] / n
    r["tls_records_in"] = len(w["records_out"]) / n
    r["record_sizes_out"] = sorted(set(w["records_in"]))
    tel = emu.telemetry(device_id)
    with_props = sum(1 for m in tel if m["properties"] == PROPS)
    if len(tel) != r["sent"] or with_props != r["sent"] - args.warmup - args.garbage_n:
        raise SystemExit(
            "%s %s: the hub recorded %d messages (%d with the properties), the device sent %d"
            % (kind, variant, len(tel), with_props, r["sent"])
        )
    if any(bytes(m["payload"]) != BODY.encode() for m in tel[-3:]):
        raise SystemExit("%s %s: payload changed on the way" % (kind, variant))
    return r


def measure_modules(args, src_pkg, dirs, loaded):
    """Heap kept by each iothub module a connected client has loaded, leaves first."""
    names = [m.split(".", 1)[1] for m in loaded if "." in m]
    order = leaves_first(names, package_deps(src_pkg / "iothub"))
    per = modules_heap(args.mp, order, device_env(dirs["pkg"]))
    return {"order": order, "heap": per["heap"], "pools": per["pools"]}


def table(res):
    """{row: {client figures..., ratio, target, pass}} from one variant's results."""
    out = {}
    ours, base = res["iothub"], res["umqtt_like"]
    simple = res.get("umqtt_simple")
    for key, _label, target in ROWS:
        if key == "heap_handlers":
            o, b = res["iothub_handlers"]["heap_connect"], base["heap_connect"]
            s = simple["heap_connect"] if simple else None
        else:
            o, b = ours[key], base[key]
            s = simple[key] if simple else None
        row = {"iothub": o, "umqtt_like": b, "ratio": o / b if b else None}
        if simple:
            row["umqtt_simple"] = s
            row["ratio_simple"] = o / s if s else None
        if target:
            kind, limit = target
            value = row["ratio"] if kind == "ratio" else o
            if kind == "ratio":
                row["target"] = "<= %gx" % limit
            else:
                row["target"] = "%s%g B" % ("<= " if limit else "", limit)
            row["pass"] = None if value is None else value <= limit  # None: no baseline figure
        else:
            row["target"] = None
            row["pass"] = None
        out[key] = row
    return out


# ---- report ------------------------------------------------------------------------------------


def _num(v, key):
    if v is None:
        return "-"
    if key.startswith("heap") or key == "tls_bytes_out":
        return "%d" % round(v)
    return "%.1f" % v if key != "tls_records_out" else "%.2f" % v


def report(res, args):
    p = print
    p("iothub RAM/CPU next to a umqtt.simple-style baseline -- %s" % res["when"])
    p(
        "device: MicroPython unix port %s (%s); hub: the emulator, ECC, TLS on loopback"
        % (res["mp_version"], args.mp)
    )
    p("package: %s" % res["package"])
    p(
        "message (a): %d-byte JSON body as bytes + properties %s; (b): the body alone; QoS 1, each send waits for its PUBACK"
        % (len(BODY), json.dumps(PROPS, separators=(",", ":")))
    )
    p(
        "loop: %d sends of (a) for CPU, wall and wire; garbage: %d sends each, collector off; %d warm-up sends of each first"
        % (args.sends, args.garbage_n, args.warmup)
    )
    for variant, v in res["variants"].items():
        simple = "umqtt_simple" in v["results"]
        p("")
        p("package as .%s (the baseline too); ratio: iothub / the column on its left" % variant)
        head = "  %-54s %9s %10s %6s" % ("", "iothub", "umqtt-like", "ratio")
        if simple:
            head += " %12s %6s" % ("umqtt.simple", "ratio")
        p(head + "  %-9s %s" % ("target", ""))
        for key, label, _target in ROWS:
            row = v["table"][key]
            line = "  %-54s %9s %10s %6s" % (
                label,
                _num(row["iothub"], key),
                _num(row["umqtt_like"], key),
                "%.2f" % row["ratio"] if row["ratio"] is not None else "-",
            )
            if simple:
                line += " %12s %6s" % (
                    _num(row["umqtt_simple"], key),
                    "%.2f" % row["ratio_simple"] if row["ratio_simple"] is not None else "-",
                )
            if row["target"] is None:
                verdict = ""
            elif row["pass"] is None:
                verdict = "n/a"
            else:
                verdict = "PASS" if row["pass"] else "FAIL"
            p(line + "  %-9s %s" % (row["target"] or "-", verdict))
        r = v["results"]
        who = [k for k in CLIENTS if k in r]

        def each(fn, who=who, r=r):
            return ", ".join("%s %s" % (LABELS[k], fn(r[k])) for k in who)

        p("  notes: handlers row: compared with the baseline's telemetry-only heap. mbedTLS's")
        p("   record buffers and parsed certificates are C malloc on the unix port: not in these")
        p(
            "   heaps. The baseline's imports load iothub's %s."
            % ", ".join(m[7:] for m in r["umqtt_like"]["modules"] if "." in m)
            or "nothing"
        )
        p(
            "   CPU for the loop (%d Hz ticks): %s; per send from /proc/<pid>/schedstat: %s."
            % (
                os.sysconf("SC_CLK_TCK"),
                each(lambda x: "%.2f s" % x["cpu_s"]),
                each(
                    lambda x: (
                        "-" if x["cpu_us_schedstat"] is None else "%.1f us" % x["cpu_us_schedstat"]
                    )
                ),
            )
        )
        ticks = min(r[k]["cpu_s"] for k in who) * os.sysconf("SC_CLK_TCK")
        if ticks < 20:
            p(
                "   NOTE: %d clock ticks for a loop: too coarse for the CPU row; raise --sends."
                % ticks
            )
        p(
            "   wall per send, mean / p90: %s."
            % each(lambda x: "%d / %d us" % (x["wall_us_mean"], x["wall_us_p90"]))
        )
        p("   TLS record sizes device->hub: %s." % each(lambda x: x["record_sizes_out"]))
        p(
            "   Baseline sockets: %s."
            % (
                "TCP_NODELAY set by the bench (the unix port's socket module lacks the name)"
                if r["umqtt_like"]["nodelay"]
                else "no TCP_NODELAY (Nagle's algorithm on)"
            )
        )
        mods = v["modules"]
        total = sum(mods["heap"].values())
        p(
            "  iothub modules loaded by a connected telemetry-only client: %d, heap each (B), leaves first:"
            % len(mods["order"])
        )
        names = mods["order"]
        for i in range(0, len(names), 5):
            p("    " + "  ".join("%-10s %6d" % (m, mods["heap"][m]) for m in names[i : i + 5]))
        p(
            "    sum %d B (import of each alone, without the qstr pools they grew: %d B; heap after"
            % (total, mods.get("pools", 0))
        )
        p(
            "    connect %d B, the rest is the client's state and the names of the code it ran)"
            % r["iothub"]["heap_connect"]
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (smoke test)")
    ap.add_argument("--sends", type=int, default=None, help="sends in the CPU/wall loop (5000)")
    ap.add_argument("--garbage-n", type=int, default=None, help="sends per garbage figure (200)")
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--state", default=None, help="PKI/emulator/build dir (default: temporary)")
    ap.add_argument("--package", default=str(FIRMWARE), help="dir holding iothub/ (firmware/)")
    ap.add_argument("--rev", default=None, help="measure firmware/iothub at this git revision")
    ap.add_argument(
        "--nagle",
        action="store_true",
        help="leave the baselines' sockets without TCP_NODELAY (umqtt.simple as shipped)",
    )
    ap.add_argument("--no-py", dest="py", action="store_false", help="only the .mpy package")
    ap.add_argument(
        "--umqtt-simple",
        default=os.environ.get("UMQTT_SIMPLE") or None,
        help="micropython-lib's umqtt/simple.py, measured as a third column ($UMQTT_SIMPLE)",
    )
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    if args.sends is None:
        args.sends = 200 if args.quick else 5000
    if args.garbage_n is None:
        args.garbage_n = 20 if args.quick else 200
    args.warmup = 5

    state = args.state or tempfile.mkdtemp(prefix="iothub-bench-ram-")
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
        figures.write_block(args.figures, "heap-cpu", markdown(res), figures.source_line())
    return 0


def markdown(res):
    """The README's side-by-side table (the .mpy package, as installed with mip)."""
    v = res["variants"].get("mpy") or next(iter(res["variants"].values()))
    rows = v["table"]
    simple = any("umqtt_simple" in r for r in rows.values())
    header = ["", "iothub", "umqtt-style baseline", "ratio"]
    if simple:
        header += ["umqtt.simple 1.8", "ratio"]
    header += ["target"]
    out = []
    for key, label, _target in ROWS:
        r = rows[key]
        line = [label, _num(r["iothub"], key), _num(r["umqtt_like"], key)]
        line.append("%.2f" % r["ratio"] if r["ratio"] is not None else "-")
        if simple:
            line.append(_num(r.get("umqtt_simple"), key))
            rs = r.get("ratio_simple")
            line.append("%.2f" % rs if rs is not None else "-")
        t = r["target"] or "-"
        if r["pass"] is not None:
            t += " (met)" if r["pass"] else " (**not met**)"
        line.append(t)
        out.append(line)
    return figures.table(header, out)


def run_all(args, state):
    t0 = time.monotonic()
    os.makedirs(state, exist_ok=True)
    src_pkg, dirs = prepare(args, state)
    if args.rev:
        what = "firmware/iothub at %s (git archive)" % args.rev
    elif src_pkg == FIRMWARE.resolve():
        what = "firmware/iothub at %s" % revision()
    else:
        what = str(src_pkg / "iothub")
    ver = subprocess.run(
        [args.mp, "-c", "import sys; print(sys.version.split('; ')[1])"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    res = {
        "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "mp_version": ver,
        "package": what,
        "sends": args.sends,
        "garbage_n": args.garbage_n,
        "warmup": args.warmup,
        "variants": {},
    }
    pki = TestPKI.load_or_create(os.path.join(state, "pki"))
    with Emulator(os.path.join(state, "hub"), profile="ecc", pki=pki) as emu:
        root = os.path.join(state, "root-ecc.der")
        pathlib.Path(root).write_bytes(emu.root_der)
        for variant, d in dirs.items():
            results = {}
            for kind in CLIENTS:
                if kind == "umqtt_simple" and not args.umqtt_simple:
                    continue
                results[kind] = measure_client(args, emu, root, d, kind, variant)
            results["iothub_handlers"] = measure_client(
                args, emu, root, d, "iothub", variant, handlers=True
            )
            res["variants"][variant] = {
                "results": results,
                "modules": measure_modules(args, src_pkg, d, results["iothub"]["modules"]),
                "table": table(results),
            }
    res["seconds"] = time.monotonic() - t0
    return res


if __name__ == "__main__":
    sys.exit(main())
