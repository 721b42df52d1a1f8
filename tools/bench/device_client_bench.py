# Device side of tools/bench/bench_client.py, run by the MicroPython unix port (not CPython).
#
#   micropython device_client_bench.py MODE CONFIG.json
#
# MODE imports: GC heap retained by importing the package and a client (no network).
# MODE modules: GC heap retained by each module of the package, leaves first.
# MODE wire:    one QoS 1 telemetry message through DeviceClient, then the same message written
#               the way umqtt.simple writes it; prints "MARK name {...}" and waits for a line
#               on stdin at each mark, so the host can sample the hub's wire counters there.
# MODE sends:   heap after gc.collect() every `every` QoS 1 sends on one connection, and the
#               garbage each kind of call leaves (gc.mem_alloc delta with the collector off).
# The last stdout line is a JSON object with the results.
#
# Nothing from iothub is imported at module level: the imports mode measures the import.
import gc
import json
import sys

MODE = sys.argv[1]
# The config comes in a file: this unix port aborts ("FATAL: uncaught NLR") on any argv
# element of 256 characters or more.
with open(sys.argv[2]) as _f:
    CFG = json.loads(_f.read())


def heap():
    gc.collect()
    return gc.mem_alloc()


def mark(name, data=None):
    print("MARK %s %s" % (name, json.dumps(data or {})))
    sys.stdin.readline()  # the host answers once it has sampled its counters


def read(path):
    with open(path, "rb") as f:
        return f.read()


def iothub_modules():
    return sorted(k for k in sys.modules if k == "iothub" or k.startswith("iothub."))


def load_connect_modules(iothub):
    # What from_connection_string (the parser) and connect() (the TLS profile, and what
    # building a context loads lazily) add to iothub.client; the context itself is dropped.
    from iothub import connstr  # noqa: F401

    ctx = iothub.tls_context(CFG["profile"], roots=[read(CFG["root"])])
    del ctx


def make_client(iothub, **kw):
    return iothub.DeviceClient.from_connection_string(
        CFG["cs"],
        tls=CFG["profile"],
        roots=[read(CFG["root"])],
        host="127.0.0.1",
        port=CFG["port"],
        **kw,
    )


def body():
    return CFG["body"].encode()


def props():
    return CFG["props"]


# ---- imports --------------------------------------------------------------------------------


def mode_imports():
    base = heap()
    import iothub

    h_pkg = heap()
    import iothub.client  # noqa: F401 - what DeviceClient needs (and its dependencies)

    h_client = heap()
    mods_client = iothub_modules()
    load_connect_modules(iothub)
    h_connect = heap()
    c = iothub.DeviceClient.from_connection_string(CFG["cs"], tls=CFG["profile"])
    # What load_connect_modules() loaded goes again: the client's figure is what it keeps,
    # with whatever its construction leaves loaded, over iothub.client alone.
    for n in ("connstr", "tlsprofile", "tlsconf", "tlsdesc", "roots", "pem"):
        if sys.modules.pop("iothub." + n, None) is not None and hasattr(iothub, n):
            delattr(iothub, n)
    h_object = heap()
    out = {
        "file": iothub.__file__ if hasattr(iothub, "__file__") else "?",
        "client_file": getattr(sys.modules["iothub.client"], "__file__", "?"),
        "package": h_pkg - base,
        "client": h_client - base,
        "connect": h_connect - base,
        "object": h_object - h_client,
        "modules_client": mods_client,
        "modules_all": iothub_modules(),
        "total_heap": gc.mem_alloc() + gc.mem_free(),
    }
    del c
    print(json.dumps(out))


def mode_modules():
    # Heap kept by each module, imported leaves first (CFG["order"]): each delta is that
    # module alone, its package dependencies being loaded already. After each, "QSTR name"
    # and micropython.qstr_info()'s line: the host takes out the qstr pool that an import
    # happened to grow (pools double in size: a step is not that module's own cost).
    import iothub  # noqa: F401

    try:
        from micropython import qstr_info
    except ImportError:
        qstr_info = None
    out = {}
    for name in [None] + CFG["order"]:
        if name is not None:
            h = heap()
            __import__("iothub." + name)
            out[name] = heap() - h
        if qstr_info is not None:
            print("QSTR %s" % name)
            qstr_info()
    print(json.dumps(out))


# ---- wire -----------------------------------------------------------------------------------


def _link_counters(link):
    return {"out": link.bytes_out, "in": link.bytes_in, "writes": link.writes}


def _read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.read(n - len(out))
        if not chunk:
            raise OSError("connection closed after %d of %d bytes" % (len(out), n))
        out += chunk
    return out


def _umqtt_style_publish(sock, topic, payload, pid):
    # The write pattern of micropython-lib umqtt.simple MQTTClient.publish() (>= 1.4) for
    # QoS 1: fixed header, topic length, topic, packet id, payload -- five writes, so five
    # TLS records (micropython/micropython-lib, micropython/umqtt.simple/umqtt/simple.py).
    # Written here from the MQTT 3.1.1 packet layout, not copied.
    t = topic.encode()
    rem = 2 + len(t) + 2 + len(payload)
    hdr = bytearray([0x32])
    while True:
        d = rem & 0x7F
        rem >>= 7
        hdr.append(d | 0x80 if rem else d)
        if not rem:
            break
    writes = 0
    for part in (hdr, bytes([len(t) >> 8, len(t) & 0xFF]), t, bytes([pid >> 8, pid & 0xFF])):
        sock.write(part)
        writes += 1
    sock.write(payload)
    writes += 1
    return len(hdr) + 2 + len(t) + 2 + len(payload), writes


def mode_wire():
    import socket

    import iothub
    import iothub.client  # noqa: F401 - loaded before h0: the delta is the client's state
    from iothub import clock, mqttconn, topics

    load_connect_modules(iothub)
    preloaded = iothub_modules()
    payload = body()
    h0 = heap()
    c = make_client(iothub)
    c.connect()
    h1 = heap()
    link = c._s.link
    topic = topics.telemetry_topic(c.device_id, None, props())
    mark("ours_before", {"link": _link_counters(link), "cipher": list(c.tls_info()["cipher"])})
    c.send(payload, properties=props())
    mark("ours_after", {"link": _link_counters(link)})
    mods = iothub_modules()
    c.disconnect()

    # Baseline: same context configuration, same topic and payload, umqtt.simple's writes.
    cs = iothub.parse_connection_string(CFG["cs"])
    root = read(CFG["root"])
    h4 = heap()
    ctx = iothub.tls_context(CFG["profile"], roots=[root])
    h5 = heap()  # one more context, every module already loaded
    raw = socket.socket()
    raw.settimeout(20)
    raw.connect(socket.getaddrinfo("127.0.0.1", CFG["port"])[0][-1])
    h2 = heap()
    sock = ctx.wrap_socket(raw, server_hostname=cs["HostName"])
    h3 = heap()  # a TLS session's share of the GC heap (mbedTLS buffers are not in it)
    uri = iothub.device_resource_uri(cs["HostName"], cs["DeviceId"])
    token = iothub.sas_token(uri, cs["SharedAccessKey"], clock.unix_time() + 3600)
    buf = bytearray(1024)
    n = mqttconn.encode_connect(
        buf,
        topics.client_id(cs["DeviceId"]),
        topics.username(cs["HostName"], cs["DeviceId"]),
        token,
        240,
        False,
    )
    sock.write(memoryview(buf)[:n])
    connack = _read_exact(sock, 4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise OSError("baseline CONNECT refused: %r" % (connack,))
    mark("base_before")
    size, writes = _umqtt_style_publish(sock, topic, payload, 1)
    puback = _read_exact(sock, 4)
    if puback != b"\x40\x02\x00\x01":
        raise OSError("baseline: expected PUBACK for packet id 1, got %r" % (puback,))
    mark("base_after", {"publish": size, "writes": writes, "puback": len(puback)})
    sock.write(b"\xe0\x00")
    sock.close()
    print(
        json.dumps(
            {
                "topic": topic,
                "topic_len": len(topic),
                "body_len": len(payload),
                "heap_connected": h1 - h0,
                "heap_tls_session": h3 - h2,
                "heap_tls_context": h5 - h4,
                "modules_preloaded": preloaded,
                "modules_connected": mods,
            }
        )
    )


# ---- sends ----------------------------------------------------------------------------------


def _garbage(fn, n):
    # Bytes allocated by n calls of fn, collector off (the heap is big enough for this).
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


def mode_sends():
    import time

    import iothub
    from iothub import clientrun, sas, topics

    payload = body()
    p = props()
    c = make_client(iothub)
    c.connect()

    def send1():  # QoS 1, returns once the PUBACK is in
        c.send(payload, properties=p)

    for _ in range(CFG["warmup"]):
        send1()
    n = CFG["n"]
    every = CFG["every"]
    heaps = [0] * (n // every + 1)  # preallocated: the samples must not grow the heap
    gc.collect()
    heaps[0] = gc.mem_alloc()
    t0 = time.ticks_ms()
    for i in range(1, n + 1):
        send1()
        if i % every == 0:
            gc.collect()
            heaps[i // every] = gc.mem_alloc()
    ms = time.ticks_diff(time.ticks_ms(), t0)

    m = CFG["garbage_n"]
    dev = c.device_id
    s = c._s
    own = topics.telemetry_topic(dev, None, None)
    out = {
        "samples": [[i * every, h] for i, h in enumerate(heaps)],
        "ms_per_send": ms / n,
        "queued": c.queued,
        "garbage": {
            "send_qos1": _garbage(send1, m),
            "send_qos0": _garbage(lambda: c.send(payload, properties=p, qos=0), m),
            "telemetry_topic": _garbage(lambda: topics.telemetry_topic(dev, None, p), m),
            "events_prefix": _garbage(lambda: topics.telemetry_topic(dev, None), m),
            "items": _garbage(lambda: topics._bag([], p, True), m),
            "quote": _garbage(lambda: sas.quote("bme280"), m),
            "props_size": _garbage(lambda: clientrun.props_size(p, None), m),
            "session_publish": _garbage(lambda: s.publish(own, payload), m),
            "poll_idle": _garbage(lambda: c.poll(0), m),
        },
    }
    c.poll(100)
    c.disconnect()
    print(json.dumps(out))


MODES = {"imports": mode_imports, "modules": mode_modules, "wire": mode_wire, "sends": mode_sends}
MODES[MODE]()
