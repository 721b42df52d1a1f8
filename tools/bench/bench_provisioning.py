"""Cost of zero-touch provisioning: bytes and time of one DPS registration round, and the
heap the provisioning module uses on the MicroPython unix port.

The device is the real unix port running iothub.provisioning; DPS is the emulator's
(tools/iothub_emulator/dps.py), whose TLS endpoint counts every byte and record on the wire.
A round is: TCP + TLS handshake, CONNECT/CONNACK, SUBSCRIBE/SUBACK, register -> 202,
status query -> 200 assigned, DISCONNECT. The emulator answers retry-after=0 here, so the
time is the protocol's own cost; a real DPS asks for a few seconds between the register
and the query (retry-after 3 in Microsoft's example), which adds to the wall time only.

Heap figures are gc.mem_alloc() differences on the unix port (GC heap only: on unix,
mbedTLS allocates with malloc, outside the GC heap; on rp2 its buffers come from the GC heap
too, see docs/protocol.md section 6):
  import        retained after `from iothub.provisioning import ...` (gc.collect()ed)
  client        retained by one ProvisioningClient
  register      allocated during one register() with the GC disabled (all garbage included)
  retained      still held after register() returned and gc.collect(): the first time, the
                link modules register() loads (session, mqtt, transport, tlsprofile; a device
                that also uses DeviceClient has them anyway), then the result object

    .venv/bin/python tools/bench/bench_provisioning.py [-n 5] [--json] [--mp /path/to/micropython]
        [--figures docs/figures.md]      # also write the README's block "provisioning"

Not a test: it prints what this run measured.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import Emulator  # noqa: E402
from iothub_emulator.dps import DPSEmulator  # noqa: E402
from iothub_emulator.files import write_private  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

DEVICE = """
import gc, json, time
cfg = %r
def rd(p):
    with open(p, 'rb') as f:
        return f.read()
root = rd(cfg['root'])
cred = {}
if cfg.get('cert'):
    cred = {'cert': rd(cfg['cert']), 'key': rd(cfg['key'])}
else:
    cred = {'group_key': cfg['group_key']}
gc.collect(); m0 = gc.mem_alloc()
from iothub.provisioning import ProvisioningClient
gc.collect(); m1 = gc.mem_alloc()
out = {'import': m1 - m0, 'ms': [], 'register': [], 'retained': []}
for i in range(cfg['n']):
    gc.collect(); a = gc.mem_alloc()
    pc = ProvisioningClient(cfg['scope'], cfg['reg'], host='127.0.0.1', port=cfg['port'],
                            tls=cfg['profile'], roots=[root], min_retry_s=0, **cred)
    gc.collect(); b = gc.mem_alloc()
    gc.disable()
    t0 = time.ticks_ms()
    r = pc.register()
    dt = time.ticks_diff(time.ticks_ms(), t0)
    c = gc.mem_alloc()
    gc.enable(); gc.collect()
    out['client'] = b - a
    out['ms'].append(dt)
    out['register'].append(c - b)
    out['retained'].append(gc.mem_alloc() - b)
    out['hub'] = r.assigned_hub
    del r, pc
print(json.dumps(out))
"""

IMPORTS = """
import gc, json
gc.collect(); m0 = gc.mem_alloc()
import iothub
from iothub.client import DeviceClient
gc.collect(); m1 = gc.mem_alloc()
from iothub.provisioning import ProvisioningClient
gc.collect(); m2 = gc.mem_alloc()
print(json.dumps({'client': m1 - m0, 'provisioning_after_client': m2 - m1}))
"""


IMPORT_ALONE = """
import gc, json
gc.collect(); m0 = gc.mem_alloc()
from iothub.provisioning import ProvisioningClient
gc.collect(); print(json.dumps({'provisioning': gc.mem_alloc() - m0}))
"""


def micropython():
    return os.environ.get("MICROPYTHON") or str(ROOT / ".venv" / "bin" / "micropython")


def run_device(binary, code, timeout=300, path=None):
    env = dict(os.environ, MICROPYPATH=str(path or ROOT / "firmware"))
    proc = subprocess.run(
        [binary, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
    if proc.returncode != 0:
        raise SystemExit("device failed:\n%s\n%s" % (proc.stdout, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(state, pki, profile, auth, n, binary):
    hub = Emulator(state, profile=profile, pki=pki).start()
    dps = DPSEmulator(state, hub, retry_after=0).start()
    try:
        root = pathlib.Path(state) / ("root-%s.der" % profile)
        root.write_bytes(dps.root_der)
        reg = "bench-%s-%s" % (profile, auth)
        cfg = {"scope": dps.id_scope, "reg": reg, "port": dps.port, "profile": profile}
        cfg["root"] = str(root)
        cfg["n"] = n
        if auth == "x509":
            cert, key, _, sha256 = pki.issue_client_cert(reg, kind="ec256")
            (pathlib.Path(state) / "c.pem").write_bytes(cert)
            write_private(str(pathlib.Path(state) / "k.pem"), key)
            cfg["cert"], cfg["key"] = (
                str(pathlib.Path(state) / "c.pem"),
                str(pathlib.Path(state) / "k.pem"),
            )
            dps.add_enrollment(reg, x509_thumbprint=sha256)
        else:
            cfg["group_key"] = dps.add_group("bench-group")
        dev = run_device(binary, DEVICE % (cfg,))
        conns = [c for c in dps.connections if c.ok]
        for c in conns:
            c.closed.wait(5)
        return dev, conns
    finally:
        dps.stop()
        hub.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5, help="registrations per case (default 5)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--mp", default=micropython(), help="MicroPython unix binary")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)

    from iothub_emulator.pki import TestPKI

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dps-") as tmp:
        pki = TestPKI.load_or_create(os.path.join(tmp, "pki-state"))
        for profile in ("ecc", "rsa"):
            for auth in ("sas-group", "x509"):
                state = os.path.join(tmp, "%s-%s" % (profile, auth))
                dev, conns = measure(state, pki, profile, auth, args.n, args.mp)
                med = lambda xs: statistics.median(xs)  # noqa: E731
                rows.append(
                    {
                        "profile": profile,
                        "auth": auth,
                        "rounds": len(conns),
                        "bytes_out": med([c.bytes_in for c in conns]),  # device -> DPS
                        "bytes_in": med([c.bytes_out for c in conns]),  # DPS -> device
                        "handshake_out": med([c.handshake_bytes_in for c in conns]),
                        "handshake_in": med([c.handshake_bytes_out for c in conns]),
                        "records_out": med([c.records_in for c in conns]),
                        "records_in": med([c.records_out for c in conns]),
                        "ms_median": med(dev["ms"]),
                        "ms_min": min(dev["ms"]),
                        "heap_import": dev["import"],
                        "heap_client": dev["client"],
                        "heap_register_alloc": med(dev["register"]),
                        "heap_retained_first": dev["retained"][0],
                        "heap_retained": med(dev["retained"][1:] or dev["retained"]),
                    }
                )
        imports = {"py": run_device(args.mp, IMPORTS)}
        try:
            from iothub_tool.mpy import compile_package

            compile_package(os.path.join(tmp, "mpy"))
            imports["mpy"] = run_device(args.mp, IMPORTS, path=os.path.join(tmp, "mpy"))
            imports["mpy_alone"] = run_device(args.mp, IMPORT_ALONE, path=os.path.join(tmp, "mpy"))
        except Exception as e:  # mpy-cross missing or too old for this firmware
            print("(no .mpy figures: %s)" % (e,), file=sys.stderr)
    if args.json:
        print(json.dumps({"rounds": rows, "imports": imports}, indent=1))
        return 0
    print("DPS registration round on the unix port (median of %d; device view of bytes)" % args.n)
    hdr = "%-4s %-9s %9s %9s %11s %11s %8s %8s %7s" % (
        "tls",
        "auth",
        "out B",
        "in B",
        "hs out/in",
        "mqtt out/in",
        "rec o/i",
        "ms",
        "",
    )
    print(hdr)
    for r in rows:
        print(
            "%-4s %-9s %9d %9d %5d/%-5d %5d/%-5d %4d/%-3d %8.0f"
            % (
                r["profile"],
                r["auth"],
                r["bytes_out"],
                r["bytes_in"],
                r["handshake_out"],
                r["handshake_in"],
                r["bytes_out"] - r["handshake_out"],
                r["bytes_in"] - r["handshake_in"],
                r["records_out"],
                r["records_in"],
                r["ms_median"],
            )
        )
    r = rows[0]
    py, mpy = imports["py"], imports.get("mpy")
    print()
    print("Heap (GC heap, bytes, unix port x86-64)        from .py   from .mpy")
    print(
        "  import iothub.provisioning (alone)          %6d    %6s"
        % (r["heap_import"], mpy and imports["mpy_alone"]["provisioning"])
    )
    print(
        "  import it after iothub.client is loaded     %6d    %6s"
        % (py["provisioning_after_client"], mpy and mpy["provisioning_after_client"])
    )
    print(
        "  (for scale: import iothub.client            %6d    %6s)"
        % (py["client"], mpy and mpy["client"])
    )
    print("  one ProvisioningClient                      %6d" % r["heap_client"])
    for r in rows:
        print(
            "  register() %s/%-9s allocated %6d; retained: first %5d (link modules loaded), "
            "then %d"
            % (
                r["profile"],
                r["auth"],
                r["heap_register_alloc"],
                r["heap_retained_first"],
                r["heap_retained"],
            )
        )
    if args.figures:
        figures.write_block(
            args.figures, "provisioning", markdown(rows, imports, args), figures.source_line()
        )
    return 0


def _kb(n):
    return "%.1f KB" % (n / 1000)


def markdown(rows, imports, args):
    """The README's DPS tables (block "provisioning"): wire and time per round, then heap."""
    names = {"ecc": "ECC", "rsa": "RSA", "sas-group": "SAS (group-derived key)"}
    names["x509"] = "X.509 (EC P-256)"
    wire = []
    for r in rows:
        wire.append(
            (
                names[r["profile"]],
                names[r["auth"]],
                "%d B" % r["bytes_out"],
                "%d B" % r["bytes_in"],
                "%d / %d B" % (r["handshake_out"], r["handshake_in"]),
                "%d / %d B"
                % (r["bytes_out"] - r["handshake_out"], r["bytes_in"] - r["handshake_in"]),
                "%d / %d" % (r["records_out"], r["records_in"]),
                "%.0f ms" % r["ms_median"],
            )
        )
    header = ["DPS TLS", "credential", "device → DPS", "DPS → device", "of which TLS handshake"]
    header += ["MQTT payload and framing out / in", "TLS records out / in", "time"]
    out = "Median of %d rounds:\n\n" % args.n + figures.table(header, wire)
    py, mpy = imports["py"], imports.get("mpy")
    by = {(r["profile"], r["auth"]): r for r in rows}
    sas, x509 = by[("ecc", "sas-group")], by[("ecc", "x509")]
    heap = [
        (
            "`from iothub.provisioning import ProvisioningClient` (fresh)",
            _kb(sas["heap_import"]),
            _kb(imports["mpy_alone"]["provisioning"]) if mpy else "-",
        ),
        (
            "the same when `iothub.client` is already loaded",
            _kb(py["provisioning_after_client"]),
            _kb(mpy["provisioning_after_client"]) if mpy else "-",
        ),
        (
            "(for scale: `from iothub.client import DeviceClient`)",
            _kb(py["client"]),
            _kb(mpy["client"]) if mpy else "-",
        ),
        ("one `ProvisioningClient`", _kb(sas["heap_client"]), ""),
        (
            "allocated during one `register()` (GC disabled, garbage included)",
            "%s (SAS), %s (X.509)"
            % (_kb(sas["heap_register_alloc"]), _kb(x509["heap_register_alloc"])),
            "",
        ),
        (
            "retained after the first `register()` (the link modules it loads: session, mqtt, "
            "transport, tlsprofile; a device using `DeviceClient` has them anyway)",
            "%s (SAS), %s (X.509)"
            % (_kb(sas["heap_retained_first"]), _kb(x509["heap_retained_first"])),
            "",
        ),
        ("retained per later `register()` (the result)", _kb(sas["heap_retained"]), ""),
    ]
    out += (
        "\nHeap (GC heap, `gc.mem_alloc()` deltas, 1 KB = 1000 B, unix port x86-64, ECC DPS; "
        "a 32-bit board needs roughly half; mbedTLS buffers are outside the GC heap on unix):\n\n"
    )
    return out + figures.table(["", "from .py", "from .mpy"], heap)


if __name__ == "__main__":
    sys.exit(main())
