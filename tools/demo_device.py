# The device side of `make demo`, run by the MicroPython unix port (not CPython).
# argv: hostname port profile root.der auth(sas|x509) credential...
#   sas:  <connection string>
#   x509: <device id> <cert.pem> <key.pem>
# environment: IOTHUB_DEMO_TRANSPORT (mqtt | websockets), IOTHUB_DEMO_PROXY (host:port[:user:pw])
import os
import sys

import iothub

hostname, port, profile, root_path, auth = sys.argv[1:6]
with open(root_path, "rb") as f:
    root = f.read()


def log(level, text):
    if level <= 1:
        print("device | " + text)


common = dict(tls=profile, roots=[root], host="127.0.0.1", port=int(port), log=log)
common["transport"] = os.getenv("IOTHUB_DEMO_TRANSPORT") or "mqtt"
if os.getenv("IOTHUB_DEMO_PROXY"):
    p = os.getenv("IOTHUB_DEMO_PROXY").split(":")
    common["proxy"] = (p[0], int(p[1])) + tuple(p[2:4])
    print(
        "device | via HTTP proxy %s:%s (%s)" % (p[0], p[1], "with credentials" if p[2:] else "open")
    )
if auth == "sas":
    client = iothub.DeviceClient.from_connection_string(sys.argv[6], **common)
else:
    device_id, cert_path, key_path = sys.argv[6:9]
    with open(cert_path, "rb") as f:
        cert = f.read()
    with open(key_path, "rb") as f:
        key = f.read()
    client = iothub.DeviceClient.from_x509(hostname, device_id, cert, key, **common)

got = {"desired": None, "method": None, "c2d": None}


def on_desired(patch, version):
    print("device | desired patch v%d: %s" % (version, patch))
    got["desired"] = version


def on_method(name, payload):
    print("device | method %s(%s)" % (name, payload))
    got["method"] = name
    if name == "reboot":
        return 200, {"scheduled_in_s": payload.get("delay", 0) if payload else 0}
    return 404, {"error": "unknown method " + name}


def on_message(msg):
    print("device | C2D message %r properties=%s" % (bytes(msg.body), msg.properties))
    got["c2d"] = msg


client.on_desired = on_desired
client.on_method = on_method
client.on_message = on_message
client.connect()
info = client.tls_info()
conf = info.get("configured") or {}
print("device | TLS negotiated: %s %s" % (info["cipher"][1], info["cipher"][0]))
print(
    "device | TLS verified: %s, server name %s (SNI), trusted root SHA-256 %s..."
    % (conf.get("verify"), hostname, conf["roots"][0]["sha256"][:16])
)
print(
    "device | TLS offered (%s profile): %s"
    % (conf.get("profile"), ", ".join(conf.get("suites", ())))
)
mfl = conf.get("mfl") or {}
print(
    "device | TLS max fragment length: %s (%s)"
    % (mfl.get("size") if mfl.get("requested") else "not requested", mfl.get("reason"))
)
client.send(
    {"temperature": 21.5, "humidity": 40},
    properties={"sensor": "bme280", "alert level": "low"},
    message_id="demo-1",
)
print("device | telemetry acknowledged by the hub (QoS 1 PUBACK)")
twin = client.get_twin()
print("device | twin: %s" % (twin,))
v = client.update_reported({"firmware": "1.0.0", "interval_s": 10})
print("device | reported properties accepted, version %s" % v)
print("device | READY")
for _ in range(300):
    client.poll(100)
    if got["desired"] and got["method"] and got["c2d"]:
        break
client.disconnect()
ok = bool(got["desired"] and got["method"] and got["c2d"])
print("device | round trip %s" % ("complete" if ok else "INCOMPLETE"))
sys.exit(0 if ok else 1)
