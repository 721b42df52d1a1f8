"""Max fragment length on the wire (RFC 6066 section 4), with firmware that can request it.

Runs when $MICROPYTHON points to a unix-port build with our `tlsx` C module (README "Boards and
firmware: Building", e.g. MICROPYTHON=.../ports/unix/build-iothub-ecc/micropython); skipped with
the reason otherwise. Stock behaviour (warning, require_mfl error) is in test_tls_profile.py.

Checked with tlslite-ng and the endpoint's record accounting: the ClientHello carries
extension 1 with the requested code, the ServerHello echoes it, every record from the hub is
at most the limit plus the record protection overhead, and the data arrives intact."""

import json

import pytest
from tlslite.constants import ExtensionType
from tlslite.messages import ClientHello, RecordHeader3, ServerHello
from tlslite.utils.codec import Parser

import mpyrun
from iothub_emulator import tlsrecords
from iothub_emulator.tlsserver import TLSEndpoint

pytestmark = pytest.mark.needs_mfl
CODES = {512: 1, 1024: 2, 2048: 3, 4096: 4}
# protection overhead per record for the suites we offer: GCM = 8 (explicit nonce) + 16 (tag);
# CBC-SHA256/384 = 16 (IV) + 32/48 (MAC) + up to 16 (padding)
OVERHEAD = {"GCM": 24, "CBC": 16 + 48 + 16}


@pytest.fixture(scope="module")
def tlsx_caps():
    caps = mpyrun.tlsx_caps()  # fails with the output when the probe crashes
    if caps is None:
        pytest.skip(
            "MICROPYTHON=%s has no tlsx module (ImportError; stock MicroPython cannot request "
            "max fragment length): set MICROPYTHON to a firmware build with tlsx to run the MFL "
            "wire tests" % mpyrun.micropython_binary()
        )
    return dict(caps, max=min(caps["in"], caps["out"]))


def _handshake_bodies(raw, want_type):
    # (independent) tlslite-ng record parsing; returns the body of the first message of want_type
    p = Parser(bytearray(raw))
    buf = bytearray()
    while p.getRemainingLength():
        hdr = RecordHeader3().parse(p)
        frag = p.getFixBytes(hdr.length)
        if hdr.type != 22:
            break
        buf += frag
    assert buf and buf[0] == want_type, "handshake message %d not found" % want_type
    return buf[1:]


def _run(pki, profile, payload_len, **cfg):
    payload = bytes((i * 7) & 0xFF for i in range(payload_len))
    text = payload.hex()  # the device reads hex text, so `received` round-trips through JSON

    def handler(conn):
        if conn.recv(10, timeout=10) == b"go":
            conn.sendall(text.encode())

    ep = TLSEndpoint(pki, profile, handler=handler).start()
    try:
        cfg = dict(cfg, port=ep.port, host=ep.hostname, profile=profile, send="go", expect=text)
        cfg["roots"] = [pki.root_der_path(profile)]
        proc = mpyrun.run("import tls_client; tls_client.main(%r)" % (cfg,), timeout=60)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        assert proc.returncode == 0 and lines, proc.stdout + proc.stderr
        out = json.loads(lines[-1])
        info = ep.wait_connection(0)
        info.closed.wait(5)
    finally:
        ep.stop()
    return out, info, text


def _check_wire(info, size):
    ch = ClientHello().parse(Parser(_handshake_bodies(info.client_hello, 1)))
    ext = ch.getExtension(ExtensionType.max_fragment_length)
    assert ext is not None, "no max_fragment_length extension in the ClientHello"
    assert bytes(ext.extData) == bytes([CODES[size]])
    sh = ServerHello().parse(Parser(_handshake_bodies(info.server_hello, 2)))
    echo = sh.getExtension(ExtensionType.max_fragment_length)
    assert echo is not None and bytes(echo.extData) == bytes([CODES[size]]), "hub did not echo MFL"
    assert info.negotiated_mfl == size
    mode = "GCM" if "GCM" in info.cipher else "CBC"
    # every record the hub sent, handshake included
    assert info.max_record_out <= size + OVERHEAD[mode], info.record_sizes_out
    # plaintext handshake records (before ChangeCipherSpec) carry no overhead
    hs = [r for r in tlsrecords.split_records(info.server_hello)]
    assert all(len(r) - 5 <= size for r in hs)


@pytest.mark.parametrize("size", [512, 1024, 2048, 4096])
def test_mfl_requested_echoed_and_honoured_ecc(pki, tlsx_caps, size):
    if size > tlsx_caps["max"]:
        pytest.skip(
            "%d exceeds this build's buffers (IN %d, OUT %d)"
            % (size, tlsx_caps["in"], tlsx_caps["out"])
        )
    out, info, text = _run(pki, "ecc", 3 * size + 100, mfl=size, require_mfl=True)
    assert out["ok"], out
    assert out["configured"]["mfl"] == {
        "requested": True,
        "size": size,
        "reason": "requested through tlsx",
    }
    assert out["received"] == text  # several full-size records reassembled
    _check_wire(info, size)
    assert info.records_out >= info.handshake_records_out + 3


def test_mfl_rsa_hub(pki, tlsx_caps):
    # the whole Certificate message must fit the input buffer whatever the MFL
    # (docs/protocol.md 6.2): the RSA chain needs IN >= ~4 KB
    need = pki.sizes()["rsa"]["chain_sent"] + 20
    if tlsx_caps["in"] < need:
        pytest.skip("RSA chain (%d B) does not fit IN %d" % (need, tlsx_caps["in"]))
    size = min(1024, tlsx_caps["max"])
    out, info, text = _run(pki, "rsa", 2 * size, mfl=size, require_mfl=True)
    assert out["ok"], out
    assert out["received"] == text
    _check_wire(info, size)


def test_board_default_mfl(pki, tlsx_caps):
    if not tlsx_caps["default"]:
        pytest.skip("this build requests no MFL by default")
    out, info, _ = _run(pki, "ecc", 100)
    assert out["ok"], out
    assert out["configured"]["mfl"] == {
        "requested": True,
        "size": tlsx_caps["default"],
        "reason": "board default (tlsx)",
    }
    _check_wire(info, tlsx_caps["default"])


def test_mfl_larger_than_buffers(pki, tlsx_caps):
    too_big = [s for s in (512, 1024, 2048, 4096) if s > tlsx_caps["max"]]
    if not too_big:
        pytest.skip("this build's buffers allow every MFL size")
    proc = mpyrun.run(
        "import json, iothub\n"
        "try:\n"
        "    iothub.tls_context('ecc', max_fragment_length=%d, require_mfl=True); r = 'no error'\n"
        "except Exception as e:\n"
        "    r = [type(e).__name__, str(e)]\n"
        "print(json.dumps(r))" % too_big[0]
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r[0] == "TLSError" and "max_fragment_length=%d required" % too_big[0] in r[1]
    assert "tlsx could not set it" in r[1]


def test_chain_larger_than_input_buffer_is_explained(pki, tlsx_caps):
    need = pki.sizes()["rsa"]["chain_sent"] + 20
    if tlsx_caps["in"] >= need:
        pytest.skip("the RSA chain fits this build's input buffer (%d B)" % tlsx_caps["in"])
    out, info, _ = _run(pki, "rsa", 10, mfl=min(1024, tlsx_caps["max"]))
    assert not out["ok"] and out["reason"] == "buffer", out
    assert (
        "does not fit this firmware's TLS input buffer (%d bytes)" % tlsx_caps["in"]
        in out["message"]
    )
