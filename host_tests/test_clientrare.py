"""The client's rarely called API lives in iothub.clientrare, reached through ClientBase's
__getattr__: it loads for each call and goes again, answers as the methods did, and a name
nobody defines is still an AttributeError. The texts of bad arguments and the reports of
dropped messages are in iothub.reports, loaded for one message. Handlers are descriptors
(properties on a firmware without them)."""

import mpyrun

_CLIENT = (
    "import sys, json, iothub\n"
    "c = iothub.DeviceClient.from_connection_string("
    "'HostName=h.azure-devices.net;DeviceId=d;SharedAccessKey=YWJjZGVmZ2hpamtsbW5vcA==',"
    " host='127.0.0.1', port=1, queue_policy='reject')\n"
    "def loaded(m='clientrare'):\n    return 'iothub.' + m in sys.modules\n"
)


def test_clientrare_loads_for_each_call_only():
    out = mpyrun.run_json(
        _CLIENT + "r = [loaded()]\n"
        "f = lambda m: None\n"
        "c.on_message = f\n"  # not connected: recorded, nothing subscribed yet
        "r.append(c.on_message is f)\n"
        "r.append(getattr(c, '_not_there', 'default'))\n"  # a private name: no load
        "r.append(c.send is not None)\n"
        "r.append(loaded())\n"
        "r.append([c.queued, c.dropped, c.queue_policy])\n"
        "r.append(loaded())\n"  # the counters are answered without it
        "try:\n    c.no_such_method\nexcept AttributeError as e:\n    r.append(str(e))\n"
        "r.append(loaded())\n"
        "r.append(c.tls_info()['cipher'])\n"
        "r.append(loaded())\n"  # gone again once the call returned
        "f = c.tls_info\n"  # a bound method kept by the application still works
        "r.append(f()['cipher'])\n"
        "r.append(f()['configured']['profile'])\n"
        "c.on_message = None\n"
        "r.append(c.on_message)\n"
        "print(json.dumps(r))\n"
    )
    assert out == [
        False,
        True,
        "default",
        True,
        False,
        [0, 0, "reject"],
        False,
        "no_such_method",
        False,
        None,
        False,
        None,
        "rsa",
        None,
    ]


def test_disconnect_and_close_of_a_client_never_connected():
    out = mpyrun.run_json(
        _CLIENT + "states = []\n"
        "c.on_connection_state = lambda s, d: states.append([s, d])\n"
        "c.disconnect()\n"
        "c.close()\n"
        "print(json.dumps([states, c.state, c.is_connected]))\n"
    )
    assert out == [
        [["disconnected", "closed by the application"]] * 2,
        "disconnected",
        False,
    ]


def test_handler_properties_for_a_firmware_without_descriptors():
    # What clientbase installs when MICROPY_PY_DESCRIPTORS is off, run on the unix port:
    # the properties set handlers through iothub.handlers, like the descriptors do.
    out = mpyrun.run_json(
        "import json, sys\n"
        "from iothub.reports import handler_prop\n"
        "class D:\n    _base = bytearray(64)\n"
        "class S:\n    decoder = D()\n    full = 0\n"
        "    def tx_full(self):\n        S.full += 1\n"
        "class C:\n    is_connected = False\n"
        "    def __init__(self):\n        self._handlers = {}\n        self._s = S()\n"
        "handler_prop(C)\n"
        "c = C()\n"
        "r = [c.on_method, c.on_command]\n"
        "c.on_method = len\n"
        "r.append(c.on_method is len)\n"
        "c.on_method = None\n"
        "print(json.dumps([r, c._handlers, c.on_method, type(C.on_message).__name__,\n"
        "    S.full, len(D._base), len(c._s.decoder._base), 'iothub.handlers' in sys.modules]))\n"
    )
    # one handler set: the transmit buffer at full size, a 512 B receive buffer;
    # iothub.handlers is loaded for each call only
    assert out == [[None, None, True], {"method": None}, None, "property", 1, 64, 512, False]


def test_dropped_message_reports_name_kind_and_size_never_content():
    # The texts of iothub.reports, loaded for one report (errors.explained) and dropped.
    out = mpyrun.run_json(
        _CLIENT + "got = []\n"
        "c.on_error = lambda kind, detail: got.append([kind, detail])\n"
        "class P:\n    type = 0\n    payload_len = 70000\n    rc = 1\n"  # mqtt.DROPPED
        "c._on_publish(P())\n"
        "r = [loaded('reports')]\n"
        "P.rc = 3\n"
        "c._on_publish(P())\n"
        "iothub.errors.explained('reports', 'report', c, 'twin', 'desired patch skipped: x')\n"
        "r.append(loaded('reports'))\n"
        "from iothub.reports import on_publish\n"
        "on_publish(c, P(), MemoryError())\n"
        "print(json.dumps([got, r, c.stats['poison']]))\n"
    )
    got, r, poison = out
    assert r == [False, False]  # loaded for the report only
    assert got[0][0] == "oversized" and "70000 bytes" in got[0][1] and "max_packet" in got[0][1]
    assert got[1][0] == "undecodable" and "topic cannot be decoded" in got[1][1]
    assert got[2] == ["twin", "desired patch skipped: x"]  # not counted as a dropped message
    assert got[3] == ["memory", "a message from the hub was dropped (70000 bytes): out of memory"]
    assert poison == 3


def test_bad_input_is_named_with_texts_that_are_not_resident():
    # The checks stay in the resident modules; the texts come from iothub.reports,
    # loaded for one message and dropped again.
    out = mpyrun.run_json(
        _CLIENT + "r = []\n"
        "def err(fn, *a, **kw):\n"
        "    try:\n        fn(*a, **kw)\n    except Exception as e:\n"
        "        r.append([type(e).__name__, str(e), loaded('reports')])\n"
        "err(c.poll, 1.5)\n"
        "err(c.send, b'x', timeout_ms=-1)\n"
        "err(c.send, 12)\n"
        "err(c.send, b'x', qos=2)\n"
        "err(c.send, bytearray(262145), qos=0)\n"
        "err(iothub.DeviceClient.from_x509, 'h', 'd', b'cert', None)\n"
        "for kw in ({'queue_size': 0}, {'queue_bytes': 8}, {'queue_policy': 'drop-all'},\n"
        "           {'txbuf': 16}, {'txbuf': '1k'}):\n"
        "    err(iothub.DeviceClient, 'h.azure-devices.net', 'd', shared_access_key="
        "'YWJjZGVmZ2hpamtsbW5vcA==', **kw)\n"
        "print(json.dumps(r))\n"
    )
    assert out == [
        ["ConfigError", "poll timeout_ms must be an int (milliseconds)", False],
        ["ConfigError", "timeout_ms must be a positive int (milliseconds), got -1", False],
        ["ConfigError", "payload must be bytes, str, dict or list", False],
        ["ConfigError", "qos must be 0 or 1 (IoT Hub closes the connection on QoS 2)", False],
        ["ConfigError", "message too large: 262145 bytes, IoT Hub accepts at most 262144", False],
        ["ConfigError", "from_x509 needs both the device certificate and its private key", False],
        ["ConfigError", "queue_size must be an int >= 1, got 0", False],
        ["ConfigError", "queue_bytes must be an int >= 64, got 8", False],
        ["ConfigError", "queue_policy must be one of drop-oldest, reject, got 'drop-all'", False],
        ["ConfigError", "txbuf must be an int >= 64, got 16", False],
        ["ConfigError", "txbuf must be an int >= 64, got '1k'", False],
    ]
