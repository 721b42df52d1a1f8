# The device side of `make demo MODE=pnp`, run by the MicroPython unix port (not CPython):
# the board example boards/examples/pnp_thermostat.py (its PnPApp) against the emulator.
# argv: port profile root.der connection-string
import sys

from pnp_thermostat import MODEL_ID, PnPApp

import iothub

port, profile, root_path, cs = sys.argv[1:5]
with open(root_path, "rb") as f:
    root = f.read()


def log(level, text):
    if level <= 1:
        print("device | " + text)


client = iothub.DeviceClient.from_connection_string(
    cs, tls=profile, roots=[root], host="127.0.0.1", port=int(port), model_id=MODEL_ID, log=log
)
app = PnPApp(client)
client.connect()
print("device | model %s" % MODEL_ID)
app.start()
print("device | reported serialNumber and maxTempSinceLastReboot of both thermostats")
app.telemetry()
print("device | READY")
for i in range(1, 601):
    client.poll(100)
    if i % 10 == 0:
        app.telemetry()
    if app.writes and app.commands:
        break
client.poll(200)
client.disconnect()
t = app.thermostats
print(
    "device | thermostat1 target %s, now %s; %d telemetry messages"
    % (t["thermostat1"].target, t["thermostat1"].temp, app.sent)
)
sys.exit(0 if app.writes and app.commands else 1)
