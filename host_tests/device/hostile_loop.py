# Device side of the hostile-hub suite (host_tests/test_hostile_hub.py), run on the unix
# port: a telemetry loop with short timeouts that records every exception escaping a
# public call, how long each call took against its bound, the client's stats and queue,
# and the heap at the start and at the end. run(CFG) prints one line "RESULT {json}".
#
# Phases: "hostile" (n sends, each followed by a poll), then "HOSTILE-DONE" is printed and
# the loop polls until the test creates CFG["flag"] (the hub behaves from then on), then
# "drain": it polls until every queued message is acknowledged (and, with a desired
# handler, the hub's desired patch arrived).
import gc
import json
import sys
import time

import devkit

import iothub

# Public-call exception types allowed to escape (IoTHubError and its subclasses).
ALLOWED = (
    "IoTHubError",
    "TLSError",
    "ProtocolError",
    "ConnectionLost",
    "Timeout",
    "ConnectionRefused",
    "AuthenticationError",
    "StatusError",
)


def qstr_info():
    # "qstr pool: ... n_total_bytes=N": the heap taken by interned names. A name interned
    # during a scenario stays for good and a new pool doubles the last one (7 KB on 64-bit
    # near 620 names): growth, but not a leak of the client's.
    try:
        import micropython

        micropython.qstr_info()
    except (ImportError, AttributeError):
        pass


def _exists(path):
    try:
        open(path).close()
        return True
    except OSError:
        return False


class Recorder:
    def __init__(self, slack_ms):
        self.slack_ms = slack_ms
        self.escaped = []  # "call: Type: message" of every non-IoTHubError exception
        self.over = []  # "call took X ms, bound Y ms"
        self.errors = {}  # call name -> {exception type name: count}
        self.first_error = {}  # call name -> "Type: message" of its first IoTHubError
        self.durations = {}  # call name -> longest duration (ms)
        self.calls = 0

    def call(self, name, bound_ms, fn, *args, **kw):
        self.calls += 1
        t0 = time.ticks_ms()
        result = None
        try:
            result = fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - recording what escapes is the point
            kind = type(e).__name__
            text = "%s: %s" % (kind, str(e)[:160])
            if isinstance(e, iothub.IoTHubError) and kind in ALLOWED:
                d = self.errors.setdefault(name, {})
                d[kind] = d.get(kind, 0) + 1
                self.first_error.setdefault(name, text)
            else:
                self.escaped.append("%s: %s" % (name, text))
        dt = time.ticks_diff(time.ticks_ms(), t0)
        if dt > self.durations.get(name, -1):
            self.durations[name] = dt
        if dt > bound_ms + self.slack_ms:
            self.over.append("%s took %d ms, bound %d ms" % (name, dt, bound_ms))
        return result


def run(cfg):
    timeout = cfg["timeout_ms"]
    poll_ms = cfg["poll_ms"]
    rec = Recorder(cfg.get("slack_ms", 1000))
    hook_calls = []
    hook_count = [0]
    desired = []
    msgs = [0]
    # Modules the client loads on first use, loaded now so the heap figures compare like
    # with like (the hostile phase may be the first to need them).
    for m in cfg.get("preload", ()):
        try:
            __import__(m)
        except ImportError:
            pass
    kw = {}
    if "max_packet" in cfg:
        kw["max_packet"] = cfg["max_packet"]
    c = devkit.client(cfg, **kw)

    def on_error(kind, detail):
        hook_count[0] += 1
        if len(hook_calls) < 20:
            hook_calls.append([str(kind), str(detail)[:200]])

    setattr(c, cfg["hook"], on_error)
    handlers = cfg.get("handlers", ())
    if "message" in handlers:

        def on_message(m):
            msgs[0] += 1
            if cfg.get("handler_raises"):
                raise RuntimeError("application handler failed")

        c.on_message = on_message
    if "method" in handlers:
        c.on_method = lambda name, arg: (200, {"ok": 1})
    if "desired" in handlers:
        c.on_desired = lambda patch, v: desired.append(v)

    rec.call("connect", timeout, c.connect, timeout_ms=timeout)
    # Again: connect() unloads its own code, and topics with it until a send needs it.
    for m in cfg.get("preload", ()):
        try:
            __import__(m)
        except ImportError:
            pass
    mods = set(sys.modules)
    gc.collect()
    heap_start = gc.mem_alloc()
    qstr_info()  # the host subtracts what interned names took meanwhile (never freed)
    print("STARTED", heap_start)

    accepted = []
    n = cfg["n"]
    twin_every = cfg.get("twin_every", 0)
    # poll() may make one bounded connection attempt when a reconnect is due.
    poll_bound = poll_ms + cfg.get("poll_slack_ms", timeout)
    hostile_ms = cfg.get("hostile_ms", 1 << 20)
    t_hostile = time.ticks_ms()
    for i in range(n):
        if i and time.ticks_diff(time.ticks_ms(), t_hostile) > hostile_ms:
            break
        pid = rec.call(
            "send",
            timeout,
            c.send,
            '{"i":%d}' % i,
            message_id=str(i),
            block=False,
        )
        if pid is not None:
            accepted.append(i)
        if twin_every and i % twin_every == 0 and c.is_connected:
            rec.call("get_twin", timeout, c.get_twin, timeout_ms=timeout)
        rec.call("poll", poll_bound, c.poll, poll_ms)
    stats_hostile = dict(c.stats)
    gc.collect()
    heap_hostile = gc.mem_alloc()
    print("HOSTILE-DONE")
    t0 = time.ticks_ms()
    while not _exists(cfg["flag"]) and time.ticks_diff(time.ticks_ms(), t0) < 20000:
        rec.call("poll", poll_bound, c.poll, 100)

    want_desired = "desired" in handlers
    t0 = time.ticks_ms()
    while time.ticks_diff(time.ticks_ms(), t0) < cfg.get("drain_ms", 15000):
        if c.state == "auth_failed":
            rec.call(
                "update_credentials", timeout, c.update_credentials, connection_string=cfg["cs"]
            )
        if c.is_connected and not c.queued and (not want_desired or 3 in desired):
            break
        rec.call("poll", poll_bound, c.poll, 100)
    if cfg.get("twin_at_end") and c.is_connected:
        rec.call("get_twin", timeout, c.get_twin, timeout_ms=timeout)
    # One blocking send proves a live link to the well-behaved hub (the hostile link closed
    # by heal() may still look open until the next read).
    t0 = time.ticks_ms()
    final = None
    while final is None and time.ticks_diff(time.ticks_ms(), t0) < cfg.get("drain_ms", 15000):
        final = rec.call("send", timeout, c.send, '{"final":1}', message_id="final")
        if final is None:
            rec.call("poll", poll_bound, c.poll, 100)
    hook_calls_kinds = [k for k, _ in hook_calls]
    gc.collect()
    heap_drained = gc.mem_alloc()
    for _ in range(3):
        rec.call("poll", poll_bound, c.poll, 100)
    gc.collect()
    heap_end = gc.mem_alloc()
    qstr_info()
    result = {
        "escaped": rec.escaped,
        "over": rec.over,
        "errors": rec.errors,
        "first_error": rec.first_error,
        "durations": rec.durations,
        "calls": rec.calls,
        "accepted": accepted,
        "queued": c.queued,
        "dropped": c.dropped,
        "stats": c.stats,
        "stats_hostile": stats_hostile,
        "state": c.state,
        "connected": c.is_connected,
        "heap_start": heap_start,
        "heap_end": heap_end,
        "heap_hostile": heap_hostile,
        "heap_drained": heap_drained,
        "modules_loaded": sorted(k for k in sys.modules if k not in mods),
        "hook": hook_calls,
        "hook_kinds": hook_calls_kinds,
        "hook_count": hook_count[0],
        "desired": [v if isinstance(v, int) else repr(v) for v in desired],
        "messages": msgs[0],
        "final_acked": final is not None,
    }
    print("RESULT", json.dumps(result))
    rec.call("disconnect", timeout, c.disconnect)
