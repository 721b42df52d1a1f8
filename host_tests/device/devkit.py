# Device-side test helpers (run on the unix port): build clients from the test's CFG dict.
import iothub


def log_printer(prefix="LOG"):
    def log(level, text):
        print("%s %d %s" % (prefix, level, text))

    return log


def read(path):
    with open(path, "rb") as f:
        return f.read()


def aio_client(cfg, **kw):
    """iothub.aio.DeviceClient for the emulator described by cfg (see client())."""
    from iothub.aio import DeviceClient

    return client(cfg, DeviceClient, **kw)


def client(cfg, cls=None, **kw):
    """DeviceClient for the emulator described by cfg (profile, port, root, auth...): `cls`
    when given; else by cfg["client_kind"]: the blocking client (default), or for "aio"
    iothub.aio's behind the blocking API (SyncAio), so one device script drives either."""
    common = dict(tls=cfg["profile"], roots=[read(cfg["root"])], host="127.0.0.1", port=cfg["port"])
    if cfg.get("verbose"):
        common["log"] = log_printer()
    for k in (
        "keepalive",
        "sas_ttl",
        "timeout_ms",
        "model_id",
        "queue_size",
        "queue_bytes",
        "auto_reconnect",
        "transport",
        "proxy",
    ):
        if k in cfg:
            common[k] = cfg[k]
    if "backoff" in cfg:
        from iothub.backoff import Backoff

        common["backoff"] = Backoff(*cfg["backoff"])
    common.update(kw)
    if cls is not None:
        return _make(cls, cfg, common)
    if cfg.get("client_kind") == "aio":
        from iothub.aio import DeviceClient

        return SyncAio(_make(DeviceClient, cfg, common))
    return _make(iothub.DeviceClient, cfg, common)


def _make(cls, cfg, common):
    if "cs" in cfg:
        return cls.from_connection_string(cfg["cs"], **common)
    return cls.from_x509(
        cfg["hostname"],
        cfg["device_id"],
        read(cfg["cert"]),
        read(cfg["key"]),
        module_id=cfg.get("module_id"),
        **common,
    )


async def _sleep(ms):
    import asyncio

    await asyncio.sleep_ms(ms)


class SyncAio:
    """The blocking client's API over an iothub.aio.DeviceClient, so one device script
    drives either client. A method of the aio client that returns a coroutine is run with
    asyncio.run(); MicroPython's asyncio.run leaves the other tasks in the queue, so the
    client's background task (keepalive, reads, reconnects) runs during every call here
    and between calls it waits, as a busy application would make it. poll(ms) runs the
    loop for ms. Attributes (handlers, state, queued, stats...) go to the aio client."""

    def __init__(self, aio):
        object.__setattr__(self, "aio", aio)

    def poll(self, timeout_ms=0):
        import asyncio

        asyncio.run(_sleep(timeout_ms or 0))

    def __getattr__(self, name):
        value = getattr(self.aio, name)
        if name.startswith("on_") or not callable(value):
            return value  # a handler, a property

        def call(*args, **kw):
            r = value(*args, **kw)
            if hasattr(r, "send") and hasattr(r, "throw"):  # a coroutine
                import asyncio

                return asyncio.run(r)
            return r

        return call

    def __setattr__(self, name, value):
        setattr(self.aio, name, value)
