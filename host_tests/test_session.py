"""iothub.session's protocol checks on what the hub sends: the texts live in iothub.mqtterr
(loaded for one message, not kept), the checks in the session."""

import mpyrun


def test_session_protocol_errors_name_the_packet():
    out = mpyrun.run_json(
        "import json, sys\n"
        "from iothub import mqtt\n"
        "from iothub.session import Session\n"
        "s = Session()\n"
        "r = []\n"
        "def feed(t, **kw):\n"
        "    p = mqtt.Packet()\n"
        "    p.type = t\n"
        "    for k in kw:\n        setattr(p, k, kw[k])\n"
        "    try:\n        s._dispatch(p)\n        r.append('ok')\n"
        "    except Exception as e:\n"
        "        r.append([type(e).__name__, str(e), 'iothub.mqtterr' in sys.modules])\n"
        "feed(mqtt.PUBLISH)\n"
        "feed(mqtt.CONNACK)\n"
        "feed(mqtt.CONNACK)\n"
        "feed(mqtt.PINGRESP)\n"
        "feed(8)\n"  # SUBSCRIBE: a packet only a client sends
        "print(json.dumps(r))\n"
    )
    assert out == [
        ["ProtocolError", "PUBLISH before CONNACK", False],
        "ok",
        ["ProtocolError", "a second CONNACK on an established connection", False],
        "ok",
        ["ProtocolError", "unexpected SUBSCRIBE packet from the hub", False],
    ]
