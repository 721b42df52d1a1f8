"""What an idle iothub.aio client costs in CPU, by what its reader waits on: the raw TCP socket
(what iothub.aio does) or the TLS socket (what a stream from asyncio.open_connection(ssl=...)
would wait on).

The device is the real MicroPython unix port, connected over TLS to the emulator, with the
asyncio client's reader waiting for the hub while the application sleeps for IDLE seconds.
The only difference between the two modes is the object handed to asyncio's I/O queue. The
CPU time of the device process is measured by the host (getrusage of the child), for an
idle of 0 s and of IDLE s; the difference divided by IDLE is the CPU per idle second.

    .venv/bin/python tools/bench/bench_aio_wait.py [--idle 3] [--runs 3] [--mp micropython]
        [--json out.json] [--figures docs/figures.md]   # README block "aio-wait"

Not a test: it prints what this run measured, the TLS-socket mode as a ratio of the raw one.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

DEVICE = r"""
import asyncio, json
from iothub.aio import DeviceClient
cfg = %r
def rd(p):
    with open(p, 'rb') as f:
        return f.read()
async def main():
    c = DeviceClient.from_connection_string(
        cfg['cs'], tls='ecc', roots=[rd(cfg['root'])], host='127.0.0.1', port=cfg['port'])
    await c.connect()
    link = c._s.link
    if cfg['mode'] == 'tls':
        # before the reader task first waits: it waits on link.raw, here the TLS socket
        link.raw = link.sock
    await asyncio.sleep_ms(cfg['idle_ms'])
    pid = await c.send(b'after idle')
    await c.disconnect()
    print(json.dumps({'mode': cfg['mode'], 'pid': pid}))
asyncio.run(main())
"""

MODES = ("raw", "tls")


def micropython():
    return os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one(mp, emu, cs, mode, idle_ms):
    cfg = {"cs": cs, "root": emu.root_der_file, "port": emu.port, "mode": mode, "idle_ms": idle_ms}
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware") + ":.frozen")
    before = child_cpu()
    proc = subprocess.run(
        [mp, "-c", DEVICE % (cfg,)], capture_output=True, text=True, env=env, timeout=120
    )
    cpu = child_cpu() - before
    if proc.returncode != 0:
        raise SystemExit("device run failed (%s):\n%s%s" % (mode, proc.stdout, proc.stderr))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["mode"] == mode and out["pid"] == 1, out
    return cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=float, default=3.0, help="idle seconds (default 3)")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode and idle (median)")
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--json", default=None, help="also write the figures as JSON to this file")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    state = tempfile.mkdtemp(prefix="iothub-bench-")
    pki = TestPKI.load_or_create(state)
    idle_ms = int(args.idle * 1000)
    res = {}
    with Emulator(state, profile="ecc", pki=pki) as emu:
        emu.add_device("wait-bench")
        cs = emu.connection_string("wait-bench", gateway=False)
        for mode in MODES:
            base = statistics.median(one(args.mp, emu, cs, mode, 0) for _ in range(args.runs))
            idle = statistics.median(one(args.mp, emu, cs, mode, idle_ms) for _ in range(args.runs))
            res[mode] = {
                "base_s": base,
                "idle_s": idle,
                "per_idle_s_ms": (idle - base) * 1000 / args.idle,
            }
    raw, tls = res["raw"], res["tls"]
    print(
        "idle iothub.aio client, MicroPython unix port (%s), ECC hub on loopback, %.1f s idle, "
        "median of %d runs" % (args.mp, args.idle, args.runs)
    )
    for name, key, scale, fmt in (
        ("device CPU ms, connect + send, no idle", "base_s", 1000, "%12.0f"),
        ("device CPU ms, the same with the idle", "idle_s", 1000, "%12.0f"),
        ("added CPU ms per idle second", "per_idle_s_ms", 1, "%12.1f"),
    ):
        print(("%-44s " + fmt + " " + fmt) % (name, raw[key] * scale, tls[key] * scale))
    print(
        "TLS socket minus raw socket, per idle second: %.1f ms"
        % (tls["per_idle_s_ms"] - raw["per_idle_s_ms"])
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res))
    if args.figures:
        figures.write_block(
            args.figures, "aio-wait", markdown(raw, tls, args), figures.source_line()
        )


def markdown(raw, tls, args):
    rows = [
        [
            "device CPU, connect + one send + disconnect",
            "%.0f ms" % (raw["base_s"] * 1000),
            "%.0f ms" % (tls["base_s"] * 1000),
        ],
        [
            "the same with %.1f s idle in between" % args.idle,
            "%.0f ms" % (raw["idle_s"] * 1000),
            "%.0f ms" % (tls["idle_s"] * 1000),
        ],
        [
            "added CPU per idle second",
            "%.1f ms" % raw["per_idle_s_ms"],
            "%.1f ms" % tls["per_idle_s_ms"],
        ],
    ]
    return figures.table(
        ["idle `iothub.aio` client, reader waiting on", "raw TCP socket (ours)", "TLS socket"],
        rows,
    ) + (
        "\nUnix port, ECC hub on loopback, median of %d runs per cell; the added CPU is the "
        "difference of two medians, so a few ms of process-start noise stay in it.\n" % args.runs
    )


if __name__ == "__main__":
    main()
