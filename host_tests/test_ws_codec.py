"""WebSocket client protocol and HTTP CONNECT helpers: the same cases (handshake checks, frame
headers, masking, the frame decoder fed in every split, a bounded fuzz) on CPython and on the
unix port, where the masking loop is the viper one."""

import corerun

import mpyrun

corerun.install("cases_ws", globals())


def test_unix_port_uses_the_viper_masking_loop():
    # The fast loop is compiled at import when the port has the viper emitter (the unix
    # port does); the portable loop stays the reference in the cases above.
    r = mpyrun.run_json(
        "import json\nfrom iothub import wsproto\n"
        "print(json.dumps([wsproto.mask is wsproto.mask_py]))"
    )
    assert r == [False]


def test_heap_locked_websocket_write_and_read_on_unix_port():
    # 60 frames out (200-byte packets) and 60 frames in, under heap_lock(): any allocation
    # raises MemoryError and stops the loop early. One write per frame (one TLS record).
    r = mpyrun.run_json("import heap_ws; heap_ws.main(60)")
    assert r["stopped_at"] == "done", "allocated under heap_lock at: " + r["stopped_at"]
    assert r["iterations"] == r["writes"] == 60
    assert r["bytes_written"] == 60 * (200 + 8)  # 2 + 2 length + 4 key
    assert r["bytes_read"] == 60 * 20


corerun.install("cases_ws_stream", globals(), name="stream")
