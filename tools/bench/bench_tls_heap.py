"""mbedTLS heap per TLS connection, and record sizes on the wire, for firmware builds.

Runs tools/bench/device_tls_probe.py on one or more MicroPython unix builds against the
emulator's hub TLS endpoint (OpenSSL: honours max_fragment_length) with the Azure-like ECC
and RSA chains, and prints one table: requested MFL, biggest record the hub sent, mbedTLS
heap after the handshake and its peak. Heap figures need a build with tlsx.heap_stats()
(boards/unix-iothub built with IOTHUB_TLSX_HEAP_STATS=1); other builds show "-".

    .venv/bin/python tools/bench/bench_tls_heap.py --mp ecc=/path/micropython --mp stock=/path/micropython
        [--figures docs/figures.md]   # block "tls-heap", written only when every build has
                                      # heap stats (stock builds have none)

Without --mp it measures $MICROPYTHON (or the venv's unix port). Not a test: it prints figures
measured in this run. host_tests/test_firmware_mfl.py reuses the helpers below.
"""

import argparse
import hashlib
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

from iothub_emulator import pki as pki_mod  # noqa: E402
from iothub_emulator import tlsrecords  # noqa: E402
from iothub_emulator.tlsserver import TLSEndpoint  # noqa: E402

try:
    from . import figures
except ImportError:  # run as a script
    import figures

PROBE = HERE / "device_tls_probe.py"
PAYLOAD_SEED = b"iothub-mfl-probe"
# Per-record expansion of a protected TLS 1.2 record over its plaintext (RFC 5246 6.2.3,
# RFC 5288): AES-GCM adds an 8-byte explicit nonce and a 16-byte tag; AES-CBC-SHA384 adds a
# 16-byte IV, a 48-byte MAC and 1-16 bytes of padding.
OVERHEAD_GCM = 8 + 16
OVERHEAD_CBC_SHA384 = 16 + 48 + 16


def record_overhead(cipher_name):
    return OVERHEAD_GCM if cipher_name and "GCM" in cipher_name else OVERHEAD_CBC_SHA384


def payload(n):
    """Deterministic, incompressible-looking bytes (so the test checks what arrived)."""
    out = bytearray()
    block = PAYLOAD_SEED
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def default_binary():
    return os.environ.get("MICROPYTHON") or shutil.which(
        "micropython", path=str(ROOT / ".venv/bin")
    )


def _read_request(recv, timeout=20.0):
    """Read "GET <n>\\n" with `recv(timeout)`; returns n or None."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        data = recv(left)
        if not data:
            return None
        buf += data
    line = buf.split(b"\n", 1)[0]
    if not line.startswith(b"GET "):
        return None
    return int(line[4:])


def openssl_hub(pki, profile):
    """The emulator's hub endpoint (OpenSSL honours MFL); serves `payload(n)` per request."""

    def handler(conn):
        n = _read_request(lambda left: conn.recv(65536, timeout=left))
        if n is None:
            return
        conn.sendall(payload(n))
        conn.recv(65536, timeout=20.0)  # wait for the client to close (bounded)

    return TLSEndpoint(pki, profile, handler=handler, request_client_cert=False).start()


class _CountingSocket:
    """A socket that feeds every byte it sends to a RecordCounter (socket attributes are
    read-only, so wrap instead of patching)."""

    def __init__(self, sock, counter):
        self._sock = sock
        self._counter = counter

    def send(self, data, *a):
        n = self._sock.send(data, *a)
        self._counter.feed(bytes(data[:n]))
        return n

    def sendall(self, data, *a):
        self._counter.feed(bytes(data))
        return self._sock.sendall(data, *a)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class IgnoringHub:
    """A TLS 1.2 server that ignores max_fragment_length (tlslite-ng does not implement
    RFC 6066 section 4, so it skips the extension) and sends 16 KB records, as big cloud
    endpoints are reported to do. Records what it sent."""

    def __init__(self, pki, profile):
        from tlslite.api import HandshakeSettings, X509CertChain, parsePEMKey

        chain_path, key_path = pki.server_credentials(profile)
        self._chain = X509CertChain()
        self._chain.parsePemList(pathlib.Path(chain_path).read_text())
        self._key = parsePEMKey(pathlib.Path(key_path).read_text(), private=True)
        self._settings = HandshakeSettings()
        self._settings.minVersion = (3, 3)
        self._settings.maxVersion = (3, 3)
        self.hostname = pki.hub_hostname
        self.errors = []
        self.sent_records = []
        self._lsock = socket.socket()
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(4)
        self._lsock.settimeout(0.2)
        self.port = self._lsock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                sock, _ = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        from tlslite.api import TLSConnection

        sock.settimeout(20.0)
        counter = tlsrecords.RecordCounter(keep=64)
        wire = _CountingSocket(sock, counter)
        try:
            conn = TLSConnection(wire)
            conn.handshakeServer(
                certChain=self._chain, privateKey=self._key, settings=self._settings
            )
            n = _read_request(lambda left: conn.recv(65536))
            if n is not None:
                conn.write(payload(n))
                conn.recv(65536)
        except Exception as e:  # the client is expected to fail; record, don't raise
            self.errors.append(repr(e))
        finally:
            self.sent_records.append(list(counter.sizes))
            try:
                sock.close()
            except OSError:
                pass

    def stop(self):
        self._stop.set()
        self._lsock.close()
        self._thread.join(5)


def run_probe(binary, port, hostname, root_der_path, mfl=-1, nbytes=12000, timeout=60):
    """Run the device probe on `binary`; returns its JSON result (dict)."""
    proc = subprocess.run(
        [
            binary,
            str(PROBE),
            "127.0.0.1",
            str(port),
            hostname,
            str(root_der_path),
            str(mfl),
            str(nbytes),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(
            "probe printed no result (exit %d)\nstdout: %s\nstderr: %s"
            % (proc.returncode, proc.stdout, proc.stderr)
        )
    return json.loads(lines[-1])


def has_tlsx(binary):
    try:
        proc = subprocess.run(
            [binary, "-c", "import tlsx; print(tlsx.IN_CONTENT_LEN)"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def measure(binary, pki, profile, mfl=-1, nbytes=12000):
    """One connection to the OpenSSL hub; returns (probe result, ConnInfo)."""
    ep = openssl_hub(pki, profile)
    try:
        res = run_probe(binary, ep.port, ep.hostname, pki.root_der_path(profile), mfl, nbytes)
        if res["stage"] in ("context", "connect"):
            raise RuntimeError("probe failed before the handshake: %s" % res["error"])
        info = ep.wait_connection(0, timeout=20.0)
        info.closed.wait(20.0)
        return res, info
    finally:
        ep.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mp", action="append", default=[], help="NAME=PATH of a micropython binary")
    ap.add_argument("--mfl", type=int, default=-1, help="-1: firmware default; 0: none; or size")
    ap.add_argument("--bytes", type=int, default=12000, help="application data read per connection")
    ap.add_argument("--state", default=None, help="PKI state dir (default: a temporary one)")
    figures.add_figures_arg(ap)
    ap.add_argument(
        "--phases",
        action="store_true",
        help="also print mbedTLS heap per handshake phase (builds with tlsx.heap_phases)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="also time N handshakes per build and chain (median; builds interleaved; "
        "ratio against the first --mp)",
    )
    args = ap.parse_args(argv)
    builds = [b.split("=", 1) for b in args.mp] or [["default", default_binary()]]
    state = args.state or tempfile.mkdtemp(prefix="iothub-bench-")
    pki = pki_mod.TestPKI.load_or_create(state)
    sizes = pki.sizes()
    print("chains sent by the hub (DER bytes, leaf + intermediate):", end="")
    for profile in ("ecc", "rsa"):
        print(" %s %d" % (profile, sizes[profile]["chain_sent"]), end="")
    print()
    head = "%-10s %-5s %-11s %-6s %-11s %-10s %-10s %s" % (
        "build",
        "chain",
        "IN/OUT",
        "MFL",
        "hub rec max",
        "after hs",
        "peak",
        "result",
    )
    print(head)
    print("-" * len(head))
    table = []
    phase_rows = []
    for name, binary in builds:
        cells = [name, None, None]
        for profile in ("ecc", "rsa"):
            res, info = measure(binary, pki, profile, args.mfl, args.bytes)
            heap = res.get("heap") or {}
            if heap.get("phases"):
                phase_rows.append((name, profile, heap))
            bufs = "%s/%s" % (
                res.get("in_content_len", "16384?"),
                res.get("out_content_len", "4096?"),
            )
            ok = (
                res["error"] is None
                and res.get("sha256") == hashlib.sha256(payload(args.bytes)).hexdigest()
            )
            print(
                "%-10s %-5s %-11s %-6s %-11s %-10s %-10s %s"
                % (
                    name,
                    profile,
                    bufs,
                    res.get("requested_mfl") or "-",
                    info.max_record_out,
                    heap.get("after_handshake", "-"),
                    heap.get("peak", "-"),
                    "ok" if ok else "FAIL at %s: %s" % (res["stage"], res["error"]),
                )
            )
            cells[1] = bufs
            cells[2] = res.get("requested_mfl") or "none"
            if not ok:
                cells.append("handshake fails" if res["stage"] == "handshake" else "fails")
            elif not heap:
                cells.append(None)
            else:
                cells.append("%s / %s" % (heap["after_handshake"], heap["peak"]))
        table.append(cells)
    if args.figures:
        if any(None in row for row in table):
            print("figures: not written (a build without tlsx.heap_stats(): no heap figures)")
        else:
            md = figures.table(
                ["build", "IN/OUT", "MFL", "ECC chain (P-384)", "RSA chain (RSA-2048 leaf)"], table
            )
            figures.write_block(args.figures, "tls-heap", md, figures.source_line())
    if args.phases:
        for name, profile, heap in phase_rows:
            print_phases(name, profile, heap)
    if args.repeat > 0:
        print_times(builds, pki, args.repeat, args.mfl)
    return 0


def print_times(builds, pki, n, mfl):
    """Median handshake time (device side, around wrap_socket) per build and chain over n
    runs, the builds taking turns so that load on the machine hits them alike."""
    times = {(name, p): [] for name, _ in builds for p in ("ecc", "rsa")}
    for _ in range(n):
        for profile in ("ecc", "rsa"):
            for name, binary in builds:
                res, _info = measure(binary, pki, profile, mfl, 64)
                if res["error"] is None:
                    times[(name, profile)].append(res["handshake_us"] / 1000.0)
    print()
    print("handshake time, median of %d (ms; ratio against %s)" % (n, builds[0][0]))
    head = "%-12s %-16s %s" % ("build", "ECC chain", "RSA chain")
    print(head)
    print("-" * len(head))
    base = {p: statistics.median(times[(builds[0][0], p)] or [0]) for p in ("ecc", "rsa")}
    for name, _ in builds:
        cells = []
        for p in ("ecc", "rsa"):
            t = times[(name, p)]
            if not t:
                cells.append("failed")
                continue
            med = statistics.median(t)
            cells.append("%.1f (x%.2f)" % (med, med / base[p] if base[p] else 0))
        print("%-12s %-16s %s" % (name, cells[0], cells[1]))


def phase_table(heap):
    """Rows (phase, held before, peak in phase, rise over held before, held after) of the
    phases in which mbedTLS's heap moved; the first row is the context (CA certificate)."""
    rows = [
        (
            "context (CA certificate)",
            0,
            heap["context_peak"],
            heap["context_peak"],
            heap["context_held"],
        )
    ]
    held = heap["context_held"]
    for phase, peak, end in heap["phases"]:
        if peak == held and end == held:
            continue
        label = "setup (record buffers, handshake state)" if phase == "start" else phase
        rows.append((label, held, peak, peak - held, end))
        held = end
    return rows


def print_phases(name, profile, heap):
    """One table per build and chain: where the handshake's heap goes, phase by phase."""
    print()
    print("%s, %s chain: mbedTLS heap per handshake phase (bytes)" % (name, profile))
    head = "%-42s %-8s %-8s %-8s %s" % ("phase", "before", "peak", "rise", "after")
    print(head)
    print("-" * len(head))
    for label, before, peak, rise, after in phase_table(heap):
        print("%-42s %-8d %-8d %-8d %d" % (label, before, peak, rise, after))


if __name__ == "__main__":
    sys.exit(main())
