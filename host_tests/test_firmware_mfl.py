"""Firmware MFL checks on the wire, for a MicroPython build with the tlsx module.

Needs MICROPYTHON=<a unix build of boards/unix-iothub with USER_C_MODULES=firmware/cmodules>
(see README "Boards and firmware: Building"); skipped with the reason otherwise (CI runs the stock unix port).
The per-size MFL wire tests of the TLS profile live in test_tls_mfl.py; this file covers what
the firmware adds on its own:
  * the board default (link-time wrap) reaches contexts made by other libraries: a plain
    tls.SSLContext and micropython-lib's `ssl` wrapper send max_fragment_length in the
    ClientHello (read with tlslite-ng) and the hub's records fit it;
  * a server that ignores max_fragment_length (tlslite-ng, which does not implement it) makes
    a small-buffer build fail with mbedTLS's record-size error, never with silently cut data;
  * mbedTLS heap accounting (tlsx.heap_stats) returns to its base after a connection.
"""

import hashlib
import os

import pytest
from bench import bench_tls_heap as bench
from tlslite.messages import ClientHello, RecordHeader3
from tlslite.utils.codec import Parser

import mpyrun

MFL_CODES = {512: 1, 1024: 2, 2048: 3, 4096: 4}
EXT_MAX_FRAGMENT_LENGTH = 1
MBEDTLS_ERR_SSL_INVALID_RECORD = -0x7200
MBEDTLS_ERR_SSL_BAD_INPUT_DATA = -0x7100


@pytest.fixture(scope="module")
def firmware():
    binary = os.environ.get("MICROPYTHON")
    if not binary:
        pytest.skip("needs MICROPYTHON=<unix build of boards/unix-iothub with the tlsx module>")
    caps = mpyrun.tlsx_caps()  # a probe that crashes fails here, with its output
    if caps is None:
        pytest.skip(
            "MICROPYTHON=%s has no tlsx module (ImportError: stock firmware); needs a unix "
            "build of boards/unix-iothub" % binary
        )
    return {
        "binary": binary,
        "in": caps["in"],
        "out": caps["out"],
        "default_mfl": caps["default"],
        "heap_stats": caps["heap_stats"],
    }


def client_hello(raw):
    p = Parser(bytearray(raw))
    body = bytearray()
    while p.getRemainingLength():
        hdr = RecordHeader3().parse(p)
        assert hdr.type == 22
        body += p.getFixBytes(hdr.length)
    assert body[0] == 1, "first handshake message is not a ClientHello"
    return ClientHello().parse(Parser(body[1:]))


def mfl_extension(ch):
    ext = ch.getExtension(EXT_MAX_FRAGMENT_LENGTH)
    if ext is None:
        return None
    return bytes(ext.extData)


# Device code: connect with a context another library made (no tlsx call), read N bytes.
OTHER_LIB = """
import socket, sys, hashlib
host, port, name, root, n, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
der = open(root, "rb").read()
if how == "ssl":
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=der)
else:
    import tls
    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(der)
s = socket.socket()
s.settimeout(20)
s.connect(socket.getaddrinfo(host, port)[0][-1])
ss = ctx.wrap_socket(s, server_hostname=name)
ss.write(b"GET %d\\n" % n)
h = hashlib.sha256()
got = 0
while got < n:
    c = ss.read(n - got)
    if not c:
        break
    h.update(c)
    got += len(c)
ss.close()
print("RESULT", got, "".join("%02x" % b for b in h.digest()))
"""


@pytest.mark.needs_mfl
@pytest.mark.parametrize("how", ["tls", "ssl"])
def test_board_default_reaches_contexts_of_other_libraries(firmware, pki, tmp_path, how):
    if not firmware["default_mfl"]:
        pytest.skip("this build requests no MFL by default (stock-sized input buffer)")
    import subprocess

    script = tmp_path / "other_lib.py"
    script.write_text(OTHER_LIB)
    n = 9000
    ep = bench.openssl_hub(pki, "ecc")
    try:
        proc = subprocess.run(
            [
                firmware["binary"],
                str(script),
                "127.0.0.1",
                str(ep.port),
                ep.hostname,
                pki.root_der_path("ecc"),
                str(n),
                how,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if how == "ssl" and "ImportError" in proc.stderr:
            pytest.skip("this build has no micropython-lib `ssl` wrapper frozen in")
        info = ep.wait_connection(0, timeout=20)
        info.closed.wait(20)
    finally:
        ep.stop()
    assert "RESULT" in proc.stdout, proc.stderr
    got, digest = proc.stdout.split("RESULT", 1)[1].split()
    assert int(got) == n and digest == hashlib.sha256(bench.payload(n)).hexdigest()
    ch = client_hello(info.client_hello)
    assert mfl_extension(ch) == bytes([MFL_CODES[firmware["default_mfl"]]])
    assert info.negotiated_mfl == firmware["default_mfl"]
    limit = firmware["default_mfl"] + bench.record_overhead(info.cipher)
    assert info.max_record_out <= limit, info.record_sizes_out
    # the payload really needed several records at that size
    assert len([s for s in info.record_sizes_out if s > 256]) >= n // firmware["default_mfl"]


@pytest.mark.needs_mfl
def test_server_ignoring_mfl_fails_with_record_size_error(firmware, pki):
    if firmware["in"] >= 16384:
        pytest.skip("a stock-sized input buffer (16 KB) takes full-size records: nothing fails")
    hub = bench.IgnoringHub(pki, "ecc")
    n = 12000
    try:
        res = bench.run_probe(
            firmware["binary"], hub.port, hub.hostname, pki.root_der_path("ecc"), -1, n
        )
    finally:
        hub.stop()
    # The device asked for MFL; the server did not honour it and sent a record bigger than
    # the device's input buffer ...
    assert res["requested_mfl"] == firmware["default_mfl"] > 0
    sent = [s for rec in hub.sent_records for s in rec]
    assert max(sent) > firmware["in"], sent
    # ... and the device refused it with mbedTLS's error, never returning partial data as if
    # it were complete.
    assert res["error"] is not None, res
    assert res.get("received", 0) < n
    codes = (str(MBEDTLS_ERR_SSL_INVALID_RECORD), str(MBEDTLS_ERR_SSL_BAD_INPUT_DATA))
    assert any(c in res["error"] for c in codes), res["error"]


def test_build_without_mfl_takes_full_size_records(firmware, pki):
    """A build that requests no MFL (stock preset) must keep taking the hub's full-size records
    after the handshake: its buffers are not shrunk (mbedTLS 3.6 would shrink the input buffer
    to min(IN, OUT) when no MFL was requested, see boards/common/mbedtls_config_iothub.h)."""
    if firmware["default_mfl"]:
        pytest.skip("this build requests MFL %d by default" % firmware["default_mfl"])
    n = 12000
    res, info = bench.measure(firmware["binary"], pki, "ecc", -1, n)
    assert res["error"] is None, res
    assert res["received"] == n
    assert res["sha256"] == hashlib.sha256(bench.payload(n)).hexdigest()
    # the hub really sent records larger than OUT (the size a shrunk input buffer would get)
    assert info.max_record_out > firmware["out"], info.max_record_out


@pytest.mark.needs_mfl
def test_heap_accounting_returns_to_context_after_close(firmware, pki):
    if not firmware["heap_stats"]:
        pytest.skip("this build has no heap accounting (IOTHUB_TLSX_HEAP_STATS=1)")
    res, info = bench.measure(firmware["binary"], pki, "ecc", -1, 6000)
    assert res["error"] is None, res
    heap = res["heap"]
    mfl = firmware["default_mfl"]
    # the record buffers are held for the connection's life: at the agreed MFL once the
    # handshake is over (MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH), else at their full sizes
    held = min(mfl, firmware["in"]) if mfl else firmware["in"]
    held += min(mfl, firmware["out"]) if mfl else firmware["out"]
    assert heap["after_handshake"] - heap["context_held"] >= held
    assert heap["peak"] >= heap["after_handshake"]
    assert info.ok
    # per phase (tlsx.heap_phases): the handshake went through the states that hold its
    # peak, and their highest figure is the handshake's peak
    phases = {name: (peak, end) for name, peak, end in heap["phases"]}
    for name in ("SERVER_CERTIFICATE", "VERIFY_CHAIN", "CLIENT_KEY_EXCHANGE", "HANDSHAKE_WRAPUP"):
        assert name in phases, heap["phases"]
    assert max(p for _n, p, _e in heap["phases"]) == heap["handshake_peak"], heap
    # wrapping up frees the handshake's state and shrinks the buffers to the agreed MFL:
    # the held heap drops by at least what the shrinking gives back
    names = [n for n, _p, _e in heap["phases"]]
    before_wrapup = heap["phases"][names.index("HANDSHAKE_WRAPUP") - 1][2]
    shrink = (firmware["in"] - min(mfl, firmware["in"])) if mfl else 0
    shrink += (firmware["out"] - min(mfl, firmware["out"])) if mfl else 0
    assert before_wrapup - phases["HANDSHAKE_WRAPUP"][1] > shrink, heap["phases"]
    # closing the connection frees everything it took: only the context's share is left
    assert heap["after_close"] == heap["context_held"], heap


def test_heap_stats_off_raises_not_implemented(firmware):
    if firmware["heap_stats"]:
        pytest.skip("this build counts mbedTLS heap")
    import subprocess

    for fn in ("heap_stats", "heap_phases"):
        proc = subprocess.run(
            [
                firmware["binary"],
                "-c",
                "import tlsx\ntry:\n tlsx.%s()\nexcept NotImplementedError as e:\n print('NIE', e)"
                % fn,
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert "NIE" in proc.stdout and "IOTHUB_TLSX_HEAP_STATS" in proc.stdout, (fn, proc)
