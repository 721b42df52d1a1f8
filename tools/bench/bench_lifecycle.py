"""Field lifecycle under faults: time to recover per fault, blocking and asyncio client, and a
short soak -- the README's lifecycle figures, measured in one run.

The device is the stock MicroPython unix port running the package precompiled to .mpy (as mip
installs it) with -X heapsize=192k; the hub is the emulator over real TLS on loopback. The
scenarios are host_tests/lifecycle_scenarios.py, the very ones host_tests/test_lifecycle.py
runs: the device keeps sending numbered QoS 1 messages (one every 100 ms, fast test backoff
200 ms / 3 s / 300 ms jitter) while the emulator injects a fault. Every figure is read on the
hub's side: time to recover from the fault to the hub's next accepted CONNACK (hub clock), the
CONNACK codes it sent in between, and the telemetry it recorded (lost, DUP copies).

    .venv/bin/python tools/bench/bench_lifecycle.py [--quick] [--runs 3] [--only KEY,...]
        [--soak-n 400 | --no-soak] [--mp BINARY] [--json FILE]
        [--figures docs/figures.md]      # also write the README's block "lifecycle"

 1. Every fault of lifecycle_scenarios (SCENARIOS below), --runs times, the two clients side
    by side on each fault (each in its thread, against its own emulator), so that load from
    elsewhere on the machine falls on both alike: the median time to recover (and the range),
    the asyncio / blocking ratio of the medians, the CONNACK codes the hub sent after the
    fault, messages lost and DUP copies over all runs.
 2. Soak, both clients side by side: --soak-n messages each (400: 40 s) with 15 s SAS tokens
    renewed at 12 s and a connection drop after 3/8 and 6/8 of them; renewals, reconnects,
    lost, and the heap after gc.collect() every 50 messages. Shorter than the tests' 2-minute
    soak (1100 messages), which asserts flat heap and nothing lost on every `make test`.

A scenario that loses a message, or whose device fails, stops the bench with its output: the
figures are only printed for runs the tests would pass. Costs about 4 minutes with the
defaults on this repository's 2-core machine, nearly all of it waiting for the scenarios'
timers (--quick, about 30 s: one run of two faults, a 200-message soak). Not a test:
host_tests/test_bench_lifecycle_smoke.py runs --quick.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for p in (HERE, ROOT / "tools", ROOT / "host_tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import figures  # noqa: E402
import lifecycle_scenarios as life  # noqa: E402
from bench_client import micropython, revision  # noqa: E402

import mpyrun  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402
from iothub_tool.mpy import compile_package  # noqa: E402

KINDS = ("blocking", "aio")
KIND_LABEL = {"blocking": "blocking", "aio": "asyncio"}


def _fault(key):
    return lambda ctx, kind: life.run_fault(ctx.emu(), ctx.mpy, key, kind, ctx.heap)


def _connack_5(ctx, kind):
    return life.run_connack_5(ctx.emu(), ctx.mpy, ctx.path("flag"), kind, ctx.heap)


def _expiry(ctx, kind):
    return life.run_token_expiry(ctx.pki, ctx.path("hub"), ctx.mpy, kind, ctx.heap)


def _throttling(ctx, kind):
    return life.run_throttling(ctx.emu(), ctx.mpy, kind, ctx.heap)


def _desired(ctx, kind):
    return life.run_desired_offline(ctx.emu(), ctx.mpy, kind, ctx.heap)


F = life.FAULTS
# key -> (the README's row label, runner)
SCENARIOS = {
    "drop-mid-publish": (F["drop-mid-publish"].label, _fault("drop-mid-publish")),
    "connection-reset": (F["connection-reset"].label, _fault("connection-reset")),
    "stall": (F["stall"].label, _fault("stall")),
    "connack-3": (F["connack-3"].label + ": retried with backoff", _fault("connack-3")),
    "connack-5": (
        "CONNACK 5 (not authorized): **not** retried for %d s of the device's own time (twice "
        "the backoff maximum), then `update_credentials()`; time includes that wait"
        % (life.AUTH_WAIT_MS // 1000),
        _connack_5,
    ),
    "token-expiry": ("hub closes the connection at SAS token expiry", _expiry),
    "malformed-length": (F["malformed-length"].label, _fault("malformed-length")),
    "malformed-truncated": (F["malformed-truncated"].label, _fault("malformed-truncated")),
    "malformed-type": (F["malformed-type"].label, _fault("malformed-type")),
    "oversize": (
        F["oversize"].label + ": read through as a poison message (never buffered), so the "
        "link is declared dead by the first PUBACK missing for `timeout_ms` (5 s)",
        _fault("oversize"),
    ),
    "hub-restart": (F["hub-restart"].label, _fault("hub-restart")),
    "throttling": ("throttling: PUBACKs delayed 1 s; twin answers 429", _throttling),
    "desired-offline": (
        "desired patch made while the device was offline (its first reconnect refused)",
        _desired,
    ),
}
QUICK = ("connection-reset", "throttling")


class Ctx:
    """What a scenario run needs: the PKI, the .mpy package, a fresh directory per run and the
    emulators to stop after it."""

    def __init__(self, state, pki, mpy, heap):
        self.state, self.pki, self.mpy, self.heap = state, pki, mpy, heap
        self.n = 0
        self.emus = []

    def new_run(self):
        self.n += 1
        self.dir = pathlib.Path(self.state) / ("run-%d" % self.n)
        self.dir.mkdir(parents=True)

    def path(self, name):
        return self.dir / name

    def emu(self):
        e = life.make_emu(self.pki, self.path("hub-%d" % len(self.emus)))
        self.emus.append(e)
        return e

    def stop(self):
        while self.emus:
            e = self.emus.pop()
            e.faults.reset()
            e.stop()


def run_scenario(ctx, key, kind):
    ctx.new_run()
    try:
        o = SCENARIOS[key][1](ctx, kind)
    except AssertionError as e:  # a lost message, a device that failed: no figure from it
        raise SystemExit("scenario %s [%s] failed:\n%s" % (key, kind, e)) from None
    finally:
        ctx.stop()
    return o


def side_by_side(ctxs, what):
    """Run what(ctx, kind) for both clients at once, each in its thread with its own emulator;
    {kind: its result}. The device processes spend most of their time waiting for timers
    (send interval, backoff, keepalive), so the two runs barely compete for the CPU."""
    out, errors = {}, []

    def one(kind):
        try:
            out[kind] = what(ctxs[kind], kind)
        except BaseException as e:  # SystemExit from a failed scenario, or a bug: re-raised below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(kind,)) for kind in KINDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def measure_faults(ctxs, keys, runs):
    res = {key: {kind: [] for kind in KINDS} for key in keys}

    def one(ctx, kind):
        t0 = time.monotonic()
        d = run_scenario(ctx, key, kind).as_dict()
        d["seconds"] = time.monotonic() - t0
        return d

    for r in range(runs):
        for key in keys:
            for kind, d in side_by_side(ctxs, one).items():
                res[key][kind].append(d)
                print(
                    "  run %d %-20s %-8s recovered in %s, CONNACKs %s, lost %d, DUP %d (%.0f s)"
                    % (
                        r + 1,
                        key,
                        kind,
                        "-" if d["recovery_s"] is None else "%.2f s" % d["recovery_s"],
                        d["attempts"],
                        d["lost"],
                        d["dup"],
                        d["seconds"],
                    ),
                    flush=True,
                )
    return res


def measure_soak(ctx, kind, n):
    every = 50
    drops = (n * 3 // 8 // every * every, n * 6 // 8 // every * every)
    ctx.new_run()
    t0 = time.monotonic()
    try:
        o = life.run_soak(
            ctx.pki,
            ctx.path("hub"),
            ctx.mpy,
            kind,
            n=n,
            sample_every=every,
            drops=drops,
            heapsize=ctx.heap,
            timeout=60 + n // 10,
        )
    except AssertionError as e:
        raise SystemExit("soak [%s] failed:\n%s" % (kind, e)) from None
    d = o.as_dict()
    d.update(seconds=time.monotonic() - t0, n=n, drops=list(drops), sample_every=every)
    # after the first drop: the first renewal and reconnect have loaded what they keep
    d["steady"] = [b for at, b in o.facts["heap"] if at > drops[0]]
    print(
        "  soak %-8s %d messages, renewals %d, reconnects %d, lost %d, heap %s (%.0f s)"
        % (kind, n, o.facts["renewals"], o.reconnects, o.lost, o.facts["heap"], d["seconds"]),
        flush=True,
    )
    return d


def summary(runs):
    """Median, min and max recovery time of the runs (None when no run reconnected)."""
    times = [r["recovery_s"] for r in runs if r["recovery_s"] is not None]
    if not times:
        return None
    return statistics.median(times), min(times), max(times)


def recovery_cell(runs):
    s = summary(runs)
    if s is None:
        return "no reconnect (%d in %d runs)" % (sum(r["reconnects"] for r in runs), len(runs))
    med, lo, hi = s
    if len(runs) == 1:
        return "%.2f s" % med
    return "%.2f s (%.2f–%.2f)" % (med, lo, hi)


def ratio_cell(res_key):
    b, a = summary(res_key["blocking"]), summary(res_key["aio"])
    return "%.2f" % (a[0] / b[0]) if a and b and b[0] else "-"


def attempts_cell(key, res_key):
    runs = res_key["blocking"] + res_key["aio"]
    if key == "throttling":
        errors = sorted({r["facts"]["twin_error"].split(" ", 3)[1:3][0] for r in runs})
        retriable = sorted({r["facts"]["twin_error"].split(" ", 3)[2] for r in runs})
        return "none needed; twin: `StatusError(%s, retriable=%s)`" % (
            "/".join(errors),
            "/".join(retriable),
        )
    seqs = sorted({", ".join(str(c) for c in r["attempts"]) for r in runs}, key=len)
    cell = " or ".join(seqs)
    if key == "connack-5":
        refused = sorted({len(r["facts"]["attempts_while_refused"]) for r in runs})
        cell += " (%s attempt%s in the %d s refused)" % (
            " or ".join(str(x) for x in refused),
            "" if refused == [1] else "s",
            life.AUTH_WAIT_MS // 1000,
        )
    if key == "desired-offline":
        once = all(r["facts"]["delivered"] == r["facts"]["versions"] for r in runs)
        cell += "; patch delivered %s" % ("once, in order" if once else "NOT once")
    return cell


def fault_rows(res):
    rows = []
    for key, per in res["faults"].items():
        runs = per["blocking"] + per["aio"]
        rows.append(
            [
                SCENARIOS[key][0],
                recovery_cell(per["blocking"]),
                recovery_cell(per["aio"]),
                ratio_cell(per),
                attempts_cell(key, per),
                "%d of %d" % (sum(r["lost"] for r in runs), sum(r["sent"] for r in runs)),
                "%d" % sum(r["dup"] for r in runs),
            ]
        )
    return rows


FAULT_HEADER = [
    "fault",
    "recovered in: blocking",
    "asyncio",
    "asyncio / blocking",
    "CONNACK codes after the fault",
    "lost (all runs)",
    "DUP copies (all runs)",
]


def soak_rows(res):
    rows = []
    for kind in KINDS:
        s = res["soak"][kind]
        heap = s["facts"]["heap"]
        rows.append(
            [
                KIND_LABEL[kind],
                "%d in %.0f s" % (s["n"], s["seconds"]),
                "%d" % s["facts"]["renewals"],
                "%d" % s["reconnects"],
                "%d" % s["lost"],
                "%d" % heap[0][1] if heap else "-",
                "%d–%d (%d samples)" % (min(s["steady"]), max(s["steady"]), len(s["steady"]))
                if s["steady"]
                else "-",
            ]
        )
    return rows


SOAK_HEADER = [
    "client",
    "messages",
    "renewals",
    "reconnects (renewals included)",
    "lost",
    "heap, first sample (B)",
    "heap after the first drop, min–max (B)",
]


def markdown(res):
    runs = res["runs"]
    out = (
        "Time to recover, from the fault to the hub's next accepted CONNACK: median of %d "
        "run%s per client (range), %s, `-X heapsize=%s`, fast test backoff (200 ms min, 3 s "
        "max, 300 ms jitter).\n\n"
        % (runs, "s" if runs > 1 else "", res["package_kind"], res["heap"])
    )
    out += figures.table(FAULT_HEADER, fault_rows(res))
    if res.get("soak"):
        s = res["soak"]["blocking"]
        out += (
            "\nSoak, shortened for the bench: %d messages every 100 ms per client, 15 s SAS "
            "tokens renewed at 12 s, connection drops after %d and %d messages; heap after "
            "`gc.collect()` every %d messages (the tests' soak runs 1100):\n\n"
            % (s["n"], s["drops"][0], s["drops"][1], s["sample_every"])
        )
        out += figures.table(SOAK_HEADER, soak_rows(res))
    return out


def report(res):
    p = print
    p("Field lifecycle under faults -- %s, %s" % (res["package"], res["mp"]))
    p("1. Time to recover (median of %d runs per client, range)" % res["runs"])
    widths = (20, 24, 24, 8, 44, 12, 5)
    fmt = "   " + " ".join("%%-%ds" % w for w in widths)
    p(fmt % tuple(["fault"] + FAULT_HEADER[1:]))
    for key, row in zip(res["faults"], fault_rows(res), strict=True):
        p(fmt % tuple([key] + row[1:]))
    if res.get("soak"):
        p("2. Soak")
        for row in soak_rows(res):
            p("   " + " | ".join(row))
    p("measured in %.0f s" % res["seconds"])


def run_all(args, state):
    t0 = time.monotonic()
    os.environ["MICROPYTHON"] = args.mp  # the device binary of lifecycle_scenarios
    mpy = os.path.join(state, "mpy")
    if mpyrun.frozen():
        os.makedirs(mpy, exist_ok=True)
        kind = "package frozen into %s" % os.path.basename(args.mp)
    else:
        compile_package(mpy)
        kind = "stock unix port, package as .mpy"
    pki = TestPKI.load_or_create(os.path.join(state, "pki"))
    ctxs = {kind: Ctx(os.path.join(state, kind), pki, mpy, args.heap) for kind in KINDS}
    res = {
        "package": "firmware/iothub at %s" % revision(),
        "package_kind": kind,
        "mp": args.mp,
        "heap": args.heap,
        "runs": args.runs,
    }
    print("1. faults: %s" % ", ".join(args.only), flush=True)
    res["faults"] = measure_faults(ctxs, args.only, args.runs)
    if args.soak_n:
        print("2. soak", flush=True)
        res["soak"] = side_by_side(ctxs, lambda ctx, kind: measure_soak(ctx, kind, args.soak_n))
    res["seconds"] = time.monotonic() - t0
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="one run of %s, short soak" % ", ".join(QUICK)
    )
    ap.add_argument("--runs", type=int, default=None, help="runs per fault and client (3)")
    ap.add_argument("--only", default=None, help="comma-separated keys: %s" % ", ".join(SCENARIOS))
    ap.add_argument("--soak-n", type=int, default=None, help="soak messages per client (400)")
    ap.add_argument("--no-soak", action="store_true", help="skip the soak")
    ap.add_argument("--heap", default="192k", help="device -X heapsize (default: %(default)s)")
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--json", default=None, help="also write every figure here")
    ap.add_argument("--state", default=None, help="PKI/emulator/build dir (default: temporary)")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.soak_n is None:
        args.soak_n = 200 if args.quick else 400
    if args.no_soak:
        args.soak_n = 0
    elif args.soak_n < 200:
        ap.error("--soak-n: at least 200 (two drops, a sample every 50 messages)")
    keys = args.only.split(",") if args.only else list(QUICK if args.quick else SCENARIOS)
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        ap.error("unknown scenario %s (known: %s)" % (", ".join(unknown), ", ".join(SCENARIOS)))
    args.only = keys
    if args.figures and (args.quick or args.only != list(SCENARIOS) or not args.soak_n):
        ap.error("--figures writes the README's block: run every scenario and the soak")
    state = args.state or tempfile.mkdtemp(prefix="iothub-bench-lifecycle-")
    try:
        os.makedirs(state, exist_ok=True)
        res = run_all(args, state)
    finally:
        if args.state is None:
            shutil.rmtree(state, ignore_errors=True)
    report(res)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.figures:
        figures.write_block(args.figures, "lifecycle", markdown(res), figures.source_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
