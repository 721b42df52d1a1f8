"""Plug and Play figures: what iothub.pnp costs a device, measured in one run on the unix port.

1. GC heap retained by `import iothub.pnp` next to `import iothub.client` (the baseline every
   application pays), as source (.py) and precompiled (.mpy); and the check that a client alone
   does not load it (it is imported on the first PnP call).
2. Garbage per call of the helpers next to their plain counterparts: a component telemetry
   topic ($.sub appended) vs the plain topic, a writable-property ack patch vs json.dumps of
   the bare value, splitting a desired patch of two components, splitting a command name.

    .venv/bin/python tools/bench/bench_pnp.py [--n 100] [--json out.json]
        [--figures docs/figures.md]      # also write the README's block "pnp"
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from iothub_tool.mpy import compile_package  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

DEVICE = HERE / "device_pnp_bench.py"


def micropython():
    return os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")


def run_device(binary, pkg_dir, n):
    code = "CFG = %r\n" % ({"n": n},) + DEVICE.read_text()
    proc = subprocess.run(
        [binary, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MICROPYPATH="%s:.frozen" % pkg_dir),
    )
    if proc.returncode != 0:
        raise SystemExit("device bench failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(py, mpy):
    """The README's block "pnp": heap retained by the imports, garbage per PnP call."""
    g, gm = py["garbage"], mpy["garbage"]

    def b(v):
        return "%d B" % round(v)

    rows = [
        [
            "GC heap retained by `import iothub.client` (+ deps), the baseline",
            b(py["client_import"]),
            b(mpy["client_import"]),
        ],
        [
            "+ `import iothub.pnp` (only when PnP is used)",
            b(py["pnp_import"]),
            b(mpy["pnp_import"]),
        ],
        [
            "pnp / client",
            "%.2f" % (py["pnp_import"] / py["client_import"]),
            "%.2f" % (mpy["pnp_import"] / mpy["client_import"]),
        ],
        [
            "garbage per `telemetry_topic` (ct, ce) / + `add_component`",
            "%s / +%s" % (b(g["telemetry_topic"]), b(g["add_component"])),
            "%s / +%s" % (b(gm["telemetry_topic"]), b(gm["add_component"])),
        ],
        [
            "garbage per ack patch of one component (%d-byte JSON)" % py["ack_bytes"],
            b(g["ack_patch"]),
            b(gm["ack_patch"]),
        ],
        [
            "garbage per `writable_properties` of a two-component patch",
            b(g["writable_properties"]),
            b(gm["writable_properties"]),
        ],
    ]
    return figures.table(["", ".py", ".mpy"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--n", type=int, default=100, help="calls per garbage figure")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="iothub-bench-pnp-")
    try:
        mpy_dir = os.path.join(tmp, "mpy")
        compile_package(mpy_dir)
        res = {
            "py": run_device(args.mp, str(ROOT / "firmware"), args.n),
            "mpy": run_device(args.mp, mpy_dir, args.n),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for kind, suffix in (("py", ".py"), ("mpy", ".mpy")):
        if not str(res[kind]["file"]).endswith(suffix):
            raise SystemExit("%s run loaded %s" % (kind, res[kind]["file"]))
    py, mpy = res["py"], res["mpy"]
    p = print
    p("iothub Plug and Play figures (MicroPython unix port, %s)" % args.mp)
    p("1. GC heap retained by imports (gc.collect, gc.mem_alloc delta)")
    p("   %-52s %8s %8s" % ("", ".py", ".mpy"))
    p(
        "   %-52s %8d %8d"
        % ("import iothub.client (+ deps), the baseline", py["client_import"], mpy["client_import"])
    )
    p("   %-52s %8d %8d" % ("+ import iothub.pnp", py["pnp_import"], mpy["pnp_import"]))
    p(
        "   %-52s %8.2f %8.2f"
        % (
            "pnp / client",
            py["pnp_import"] / py["client_import"],
            mpy["pnp_import"] / mpy["client_import"],
        )
    )
    p(
        "   a client alone loads iothub.pnp: %s (it is imported on the first PnP call)"
        % ("yes" if py["pnp_loaded_by_client"] or mpy["pnp_loaded_by_client"] else "no")
    )
    p("2. Garbage per call (collector off, mean of %d calls), bytes" % args.n)
    p("   %-52s %8s %8s" % ("", ".py", ".mpy"))
    g, gm = py["garbage"], mpy["garbage"]
    for key, name in (
        ("telemetry_topic", "topics.telemetry_topic (ct, ce), the baseline"),
        ("add_component", "+ pnp.add_component(topic, 'thermostat1')"),
        ("plain_reported", "json.dumps({name: value}).encode(), the baseline"),
        ("ack_patch", "pnp.Patch().ack(..., component).encode() (%d B)" % py["ack_bytes"]),
        ("writable_properties", "pnp.writable_properties(2 components)"),
        ("split_command", "pnp.split_command('thermostat1*getMaxMinReport')"),
    ):
        p("   %-52s %8.1f %8.1f" % (name, g[key], gm[key]))
    p(
        "   ratios (.py): component topic / plain topic %.2f, ack patch / plain json %.2f"
        % (
            (g["telemetry_topic"] + g["add_component"]) / g["telemetry_topic"],
            g["ack_patch"] / g["plain_reported"],
        )
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1))
    if args.figures:
        figures.write_block(args.figures, "pnp", markdown(py, mpy), figures.source_line())
    return 1 if py["pnp_loaded_by_client"] or mpy["pnp_loaded_by_client"] else 0


if __name__ == "__main__":
    sys.exit(main())
