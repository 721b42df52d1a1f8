# Device side of tools/bench/bench_aio.py, run by the MicroPython unix port (not CPython).
#
#   micropython device_aio_bench.py MODE CONFIG.json
#
# MODE "stall": iothub.aio's client and a coroutine that ticks every 10 ms share one loop;
#   the ticker records the longest gap between two of its ticks in each phase: idle (the
#   loop alone, the reference), connect, CFG["sends"] QoS 1 sends (one after the other),
#   get_twin + update_reported, and a reconnect: the script prints "MARK drop", the host
#   drops the connection at the emulator and answers, and the phase lasts until the client
#   reports "connected" again. Waiting for the answer blocks the loop: the phase starts after it.
# MODE "throughput": CFG["kind"] "blocking" or "aio"; for each window in CFG["windows"], CFG["n"]
#   QoS 1 messages with at most `window` unacknowledged at a time, CFG["repeat"] times; messages
#   per second from time.ticks_us around each run, between the marks "run" and "done" (the host
#   reads the process's CPU time there: /proc/<pid>/schedstat). Blocking, window 1: send(); window w > 1:
#   send(block=False) while fewer than w are queued, else poll(). aio, window 1: await send()
#   one after the other; window w: asyncio.gather of w coroutines, each awaiting send() in turn.
# MODE "heap": CFG["kind"] "blocking" or "aio": gc.mem_alloc after gc.collect, minus the heap
#   before any import, after the imports (aio: asyncio's share too) and after connect().
# The last stdout line is a JSON object with the results.
#
# Nothing from the clients is imported at module level: the imports are measured.
import gc
import json
import sys
import time

with open(sys.argv[2]) as _f:  # a file: long argv elements crash the unix port
    CFG = json.loads(_f.read())

# The package must come from MICROPYPATH (.mpy, as the host chose), not this directory.
_HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else ""
while _HERE in sys.path:
    sys.path.remove(_HERE)

TICK_MS = 10


def heap():
    gc.collect()
    return gc.mem_alloc()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def options():
    from iothub.backoff import Backoff

    return dict(
        tls=CFG["profile"],
        roots=[read(CFG["root"])],
        host="127.0.0.1",
        port=CFG["port"],
        backoff=Backoff(*CFG["backoff"]),
    )


def own_pid():
    with open("/proc/self/stat") as f:
        return int(f.read().split(" ", 1)[0])


def mark(name, data=None):
    print("MARK %s %s" % (name, json.dumps(data or {})))
    sys.stdin.readline()  # the host answers once it has acted


class Ticker:
    """A coroutine that ticks every TICK_MS and keeps, per phase, the longest gap between two
    ticks (us) and the number of ticks."""

    def __init__(self):
        self.last = time.ticks_us()
        self.longest = 0
        self.ticks = 0
        self.running = True

    def phase(self):
        # a phase starts now: the gap to the first tick counts from here
        self.last = time.ticks_us()
        self.longest = 0
        self.ticks = 0

    def result(self, t0):
        # the gap from the last tick to the end of the phase counts too
        now = time.ticks_us()
        longest = max(self.longest, time.ticks_diff(now, self.last))
        return {
            "longest_gap_ms": longest / 1000,
            "ticks": self.ticks,
            "wall_ms": time.ticks_diff(now, t0) / 1000,
        }

    async def run(self):
        import asyncio

        while self.running:
            await asyncio.sleep_ms(TICK_MS)
            now = time.ticks_us()
            gap = time.ticks_diff(now, self.last)
            self.last = now
            if gap > self.longest:
                self.longest = gap
            self.ticks += 1


async def stall():
    import asyncio

    from iothub.aio import DeviceClient

    out = {"phases": {}}
    ticker = Ticker()
    task = asyncio.create_task(ticker.run())
    states = []
    c = DeviceClient.from_connection_string(CFG["cs"], **options())
    c.on_connection_state = lambda state, detail: states.append(state)
    body = CFG["body"].encode()

    async def phase(name, coro_fn):
        ticker.phase()
        t0 = time.ticks_us()
        await coro_fn()
        out["phases"][name] = ticker.result(t0)

    async def idle():
        await asyncio.sleep_ms(CFG["idle_ms"])

    async def connect():
        await c.connect()

    async def sends():
        for _ in range(CFG["sends"]):
            await c.send(body)

    async def twin():
        await c.get_twin()
        await c.update_reported({"bench": CFG["sends"]})

    async def reconnect():
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < CFG["reconnect_ms"]:
            if "connected" in states:
                return
            await asyncio.sleep_ms(5)
        raise RuntimeError("no reconnect within %d ms: states %r" % (CFG["reconnect_ms"], states))

    await phase("idle", idle)
    await phase("connect", connect)
    await phase("sends", sends)
    await phase("twin", twin)
    if c.queued:
        raise RuntimeError("%d messages still queued after the sends" % c.queued)
    states.clear()
    mark("drop")  # blocks the loop until the host has dropped the connection
    await phase("reconnect", reconnect)
    out["states"] = states
    out["stats"] = c.stats
    await c.disconnect()
    ticker.running = False
    await task
    return out


def throughput():
    kind = CFG["kind"]
    body = CFG["body"].encode()
    n, repeat = CFG["n"], CFG["repeat"]
    out = {"kind": kind, "runs": {}}
    if kind == "blocking":
        from iothub import DeviceClient

        c = DeviceClient.from_connection_string(CFG["cs"], **options())
        c.connect()
        for _ in range(CFG["warmup"]):
            c.send(body)
        for w in CFG["windows"]:
            rates = []
            for _ in range(repeat):
                mark("run", {"pid": own_pid(), "w": w})
                t0 = time.ticks_us()
                if w == 1:
                    for _ in range(n):
                        c.send(body)
                else:
                    left = n
                    while left or c.queued:
                        if left and c.queued < w:
                            c.send(body, block=False)
                            left -= 1
                        else:
                            c.poll(0 if left else 1)
                dt = time.ticks_diff(time.ticks_us(), t0)
                mark("done", {"w": w})
                rates.append(n * 1e6 / dt)
            out["runs"][str(w)] = rates
        out["stats"] = c.stats
        out["queued"] = c.queued
        c.disconnect()
        return out

    import asyncio

    from iothub.aio import DeviceClient

    async def main():
        c = DeviceClient.from_connection_string(CFG["cs"], **options())
        await c.connect()
        for _ in range(CFG["warmup"]):
            await c.send(body)

        async def worker(k):
            for _ in range(k):
                await c.send(body)

        for w in CFG["windows"]:
            rates = []
            for _ in range(repeat):
                mark("run", {"pid": own_pid(), "w": w})
                t0 = time.ticks_us()
                if w == 1:
                    for _ in range(n):
                        await c.send(body)
                else:
                    share = [n // w + (1 if i < n % w else 0) for i in range(w)]
                    await asyncio.gather(*[worker(k) for k in share])
                dt = time.ticks_diff(time.ticks_us(), t0)
                mark("done", {"w": w})
                rates.append(n * 1e6 / dt)
            out["runs"][str(w)] = rates
        out["stats"] = c.stats
        out["queued"] = c.queued
        await c.disconnect()

    asyncio.run(main())
    return out


def heap_figures():
    kind = CFG["kind"]
    out = {"kind": kind}
    base = heap()
    if kind == "blocking":
        from iothub import DeviceClient

        out["heap_import"] = heap() - base
        c = DeviceClient.from_connection_string(CFG["cs"], **options())
        c.connect()
        out["heap_connect"] = heap() - base
        out["file"] = getattr(sys.modules["iothub.client"], "__file__", "?")
        out["modules"] = sorted(k for k in sys.modules if k.startswith("iothub"))
        c.disconnect()
        return out

    import asyncio

    out["heap_asyncio"] = heap() - base
    from iothub.aio import DeviceClient

    out["heap_import"] = heap() - base
    out["client_loaded_by_import"] = "iothub.client" in sys.modules

    async def main():
        c = DeviceClient.from_connection_string(CFG["cs"], **options())
        await c.connect()
        out["heap_connect"] = heap() - base
        out["modules"] = sorted(k for k in sys.modules if k.startswith("iothub"))
        await c.disconnect()

    asyncio.run(main())
    out["file"] = getattr(sys.modules["iothub.aio"], "__file__", "?")
    return out


def main():
    mode = sys.argv[1]
    if mode == "stall":
        import asyncio

        out = asyncio.run(stall())
    elif mode == "throughput":
        out = throughput()
    elif mode == "heap":
        out = heap_figures()
    else:
        raise SystemExit("unknown mode %r" % mode)
    print(json.dumps(out))


main()
