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
    """DeviceClient for the emulator described by cfg (profile, port, root, auth...)."""
    if cls is None:
        cls = iothub.DeviceClient
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
