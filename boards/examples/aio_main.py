# iothub asyncio example for ESP32 and Raspberry Pi Pico W (also runs on the MicroPython unix
# port): the same config.py as main.py, the client is iothub.aio.DeviceClient.
#
# Three things run at once on one asyncio loop: a telemetry task (a message every
# TELEMETRY_INTERVAL_S seconds), an LED task blinking every BLINK_MS milliseconds, and the
# client's own background tasks (keepalive, reconnect, reading). Direct methods, answered by
# a coroutine handler: "set_blink" {"ms": N} changes the blink period, "set_interval"
# {"interval": N} the telemetry period, "get_state" reports both. The desired property
# "interval" changes the telemetry period too.
#
# Wi-Fi, NTP and DPS provisioning are blocking and run before the loop starts (they come
# from main.py: deploy both files). Without `machine` the LED is a stand-in that prints
# nothing. `main(max_messages=N)` stops after N telemetry messages (tests); on a board, run
# it from main.py or the REPL: `import aio_main; aio_main.main()`.
import asyncio

from main import Led, connect_wifi, log, setting, sync_time

from iothub.aio import DeviceClient

try:
    from time import ticks_ms
except ImportError:  # CPython, for linting only
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)


def make_client(cfg):
    """An iothub.aio.DeviceClient from config.py: a connection string, or DPS (provisioned
    here, before the loop, with the blocking provisioning client) when that is empty."""
    kw = {"tls": setting(cfg, "TLS_PROFILE", "rsa")}
    for name, key in (("ROOTS", "roots"), ("HOST", "host"), ("PORT", "port")):
        if setting(cfg, name):
            kw[key] = getattr(cfg, name)
    cs = setting(cfg, "CONNECTION_STRING", "")
    if cs:
        return DeviceClient.from_connection_string(cs, **kw)
    if setting(cfg, "DPS_ID_SCOPE", ""):
        from iothub.provisioning import ProvisioningClient, provision_or_load

        pc = ProvisioningClient(
            cfg.DPS_ID_SCOPE,
            cfg.DPS_REGISTRATION_ID,
            symmetric_key=cfg.DPS_SYMMETRIC_KEY,
            tls=kw["tls"],
            roots=kw.get("roots"),
        )
        result = provision_or_load(pc, setting(cfg, "DPS_STATE_FILE", "/provisioning.json"))
        return result.client(DeviceClient, **{k: kw[k] for k in ("host", "port") if k in kw})
    raise ValueError("config.py sets neither CONNECTION_STRING nor DPS_ID_SCOPE")


class App:
    def __init__(self, client, led, interval_s, blink_ms):
        self.client = client
        self.led = led
        self.interval_s = interval_s
        self.blink_ms = blink_ms
        self.sent = 0
        self.blinks = 0
        client.on_method = self.on_method
        client.on_desired = self.on_desired

    async def on_method(self, name, payload):
        # A coroutine handler: the response goes out when it returns.
        log("method %s(%r)" % (name, payload))
        if name == "set_blink":
            value = payload.get("ms") if isinstance(payload, dict) else payload
            if not isinstance(value, int) or value < 20:
                return 400, {"error": "ms must be an integer >= 20"}
            self.blink_ms = value
            return 200, {"blink_ms": value}
        if name == "set_interval":
            value = payload.get("interval") if isinstance(payload, dict) else payload
            if not isinstance(value, int) or value < 1:
                return 400, {"error": "interval must be a positive integer (seconds)"}
            self.interval_s = value
            return 200, {"interval": value}
        if name == "get_state":
            return 200, {
                "blink_ms": self.blink_ms,
                "interval": self.interval_s,
                "sent": self.sent,
                "blinks": self.blinks,
            }
        return 404, {"error": "unknown method %s" % name}

    def on_desired(self, patch, version):
        value = patch.get("interval")
        if isinstance(value, int) and value >= 1:
            self.interval_s = value
            log("desired interval v%d: %d s" % (version, value))

    async def telemetry(self, count=None):
        while count is None or self.sent < count:
            self.sent += 1
            body = '{"count": %d, "led": %d, "uptime_ms": %d}' % (
                self.sent,
                self.led.state,
                ticks_ms(),
            )
            pid = await self.client.send(body, properties={"source": "iothub-aio-example"})
            log("telemetry %d acknowledged (packet %d)" % (self.sent, pid))
            await asyncio.sleep_ms(self.interval_s * 1000)

    async def blink(self):
        while True:
            self.led.set(not self.led.state)
            self.blinks += 1
            await asyncio.sleep_ms(self.blink_ms)


async def run(cfg, max_messages=None):
    led = Led(setting(cfg, "LED_PIN"))
    app = App(
        make_client(cfg),
        led,
        setting(cfg, "TELEMETRY_INTERVAL_S", 30),
        setting(cfg, "BLINK_MS", 500),
    )
    async with app.client as client:
        log(
            "connected to %s as %s; TLS %r" % (client.hostname, client.device_id, client.tls_info())
        )
        blinker = asyncio.create_task(app.blink())
        try:
            await app.telemetry(max_messages)
            await client.wait_sent()
        finally:
            blinker.cancel()
    log("done: %d telemetry messages, %d blinks" % (app.sent, app.blinks))
    return app


def main(cfg=None, max_messages=None):
    """Run the example. max_messages=None runs forever (a board); tests pass a number."""
    if cfg is None:
        try:
            import config as cfg
        except ImportError:
            raise SystemExit(
                "config.py is missing: copy boards/examples/config_template.py to config.py, "
                "fill it in, and deploy it (make deploy PORT=...)"
            ) from None
    # Blocking set-up first, before the loop runs anything else.
    connect_wifi(setting(cfg, "WIFI_SSID", ""), setting(cfg, "WIFI_PASSWORD", ""))
    sync_time(
        setting(cfg, "NTP_HOST"),
        attempts=setting(cfg, "NTP_ATTEMPTS", 5),
        timeout_s=setting(cfg, "NTP_TIMEOUT_S", 5),
    )
    return asyncio.run(run(cfg, max_messages))


if __name__ == "__main__":
    main()
