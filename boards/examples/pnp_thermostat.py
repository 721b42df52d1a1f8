# IoT Plug and Play example: a two-zone temperature controller for IoT Central or an IoT Hub
# with a DTDL model (pnp_thermostat.dtdl.json beside this file, model id MODEL_ID below).
#
# Two thermostats are components ("thermostat1", "thermostat2"): each sends its temperature as
# component telemetry, reports maxTempSinceLastReboot, accepts the writable property
# targetTemperature (acknowledged with status, the desired version and a description) and
# answers the command getMaxMinReport. The temperatures are simulated: each moves towards its
# target. Board set-up (Wi-Fi, NTP, connection string or DPS) comes from main.py and config.py,
# so deploy both (`make deploy`), copy this file too, then run it:
#   mpremote run boards/examples/pnp_thermostat.py
# Importing this module runs nothing; main(max_iterations=N) runs N loop turns.
import gc

try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython, for linting only
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b


MODEL_ID = "dtmi:com:example:iothub:TemperatureController;1"
COMPONENTS = ("thermostat1", "thermostat2")


def log(*args):
    print("[pnp]", *args)


class Thermostat:
    """One simulated thermostat: its temperature moves a third of the way to the target per
    step; keeps max, min and average since start."""

    def __init__(self, name, temp):
        self.name = name
        self.temp = temp
        self.target = temp
        self.max = self.min = temp
        self.total = 0.0
        self.samples = 0

    def step(self):
        self.temp = round(self.temp + (self.target - self.temp) / 3, 2)
        self.max = max(self.max, self.temp)
        self.min = min(self.min, self.temp)
        self.total += self.temp
        self.samples += 1
        return self.temp

    def report(self):
        avg = self.total / self.samples if self.samples else self.temp
        return {
            "maxTemp": self.max,
            "minTemp": self.min,
            "avgTemp": round(avg, 2),
            "samples": self.samples,
        }


class PnPApp:
    """Handlers and loop state; kept apart from main() so the demo and tests can drive it."""

    def __init__(self, client, serial_number="iothub-example-0001"):
        self.client = client
        self.thermostats = {
            COMPONENTS[0]: Thermostat(COMPONENTS[0], 21.0),
            COMPONENTS[1]: Thermostat(COMPONENTS[1], 18.0),
        }
        self.serial_number = serial_number
        self.sent = 0
        self.writes = 0
        self.commands = 0
        self.reported_max = {}
        # the model's components: desired patches without the "__t" marker still split right
        client.components = COMPONENTS
        client.on_writable = self.on_writable
        client.on_command = self.on_command

    def on_writable(self, component, name, value, version):
        log("writable %s/%s = %r (desired version %d)" % (component, name, value, version))
        t = self.thermostats.get(component)
        if t is None or name != "targetTemperature":
            return 404, "no writable property %s in %s" % (name, component)
        if value is None:  # the target was deleted: keep the current one
            return 200, "kept %s" % t.target
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return 400, "targetTemperature must be a number"
        if not -40 <= value <= 80:
            return 400, "targetTemperature must be within -40..80 degrees Celsius"
        t.target = value
        self.writes += 1
        return 200, "target set"

    def on_command(self, component, name, payload):
        log("command %s*%s(%r)" % (component, name, payload))
        t = self.thermostats.get(component)
        if t is None or name != "getMaxMinReport":
            return None  # not in the model: answered 404 by the client
        self.commands += 1
        return 200, t.report()

    def start(self):
        """After connect: the read-only properties of the root and both components in one
        reported patch."""
        from iothub.pnp import Patch

        patch = Patch().report({"serialNumber": self.serial_number})
        for name, t in self.thermostats.items():
            patch.report({"maxTempSinceLastReboot": t.max}, name)
            self.reported_max[name] = t.max
        self.client.report_properties(patch)

    def telemetry(self):
        """One temperature per component ($.sub), the free heap from the root; a new maximum
        is reported."""
        for name in COMPONENTS:
            t = self.thermostats[name]
            self.client.send({"temperature": t.step()}, component=name)
            self.sent += 1
            if t.max != self.reported_max.get(name):
                self.reported_max[name] = t.max
                self.client.report_properties({"maxTempSinceLastReboot": t.max}, name)
        gc.collect()
        self.client.send({"workingSet": gc.mem_free()})
        self.sent += 1


def main(cfg=None, max_iterations=None):
    """Run the example on a board (config.py) or the unix port; None loops forever."""
    import main as board  # Wi-Fi, NTP and the client from config.py (boards/examples/main.py)

    if cfg is None:
        import config as cfg
    board.connect_wifi(board.setting(cfg, "WIFI_SSID", ""), board.setting(cfg, "WIFI_PASSWORD", ""))
    board.sync_time(board.setting(cfg, "NTP_HOST"))
    client = board.make_client(cfg, model_id=MODEL_ID)
    app = PnPApp(client)
    client.connect()
    app.start()
    interval_ms = board.setting(cfg, "TELEMETRY_INTERVAL_S", 30) * 1000
    poll_ms = board.setting(cfg, "POLL_MS", 1000)
    last = None
    n = 0
    while max_iterations is None or n < max_iterations:
        n += 1
        if last is None or ticks_diff(ticks_ms(), last) >= interval_ms:
            last = ticks_ms()
            app.telemetry()
        client.poll(poll_ms)
    client.disconnect()
    log(
        "done: %d telemetry messages, %d writes, %d commands" % (app.sent, app.writes, app.commands)
    )
    return app


if __name__ == "__main__":
    main()
