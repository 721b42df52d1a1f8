# Device side of tools/bench/bench_pnp.py (MicroPython unix port). No network.
# Prints one JSON line: GC heap retained by imports (gc.collect() then gc.mem_alloc(), deltas)
# and garbage per call of the Plug and Play helpers next to their plain counterparts
# (gc.mem_alloc delta with the collector off, mean of N calls). CFG = {"n": N}.
import gc
import json
import sys


def heap():
    gc.collect()
    return gc.mem_alloc()


def garbage(fn, n):
    fn()  # warm up (interned strings, first-call caches)
    gc.collect()
    gc.disable()
    try:
        a = gc.mem_alloc()
        for _ in range(n):
            fn()
        b = gc.mem_alloc()
    finally:
        gc.enable()
    return (b - a) / n


n = CFG["n"]  # noqa: F821 - prepended by the bench
out = {}
h0 = heap()
import iothub.client  # noqa: E402, F401 - a client: what every application loads

h1 = heap()
out["client_import"] = h1 - h0
out["pnp_loaded_by_client"] = "iothub.pnp" in sys.modules
from iothub import pnp, topics  # noqa: E402

h2 = heap()
out["pnp_import"] = h2 - h1
out["file"] = getattr(pnp, "__file__", "?")

DESIRED = {
    "thermostat1": {"__t": "c", "targetTemperature": 23.5},
    "thermostat2": {"__t": "c", "targetTemperature": 18},
    "$version": 7,
}
TOPIC = topics.telemetry_topic("dev", None, None, None, None, None, "application/json", "utf-8")
calls = {
    "telemetry_topic": lambda: topics.telemetry_topic(
        "dev", None, None, None, None, None, "application/json", "utf-8"
    ),
    "add_component": lambda: pnp.add_component(TOPIC, "thermostat1"),
    "plain_reported": lambda: json.dumps({"targetTemperature": 23.5}).encode(),
    "ack_patch": lambda: (
        pnp.Patch().ack("targetTemperature", 23.5, 7, 200, None, "thermostat1").encode()
    ),
    "writable_properties": lambda: pnp.writable_properties(DESIRED),
    "split_command": lambda: pnp.split_command("thermostat1*getMaxMinReport"),
}
out["garbage"] = {k: garbage(f, n) for k, f in calls.items()}
out["ack_bytes"] = len(calls["ack_patch"]())
print(json.dumps(out))
