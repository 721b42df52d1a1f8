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
