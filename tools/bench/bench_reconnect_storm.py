"""Reconnect storm: N simulated devices recovering from one hub outage, per retry strategy.

Every device loses the hub at t=0; the hub is down for --outage seconds. Each device drives its
own retry policy on a simulated millisecond clock (no sleeping): attempt, fail while the hub is
down, wait the policy's next delay, try again; the first attempt at or after the end of the
outage succeeds (unless the hub's admission limit is reached, see below). Strategies:

  jitter    the device's own core, firmware/iothub/backoff.py Backoff(1 s, 100 s, jitter 0-5 s),
            the azure-sdk-for-c defaults (docs/protocol.md 5.2). Like DeviceClient._lost(), the
            device waits next_delay_ms() before its first reconnect attempt.
  nojitter  the same core with max_jitter_ms=0.
  fixed2    a fixed 2 s retry, first retry immediately (umqtt.robust: reconnect() tries at once,
            then sleeps DELAY = 2 s between tries; docs/protocol.md 5.3).
  fixed10   a fixed 10 s retry, first retry immediately (azure-iot-device v2: a reconnect timer
            of 0.01 s after an unexpected drop, then connection_retry_interval = 10 s;
            pipeline_stages_base.ConnectionStateStage; docs/protocol.md 5.3).

All randomness comes from random.Random(--seed), passed to Backoff through its `rand` hook, so a
run is reproducible. Attempts take no time (the client passes no operation_ms either).

Hub admission (--admit): IoT Hub throttles new device connections at max(100/s, 12/s/unit) on
S1 (docs/protocol.md 2.5, azure-docs iot-hub-devguide-quotas-throttling.md). The second table
models a hub that accepts at most --admit connections in each calendar second after recovery
and refuses the rest; a refused device counts a failed attempt and keeps backing off. The docs
say traffic over a limit is first shaped (queued) and then rejected, so refusing at once is the
pessimistic end; 0 disables the limit.

Printed: per strategy, attempts made while the hub was down, peak attempts in one 1 s bucket
during the outage and after recovery (buckets after recovery start at the end of the outage),
seconds from recovery until 90 % and 100 % of the devices are connected, and the spread (sd)
of reconnect times. A third table shows, for a long outage (--cap-outage), how the jitter of
the core stops at the cap: faithful to azure-sdk-for-c, jitter is added only while
max_ms - delay > jitter, so from Backoff.attempt 7 on (with the defaults) every delay is exactly
100 s and the spread between devices stops growing.

    .venv/bin/python tools/bench/bench_reconnect_storm.py [-n 500] [--outage 120] [--admit 100]
        [--seed 1] [--plot docs/storm.png | --no-plot]
        [--figures docs/figures.md]   # also write the README's blocks "storm", "storm-throttled",
                                      # "storm-cap"

Not a test: it prints what the simulation produced (host_tests/test_bench_storm_smoke.py only
checks that it runs and that jitter flattens the storm on a fixed seed).
"""

import argparse
import heapq
import math
import pathlib
import random
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT / "firmware") not in sys.path:
    sys.path.insert(0, str(ROOT / "firmware"))

from iothub.backoff import Backoff  # noqa: E402  (the device's own pure core)

try:
    from . import figures
except ImportError:  # run as a script
    import figures

DEFAULT_PLOT = ROOT / "docs" / "storm.png"


class Fixed:
    """A constant retry delay (not our core: the comparison strategies)."""

    def __init__(self, ms):
        self.ms = ms

    def next_delay_ms(self):
        return self.ms


class Strategy:
    def __init__(self, key, label, make, immediate):
        self.key = key
        self.label = label
        self.make = make  # make(rand) -> object with next_delay_ms()
        self.immediate = immediate  # first attempt at t=0 (else after one next_delay_ms())


def strategies(min_ms=1000, max_ms=100000, jitter_ms=5000):
    return [
        Strategy(
            "jitter",
            "backoff %g-%g s + jitter 0-%g s (ours)"
            % (min_ms / 1000, max_ms / 1000, jitter_ms / 1000),
            lambda rand: Backoff(min_ms, max_ms, jitter_ms, rand),
            False,
        ),
        Strategy(
            "nojitter",
            "backoff %g-%g s, no jitter" % (min_ms / 1000, max_ms / 1000),
            lambda rand: Backoff(min_ms, max_ms, 0, rand),
            False,
        ),
        Strategy("fixed2", "fixed 2 s (umqtt.robust-like)", lambda rand: Fixed(2000), True),
        Strategy("fixed10", "fixed 10 s (Python SDK v2-like)", lambda rand: Fixed(10000), True),
    ]


def simulate(strategy, n, outage_ms, admit_per_s=0, seed=1):
    """Run one storm. Returns {"attempts": [[t_ms, ...] per device], "connected": [t_ms per
    device], "refused": attempts refused by the admission limit}."""
    rng = random.Random(seed)

    def rand(k):
        return rng.randint(0, k)

    policies = [strategy.make(rand) for _ in range(n)]
    heap = []
    for i, p in enumerate(policies):
        heap.append((0 if strategy.immediate else p.next_delay_ms(), i))
    heapq.heapify(heap)
    attempts = [[] for _ in range(n)]
    connected = [None] * n
    admitted = {}  # calendar second -> connections accepted in it
    refused = 0
    while heap:
        t, i = heapq.heappop(heap)
        attempts[i].append(t)
        if t >= outage_ms:
            sec = t // 1000
            if not admit_per_s or admitted.get(sec, 0) < admit_per_s:
                admitted[sec] = admitted.get(sec, 0) + 1
                connected[i] = t
                continue
            refused += 1
        heapq.heappush(heap, (t + policies[i].next_delay_ms(), i))
    return {"attempts": attempts, "connected": connected, "refused": refused}


def per_second(res, outage_ms, until_ms):
    """Attempts in each 1 s bucket [k, k+1) s from t=0, up to until_ms, by outcome:
    (failed: hub down, refused: over the admission limit, connected)."""
    size = until_ms // 1000 + 1
    failed, refused, ok = [0] * size, [0] * size, [0] * size
    for ts, tc in zip(res["attempts"], res["connected"], strict=True):
        for t in ts:
            if t > until_ms:
                continue
            if t < outage_ms:
                failed[t // 1000] += 1
            elif t == tc:
                ok[t // 1000] += 1
            else:
                refused[t // 1000] += 1
    return failed, refused, ok


def summarize(res, outage_ms):
    n = len(res["connected"])
    during = {}
    after = {}
    total_during = 0
    for ts in res["attempts"]:
        for t in ts:
            if t < outage_ms:
                total_during += 1
                during[t // 1000] = during.get(t // 1000, 0) + 1
            else:
                k = (t - outage_ms) // 1000
                after[k] = after.get(k, 0) + 1
    ct = sorted(res["connected"])
    since = [(t - outage_ms) / 1000 for t in ct]
    return {
        "attempts_outage": total_during,
        "peak_outage": max(during.values()) if during else 0,
        "peak_after": max(after.values()) if after else 0,
        "t90": since[math.ceil(0.9 * n) - 1],
        "t100": since[-1],
        "sd": statistics.pstdev(since) if n > 1 else 0.0,
        "refused": res["refused"],
    }


def cap_rows(strategy, n, outage_ms, seed, jitter_ms, attempts_shown=10):
    """Spread of the k-th attempt time across devices, for a long outage."""
    res = simulate(strategy, n, outage_ms, 0, seed)
    rows = []
    for k in range(attempts_shown):
        ts = [a[k] / 1000 for a in res["attempts"] if len(a) > k]
        prev = [a[k - 1] / 1000 if k else 0.0 for a in res["attempts"] if len(a) > k]
        if not ts:
            break
        gaps = [t - p for t, p in zip(ts, prev, strict=True)]
        rows.append(
            {
                "k": k,
                "gap_min": min(gaps),
                "gap_max": max(gaps),
                "mean": statistics.fmean(ts),
                "sd": statistics.pstdev(ts),
                "lo": min(ts),
                "hi": max(ts),
                # If jitter were drawn on every retry (not what the core does): the k-th attempt
                # time would carry the sum of k+1 independent U[0, jitter] draws.
                "sd_if_always": jitter_ms / 1000 * math.sqrt((k + 1) / 12),
            }
        )
    return rows


def format_table(results, admit_per_s):
    head = (
        "strategy",
        "attempts in outage",
        "peak/s outage",
        "peak/s after",
        "t90 s",
        "t100 s",
        "spread sd s",
    )
    if admit_per_s:
        head += ("refused",)
    rows = [head]
    for strategy, s in results:
        row = (
            strategy.label,
            str(s["attempts_outage"]),
            str(s["peak_outage"]),
            str(s["peak_after"]),
            "%.1f" % s["t90"],
            "%.1f" % s["t100"],
            "%.1f" % s["sd"],
        )
        if admit_per_s:
            row += (str(s["refused"]),)
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    lines = []
    for j, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [r[c].rjust(widths[c]) for c in range(1, len(r))]
        lines.append("| " + " | ".join(cells) + " |")
        if j == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def format_cap(rows):
    lines = [
        "| Backoff.attempt k | delay before try k+1, s | try k+1 at: mean s | sd s | min-max s "
        "| sd s if jitter never stopped (analytic) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            "| %d | %.1f-%.1f | %.1f | %.2f | %.1f-%.1f | %.2f |"
            % (
                r["k"],
                r["gap_min"],
                r["gap_max"],
                r["mean"],
                r["sd"],
                r["lo"],
                r["hi"],
                r["sd_if_always"],
            )
        )
    return "\n".join(lines)


def _until_ms(runs, outage_ms):
    until = outage_ms + 60000
    for _, res, _ in runs:
        until = max(until, max(res["connected"]) + 10000)
    return until


def plot(path, columns, outage_ms, n):
    """columns: [(title, admit_per_s, [(strategy, result, summary), ...]), ...]: one column of
    panels per hub model, one row per strategy, same y scale everywhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(columns[0][2])
    fig, axes = plt.subplots(
        rows,
        len(columns),
        sharey=True,
        squeeze=False,
        figsize=(7.5 * len(columns), 2.2 * rows + 1.2),
    )
    for c, (title, admit_per_s, runs) in enumerate(columns):
        until_ms = _until_ms(runs, outage_ms)
        for r, (strategy, res, s) in enumerate(runs):
            ax = axes[r][c]
            failed, refused, ok = per_second(res, outage_ms, until_ms)
            x = range(len(failed))
            below = [a + b for a, b in zip(failed, refused, strict=True)]
            ax.bar(x, failed, width=1.0, align="edge", color="tab:blue", label="failed: hub down")
            ax.bar(
                x,
                refused,
                width=1.0,
                align="edge",
                bottom=failed,
                color="tab:orange",
                label="refused: over admission limit",
            )
            ax.bar(
                x, ok, width=1.0, align="edge", bottom=below, color="tab:green", label="connected"
            )
            ax.axvspan(0, outage_ms / 1000, color="0.88", zorder=0)
            ax.axvline(outage_ms / 1000, color="tab:red", lw=1)
            if admit_per_s:
                ax.axhline(admit_per_s, color="black", lw=0.8, ls="--")
            ax.set_xlim(0, until_ms / 1000)
            ax.set_title(
                "%s\npeak %d/s after recovery; all connected %.0f s after it"
                % (strategy.label, s["peak_after"], s["t100"]),
                fontsize=9,
                loc="left",
            )
            if c == 0:
                ax.set_ylabel("attempts/s")
            ax.grid(axis="y", color="0.9")
            ax.tick_params(labelsize=8)
        axes[0][c].annotate(
            title,
            (0.5, 1.0),
            xytext=(0, 34),
            xycoords="axes fraction",
            textcoords="offset points",
            ha="center",
            fontsize=11,
            fontweight="bold",
        )
        axes[-1][c].set_xlabel(
            "seconds since the hub went down (grey: hub down, red line: hub back)"
        )
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(
        "Reconnect storm: %d devices, %g s hub outage: connection attempts per 1 s"
        % (n, outage_ms / 1000)
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--devices", type=int, default=500)
    ap.add_argument("--outage", type=float, default=120.0, help="hub outage, s (default 120)")
    ap.add_argument(
        "--admit",
        type=int,
        default=100,
        help="hub admits at most this many connections per second in the second table "
        "(IoT Hub S1: max(100, 12 x units)); 0 = no second table",
    )
    ap.add_argument(
        "--cap-outage", type=float, default=600.0, help="outage for the jitter-cap table, s"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-ms", type=int, default=1000)
    ap.add_argument("--max-ms", type=int, default=100000)
    ap.add_argument("--jitter-ms", type=int, default=5000)
    ap.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG path (default docs/storm.png)")
    ap.add_argument("--no-plot", action="store_true")
    figures.add_figures_arg(ap)
    a = ap.parse_args(argv)
    if a.devices < 1:
        ap.error("--devices must be >= 1")
    if a.outage <= 0 or a.cap_outage <= 0:
        ap.error("outages must be > 0 s")
    if a.admit < 0:
        ap.error("--admit must be >= 0")
    outage_ms = int(a.outage * 1000)
    strats = strategies(a.min_ms, a.max_ms, a.jitter_ms)

    print(
        "Reconnect storm: %d devices, hub down for %g s from t=0, seed %d."
        % (a.devices, a.outage, a.seed)
    )
    print("peak/s: most attempts in one 1 s bucket; t90/t100/sd: reconnect times after recovery.")
    print()
    print("Hub accepts every connection once it is back:")
    free = []
    for st in strats:
        res = simulate(st, a.devices, outage_ms, 0, a.seed)
        free.append((st, res, summarize(res, outage_ms)))
    print(format_table([(st, s) for st, _, s in free], 0))

    limited = []
    if a.admit:
        print()
        print(
            "Hub admits at most %d connections per second after recovery, refuses the rest "
            "(they back off and retry):" % a.admit
        )
        for st in strats:
            res = simulate(st, a.devices, outage_ms, a.admit, a.seed)
            limited.append((st, res, summarize(res, outage_ms)))
        print(format_table([(st, s) for st, _, s in limited], a.admit))

    print()
    print(
        "Jitter stops at the cap (core with jitter, %g s outage, hub unlimited): when device "
        "tries its (k+1)-th time" % a.cap_outage
    )
    rows = cap_rows(strats[0], a.devices, int(a.cap_outage * 1000), a.seed, a.jitter_ms)
    print(format_cap(rows))
    if a.figures:
        src = figures.source_line()
        figures.write_block(
            a.figures, "storm", format_table([(st, s) for st, _, s in free], 0) + "\n", src
        )
        if limited:
            table = format_table([(st, s) for st, _, s in limited], a.admit)
            figures.write_block(a.figures, "storm-throttled", table + "\n", src)
        figures.write_block(a.figures, "storm-cap", format_cap(rows) + "\n", src)

    if not a.no_plot:
        columns = [("hub accepts everyone once back", 0, free)]
        if limited:
            columns.append(
                ("hub admits %d/s, refuses the rest (dashed)" % a.admit, a.admit, limited)
            )
        path = plot(a.plot, columns, outage_ms, a.devices)
        print()
        print("plot: %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
