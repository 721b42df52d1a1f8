# Device side of tools/bench/bench_ram.py, run by the MicroPython unix port (not CPython).
#
#   micropython device_ram_bench.py ram CONFIG.json
#
# One client per process (CFG["kind"]): "iothub" (iothub.DeviceClient), "umqtt_like"
# (tools/bench/umqtt_like.py, the baseline) or "umqtt_simple" (micropython-lib's
# umqtt.simple, when the host has a copy); the latter two get their TLS context and SAS
# token from iothub.tls_context / iothub.sas_token, as an application would.
#  1. GC heap (gc.mem_alloc after gc.collect) after the client's imports and after connect(),
#     minus the heap before any import. With CFG["handlers"] (iothub only) the C2D, method
#     and desired handlers are set before connect() (subscriptions and the twin GET included);
#     the process then stops there.
#  2. Garbage per QoS 1 send, collector off: (a) the bench message (bytes body, two custom
#     properties), (b) bytes body, no properties.
#  3. A loop of CFG["n"] sends of message (a), each waiting for its PUBACK, between the marks
#     "loop_start" and "loop_end": the host reads this process's CPU time (/proc/<pid>/stat)
#     and the hub's wire counters there; the device keeps each send's time.ticks_us delta.
# "MARK name {...}" lines wait for a line on stdin (bench_client.run_device answers them).
# The last stdout line is a JSON object with the results.
#
# Nothing from the clients is imported at module level: the import is measured.
import gc
import json
import socket
import sys
import time

with open(sys.argv[2]) as _f:  # a file: long argv elements crash the unix port
    CFG = json.loads(_f.read())

# The baseline module must come from MICROPYPATH (as .py or .mpy, as the host chose), not
# from this script's directory, which the unix port puts first on sys.path.
_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else ""
while _HERE in sys.path:
    sys.path.remove(_HERE)


# TCP_NODELAY for the baselines (CFG["nodelay"]): their five writes per PUBLISH would wait
# for the hub's delayed ACK under Nagle's algorithm (~40 ms a send on Linux loopback). The
# unix port's socket module has no TCP_NODELAY name: Linux's numbers, used on Linux only.
LINUX_NODELAY = (6, 1)  # IPPROTO_TCP, TCP_NODELAY


class NoDelaySockets:
    # Stands in for the socket module inside umqtt.simple (which never sets the option):
    # the same two calls it makes, TCP_NODELAY set on each new socket. Made before the heap
    # baseline, so it is not counted.
    def __init__(self, mod, opt):
        self._mod = mod
        self._opt = opt

    def socket(self, *args):
        s = self._mod.socket(*args)
        s.setsockopt(self._opt[0], self._opt[1], 1)
        return s

    def getaddrinfo(self, *args):
        return self._mod.getaddrinfo(*args)


if getattr(socket, "TCP_NODELAY", None) is not None:
    NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
elif sys.platform == "linux":
    NODELAY = LINUX_NODELAY
else:
    NODELAY = None
SOCKETS = NoDelaySockets(socket, NODELAY) if NODELAY else None


def heap():
    gc.collect()
    return gc.mem_alloc()


def mark(name, data=None):
    print("MARK %s %s" % (name, json.dumps(data or {})))
    sys.stdin.readline()  # the host answers once it has sampled its counters


def read(path):
    with open(path, "rb") as f:
        return f.read()


def own_pid():
    with open("/proc/self/stat") as f:
        return int(f.read().split(" ", 1)[0])


def iothub_modules():
    return sorted(k for k in sys.modules if k == "iothub" or k.startswith("iothub."))


def on_message(msg):
    pass


def on_method(name, payload):
    return 200, None


def on_desired(patch):
    pass


def garbage(fn, n):
    # Bytes allocated by n calls of fn with the collector off, per call.
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


def connect_iothub(root_der, base):
    from iothub import DeviceClient

    h_import = heap()
    c = DeviceClient.from_connection_string(
        CFG["cs"], tls="ecc", roots=[root_der], host="127.0.0.1", port=CFG["port"]
    )
    if CFG.get("handlers"):
        c.on_message = on_message
        c.on_method = on_method
        c.on_desired = on_desired
    c.connect()
    h_connect = heap()
    mod = sys.modules["iothub.client"]
    return c, h_import - base, h_connect - base, getattr(mod, "__file__", "?")


def connect_baseline(root_der, base):
    nodelay = CFG["nodelay"] and NODELAY is not None
    if CFG["kind"] == "umqtt_simple":
        from umqtt.simple import MQTTClient

        mod = sys.modules["umqtt.simple"]
        if nodelay:
            mod.socket = SOCKETS  # replaces a global: no allocation
    else:
        from umqtt_like import MQTTClient

        mod = sys.modules["umqtt_like"]
        if nodelay and mod.TCP_NODELAY is None:
            mod.IPPROTO_TCP, mod.TCP_NODELAY = NODELAY
    from iothub import sas_token, tls_context
    from iothub.clock import unix_time

    h_import = heap()
    host, dev = CFG["hostname"], CFG["device_id"]
    ctx = tls_context("ecc", roots=[root_der])
    token = sas_token(host + "/devices/" + dev, CFG["key"], unix_time() + 3600)
    c = MQTTClient(
        dev,
        CFG["server"],
        CFG["port"],
        user=host + "/" + dev + "/?api-version=2021-04-12",
        password=token,
        keepalive=240,
        ssl=ctx,
    )
    del ctx, token  # the client holds both
    c.connect()
    h_connect = heap()
    return c, h_import - base, h_connect - base, getattr(mod, "__file__", "?")


def main():
    kind = CFG["kind"]
    root_der = read(CFG["root"])  # application data, held by the application in both cases
    body = CFG["body"].encode()
    props = CFG["props"]
    base = heap()
    if kind == "iothub":
        c, h_import, h_connect, where = connect_iothub(root_der, base)
    else:
        c, h_import, h_connect, where = connect_baseline(root_der, base)
    out = {
        "kind": kind,
        "file": where,
        "heap_import": h_import,
        "heap_connect": h_connect,
        "modules": iothub_modules(),
        "nodelay": kind != "iothub" and CFG["nodelay"] and NODELAY is not None,
    }
    if CFG.get("handlers"):
        c.disconnect()
        print(json.dumps(out))
        return

    if kind == "iothub":

        def send_a():
            c.send(body, properties=props)

        def send_b():
            c.send(body)

    else:
        # The topics, built once by hand (custom properties sorted by name, as iothub does).
        prefix = "devices/" + CFG["device_id"] + "/messages/events/"
        topic_a = prefix + "&".join(k + "=" + props[k] for k in sorted(props))
        topic_b = prefix

        def send_a():
            c.publish(topic_a, body, qos=1)

        def send_b():
            c.publish(topic_b, body, qos=1)

    for _ in range(CFG["warmup"]):
        send_a()
        send_b()
    m = CFG["garbage_n"]
    out["garbage_a"] = garbage(send_a, m)
    out["garbage_b"] = garbage(send_b, m)
    out["heap_sent"] = heap() - base  # steady state: what the first sends loaded counts

    n = CFG["n"]
    dt = [0] * n  # preallocated: the loop itself stores small ints only
    ticks_us, ticks_diff = time.ticks_us, time.ticks_diff
    gc.collect()
    mark("loop_start", {"pid": own_pid()})
    for i in range(n):
        t = ticks_us()
        send_a()
        dt[i] = ticks_diff(ticks_us(), t)
    mark("loop_end")
    dt.sort()
    out["wall_us_median"] = (dt[(n - 1) // 2] + dt[n // 2]) / 2
    out["wall_us_mean"] = sum(dt) / n
    out["wall_us_p90"] = dt[n * 9 // 10]
    out["sent"] = 2 * CFG["warmup"] + 2 * m + n
    c.disconnect()
    print(json.dumps(out))


main()
