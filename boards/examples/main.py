# iothub example for ESP32 and Raspberry Pi Pico W (also runs on the MicroPython unix port).
#
# Joins Wi-Fi (with retries), sets the clock over NTP (with retries and a timeout), connects to
# Azure IoT Hub, then loops: telemetry every TELEMETRY_INTERVAL_S seconds, cloud-to-device
# messages toggle the LED, direct methods "blink" / "get_state" / "set_interval" answer, desired
# property "interval" changes the telemetry period and is reported back, client.poll() drives
# everything in between. Settings come from config.py (copy config_template.py).
#
# Board parts are optional: without `network` (unix port) Wi-Fi is skipped, without `ntptime`
# the host clock is used, without `machine` the LED is a stand-in that only prints. Importing
# this module runs nothing; `main(max_iterations=N)` runs N loop turns (tests), and on a board
# main.py runs as __main__ and loops forever.
import time

import iothub

try:
    from time import sleep_ms, ticks_diff, ticks_ms
except ImportError:  # CPython, for linting only

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


def log(*args):
    print("[main]", *args)


def setting(cfg, name, default=None):
    value = getattr(cfg, name, default)
    return default if value is None else value


# ---- board parts -------------------------------------------------------------------------


def connect_wifi(ssid, password, attempts=5, timeout_s=20):
    """Join Wi-Fi; returns the WLAN, or None where there is no `network` module (unix port).
    Retries with a growing pause; raises OSError naming the network after the last attempt."""
    try:
        import network
    except ImportError:
        log("no network module: using the host's network")
        return None
    if not ssid:
        raise OSError("WIFI_SSID is empty in config.py")
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    for attempt in range(1, attempts + 1):
        if wlan.isconnected():
            break
        log("Wi-Fi: joining %r (attempt %d/%d)" % (ssid, attempt, attempts))
        wlan.connect(ssid, password)
        t0 = ticks_ms()
        while not wlan.isconnected() and ticks_diff(ticks_ms(), t0) < timeout_s * 1000:
            sleep_ms(200)
        if wlan.isconnected():
            break
        log("Wi-Fi: no connection (status %s)" % (wlan.status(),))
        wlan.disconnect()
        sleep_ms(min(1000 << attempt, 30000))
    else:
        raise OSError("Wi-Fi: could not join %r after %d attempts" % (ssid, attempts))
    log("Wi-Fi: connected, address %s" % (wlan.ifconfig()[0],))
    return wlan


def sync_time(host=None, attempts=5, timeout_s=5):
    """Set the clock over NTP (SAS tokens need the real time). Returns False where there is no
    `ntptime` (unix port: the host clock is right); raises OSError after the last attempt."""
    try:
        import ntptime
    except ImportError:
        log("no ntptime module: using the host clock")
        return False
    if host:
        ntptime.host = host
    ntptime.timeout = timeout_s
    for attempt in range(1, attempts + 1):
        try:
            ntptime.settime()
            log("time set over NTP: %s" % (time.gmtime(),))
            return True
        except (OSError, OverflowError) as e:  # timeout, DNS failure, bad reply
            log("NTP attempt %d/%d failed: %r" % (attempt, attempts, e))
            sleep_ms(min(1000 << attempt, 16000))
    raise OSError("time sync failed after %d attempts (NTP host %r)" % (attempts, ntptime.host))


class Led:
    """The board LED, or a stand-in that only keeps and prints its state."""

    def __init__(self, pin=None):
        self.state = 0
        self._pin = None
        try:
            from machine import Pin
        except ImportError:
            return
        for p in (pin,) if pin is not None else ("LED", 2):  # Pico W, then ESP32 DevKit
            try:
                self._pin = Pin(p, Pin.OUT)
                break
            except (ValueError, TypeError):
                continue
        self.set(0)

    def set(self, on):
        self.state = 1 if on else 0
        if self._pin is not None:
            self._pin.value(self.state)

    def toggle(self):
        self.set(not self.state)
        log("LED %s" % ("on" if self.state else "off"))


# ---- the client --------------------------------------------------------------------------


def make_client(cfg, model_id=None):
    """A DeviceClient from config.py: a connection string, or DPS when that is empty.
    model_id: the Plug and Play model the device announces (pnp_thermostat.py)."""
    kw = {"tls": setting(cfg, "TLS_PROFILE", "rsa")}
    if setting(cfg, "ROOTS"):
        kw["roots"] = cfg.ROOTS
    if setting(cfg, "HOST"):
        kw["host"] = cfg.HOST
    if setting(cfg, "PORT"):
        kw["port"] = cfg.PORT
    cs = setting(cfg, "CONNECTION_STRING", "")
    if cs:
        if model_id is not None:
            kw["model_id"] = model_id
        return iothub.DeviceClient.from_connection_string(cs, **kw)
    if setting(cfg, "DPS_ID_SCOPE", ""):
        # Provisioning is a separate module, loaded only by devices that use it. The
        # assignment is saved, so the device asks DPS again only when nothing is saved.
        from iothub.provisioning import ProvisioningClient, provision_or_load

        pc = ProvisioningClient(
            cfg.DPS_ID_SCOPE,
            cfg.DPS_REGISTRATION_ID,
            symmetric_key=cfg.DPS_SYMMETRIC_KEY,
            tls=kw["tls"],
            roots=kw.get("roots"),
            model_id=model_id,  # IoT Central picks the device template by it
        )
        result = provision_or_load(pc, setting(cfg, "DPS_STATE_FILE", "/provisioning.json"))
        hub_kw = {k: kw[k] for k in ("host", "port") if k in kw}
        return result.client(**hub_kw)
    raise ValueError("config.py sets neither CONNECTION_STRING nor DPS_ID_SCOPE")


class App:
    """Handlers and loop state; kept apart from main() so tests can drive it."""

    def __init__(self, client, led, interval_s):
        self.client = client
        self.led = led
        self.interval_s = interval_s
        self.sent = 0
        self.received = 0
        self.report = {"led": led.state, "interval": interval_s}
        client.on_message = self.on_message
        client.on_method = self.on_method
        client.on_desired = self.on_desired

    def on_message(self, msg):
        self.received += 1
        log("C2D message %d: %r %r" % (self.received, bytes(msg.body)[:64], msg.properties))
        self.led.toggle()
        self.report["led"] = self.led.state

    def on_method(self, name, payload):
        log("method %s(%r)" % (name, payload))
        if name == "blink":
            self.led.toggle()
            self.report["led"] = self.led.state
            return 200, {"led": self.led.state}
        if name == "get_state":
            return 200, {"led": self.led.state, "sent": self.sent, "interval": self.interval_s}
        if name == "set_interval":
            value = payload.get("interval") if isinstance(payload, dict) else payload
            if not isinstance(value, int) or value < 1:
                return 400, {"error": "interval must be a positive integer (seconds)"}
            self.set_interval(value)
            return 200, {"interval": self.interval_s}
        return 404, {"error": "unknown method %s" % name}

    def on_desired(self, patch, version):
        log("desired properties v%s: %r" % (version, patch))
        value = patch.get("interval")
        if isinstance(value, int) and value >= 1:
            self.set_interval(value)

    def set_interval(self, seconds):
        self.interval_s = seconds
        self.report["interval"] = seconds

    def telemetry(self):
        self.sent += 1
        body = '{"count": %d, "led": %d, "uptime_ms": %d}' % (self.sent, self.led.state, ticks_ms())
        self.client.send(body, properties={"source": "iothub-example"})
        log("telemetry %d sent" % self.sent)

    def flush_report(self):
        if self.report:
            patch, self.report = self.report, {}
            self.client.update_reported(patch)


def main(cfg=None, max_iterations=None):
    """Run the example. max_iterations=None loops forever (a board); tests pass a number."""
    if cfg is None:
        try:
            import config as cfg
        except ImportError:
            raise SystemExit(
                "config.py is missing: copy boards/examples/config_template.py to config.py, "
                "fill it in, and deploy it (make deploy PORT=...)"
            ) from None
    connect_wifi(
        setting(cfg, "WIFI_SSID", ""), setting(cfg, "WIFI_PASSWORD", ""), attempts=5, timeout_s=20
    )
    sync_time(
        setting(cfg, "NTP_HOST"),
        attempts=setting(cfg, "NTP_ATTEMPTS", 5),
        timeout_s=setting(cfg, "NTP_TIMEOUT_S", 5),
    )
    led = Led(setting(cfg, "LED_PIN"))
    client = make_client(cfg)
    app = App(client, led, setting(cfg, "TELEMETRY_INTERVAL_S", 30))
    client.connect()
    info = client.tls_info
    log(
        "connected to %s as %s; TLS %r"
        % (client.hostname, client.device_id, info() if callable(info) else info)
    )
    poll_ms = setting(cfg, "POLL_MS", 1000)
    last = None
    n = 0
    while max_iterations is None or n < max_iterations:
        n += 1
        if last is None or ticks_diff(ticks_ms(), last) >= app.interval_s * 1000:
            last = ticks_ms()
            app.telemetry()
        app.flush_report()
        client.poll(poll_ms)
    client.disconnect()
    log("done: %d telemetry messages, %d C2D messages" % (app.sent, app.received))
    return app


if __name__ == "__main__":
    main()
