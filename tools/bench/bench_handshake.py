"""TLS handshake cost, RSA hub vs ECC hub, with Azure-like certificate chains.

The device side is the real MicroPython unix port (iothub.tls_context); the hub is the
emulator's TLS endpoint, which counts every byte and TLS record on the wire. For each
profile it runs N full handshakes (no session resumption) in one device process and prints:
bytes and records in each direction, the chain the hub sent, and wall time (median of N:
on the device, around wrap_socket; on the hub, from accept to its Finished).

    .venv/bin/python tools/bench/bench_handshake.py [-n 15] [--mtls] [--mp /path/to/micropython]
        [--figures docs/figures.md]      # also write the README's block "handshake"

Not a test: it prints what this run measured. The IoT Hub docs say ECC server certificates
use up to 40% less compute, memory and bandwidth; the target here is ECC bytes <= 0.6 x RSA.
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

from iothub_emulator import tlsrecords  # noqa: E402
from iothub_emulator.pki import TestPKI  # noqa: E402
from iothub_emulator.tlsserver import TLSEndpoint  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

DEVICE = """
import json, socket, time, iothub
def rd(p):
    with open(p, 'rb') as f:
        return f.read()
cfg = %r
kw = {'roots': [rd(cfg['root'])]}
if cfg.get('cert'):
    kw['cert'] = rd(cfg['cert']); kw['key'] = rd(cfg['key'])
ctx = iothub.tls_context(cfg['profile'], **kw)
addr = socket.getaddrinfo('127.0.0.1', cfg['port'])[0][-1]
times = []
cipher = None
for i in range(cfg['n']):
    s = socket.socket()
    s.settimeout(20)
    s.connect(addr)
    t0 = time.ticks_us()
    t = ctx.wrap_socket(s, server_hostname=cfg['host'])
    times.append(time.ticks_diff(time.ticks_us(), t0) / 1000)
    cipher = t.cipher()[0]
    t.close()
print(json.dumps({'ms': times, 'cipher': cipher}))
"""


def micropython():
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    return str(ROOT / ".venv" / "bin" / "micropython")


def measure(pki, profile, n, binary, client=None):
    ep = TLSEndpoint(pki, profile, name="bench-" + profile).start()
    try:
        cfg = {
            "profile": profile,
            "port": ep.port,
            "host": ep.hostname,
            "root": pki.root_der_path(profile),
            "n": n,
        }
        if client:
            cfg["cert"], cfg["key"] = client
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        proc = subprocess.run(
            [binary, "-c", DEVICE % (cfg,)], capture_output=True, text=True, timeout=300, env=env
        )
        if proc.returncode != 0:
            raise SystemExit("device run failed (%s):\n%s%s" % (profile, proc.stdout, proc.stderr))
        dev = json.loads(proc.stdout.strip().splitlines()[-1])
        infos = [ep.wait_connection(i) for i in range(n)]
    finally:
        ep.stop()
    bad = [i for i in infos if not i.ok]
    if bad:
        raise SystemExit("handshake failed on the hub: %r" % bad[0])

    def med(values):
        return statistics.median(values)

    msgs = {}  # plaintext handshake message sizes of the hub's first flight
    for mtype, body in tlsrecords.handshake_messages(infos[0]._out.records):
        msgs[mtype] = msgs.get(mtype, 0) + 4 + len(body)

    return {
        "cipher": dev["cipher"],
        "group": infos[0].group,
        "bytes_in": med([i.handshake_bytes_in for i in infos]),
        "bytes_out": med([i.handshake_bytes_out for i in infos]),
        "records_in": med([i.handshake_records_in for i in infos]),
        "records_out": med([i.handshake_records_out for i in infos]),
        "device_ms": med(dev["ms"]),
        "hub_ms": med([i.handshake_seconds * 1000 for i in infos]),
        "chain": pki.sizes()[profile]["chain_sent"],
        "certificate_msg": msgs.get(11, 0),
        "ske_msg": msgs.get(12, 0),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=15, help="handshakes per profile (default 15)")
    ap.add_argument("--mtls", action="store_true", help="with an EC P-256 client certificate")
    ap.add_argument("--mp", default=micropython(), help="MicroPython binary ($MICROPYTHON)")
    ap.add_argument("--state", default=None, help="PKI state directory (default: temporary)")
    figures.add_figures_arg(ap)
    args = ap.parse_args(argv)
    state = args.state or tempfile.mkdtemp(prefix="iothub-bench-")
    pki = TestPKI.load_or_create(state)
    client = None
    if args.mtls:
        cert, key, _, _ = pki.issue_client_cert("bench-device", "ec256")
        client = (os.path.join(state, "bench-cert.pem"), os.path.join(state, "bench-key.pem"))
        pathlib.Path(client[0]).write_bytes(cert)
        pathlib.Path(client[1]).write_bytes(key)

    res = {p: measure(pki, p, args.n, args.mp, client) for p in ("rsa", "ecc")}
    rsa, ecc = res["rsa"], res["ecc"]
    rows = [
        ("suite", rsa["cipher"], ecc["cipher"], None),
        ("ECDHE group", rsa["group"], ecc["group"], None),
        ("chain sent by hub (DER B)", rsa["chain"], ecc["chain"], None),
        ("  Certificate message (B)", rsa["certificate_msg"], ecc["certificate_msg"], None),
        ("  ServerKeyExchange message (B)", rsa["ske_msg"], ecc["ske_msg"], None),
        ("bytes device -> hub", rsa["bytes_in"], ecc["bytes_in"], None),
        ("bytes hub -> device", rsa["bytes_out"], ecc["bytes_out"], None),
        (
            "bytes total",
            rsa["bytes_in"] + rsa["bytes_out"],
            ecc["bytes_in"] + ecc["bytes_out"],
            None,
        ),
        ("records device -> hub", rsa["records_in"], ecc["records_in"], None),
        ("records hub -> device", rsa["records_out"], ecc["records_out"], None),
        ("device wrap_socket ms (median)", rsa["device_ms"], ecc["device_ms"], None),
        ("hub handshake ms (median)", rsa["hub_ms"], ecc["hub_ms"], None),
    ]
    print(
        "TLS 1.2 full handshake, MicroPython unix port (%s) -> emulator hub, n=%d%s"
        % (args.mp, args.n, ", mutual TLS (EC P-256)" if args.mtls else "")
    )
    print("%-32s %39s %41s %8s" % ("", "RSA hub", "ECC hub", "ECC/RSA"))
    for name, a, b, _ in rows:
        if isinstance(a, str):
            print("%-32s %39s %41s %8s" % (name, a, b, ""))
        else:
            fmt = "%39.1f %41.1f" if isinstance(a, float) else "%39d %41d"
            print(("%-32s " + fmt + " %8.2f") % (name, a, b, b / a if a else 0))
    total = (ecc["bytes_in"] + ecc["bytes_out"]) / (rsa["bytes_in"] + rsa["bytes_out"])
    print(
        "ECC/RSA handshake bytes %.2f (target <= 0.60): %s"
        % (total, "met" if total <= 0.6 else "not met")
    )
    if args.figures:
        name = "handshake-mtls" if args.mtls else "handshake"
        figures.write_block(args.figures, name, markdown(rsa, ecc, args), figures.source_line())


def markdown(rsa, ecc, args):
    """The README's handshake table (block "handshake") from this run's figures."""

    def tot(r):
        return r["bytes_in"] + r["bytes_out"]

    def ratio(a, b):
        return "%.2f" % (b / a) if a else "-"

    rows = [
        ("chain the hub sends (DER)", "%d B" % rsa["chain"], "%d B" % ecc["chain"]),
        ("bytes device → hub", "%d" % rsa["bytes_in"], "%d" % ecc["bytes_in"]),
        ("bytes hub → device", "%d" % rsa["bytes_out"], "%d" % ecc["bytes_out"]),
        ("**handshake bytes, total**", "**%d**" % tot(rsa), "**%d**" % tot(ecc)),
    ]
    nums = [
        (rsa["chain"], ecc["chain"]),
        (rsa["bytes_in"], ecc["bytes_in"]),
        (rsa["bytes_out"], ecc["bytes_out"]),
        (tot(rsa), tot(ecc)),
    ]
    cells = [r + (ratio(*n),) for r, n in zip(rows, nums, strict=True)]
    cells[-1] = cells[-1][:3] + ("**%s**" % cells[-1][3],)
    cells.append(
        (
            "TLS records (each direction)",
            "%d / %d" % (rsa["records_in"], rsa["records_out"]),
            "%d / %d" % (ecc["records_in"], ecc["records_out"]),
            ratio(rsa["records_in"] + rsa["records_out"], ecc["records_in"] + ecc["records_out"]),
        )
    )
    cells.append(
        (
            "handshake time on the device (median of %d)" % args.n,
            "%.1f ms" % rsa["device_ms"],
            "%.1f ms" % ecc["device_ms"],
            ratio(rsa["device_ms"], ecc["device_ms"]),
        )
    )
    share = tot(ecc) / tot(rsa)
    return figures.table(["", "RSA hub", "ECC hub", "ECC/RSA"], cells) + (
        "\nECC needs **%.2f** of RSA's handshake bytes (%d %% fewer); the target of 0.6 is %s.\n"
        % (share, round((1 - share) * 100), "met" if share <= 0.6 else "**not** met")
    )


if __name__ == "__main__":
    main()
