# Device-side DPS test driver (runs on the unix port). The test passes CFG, a dict:
#   id_scope, registration_id, dps_port, profile, root (DER path), and one credential:
#   symmetric_key | group_key | cert + key (PEM paths); optional: endpoint, payload, model_id,
#   timeout_ms, min_retry_s, max_retry_s, key_name, hub_port, hub_root, hub_profile, state.
# Every entry point prints one JSON line (the last line of stdout) describing the outcome.
import json

from iothub.clock import ticks_diff, ticks_ms
from iothub.provisioning import (
    ProvisioningClient,
    ProvisioningResult,
    Reprovision,
    provision_or_load,
)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def log(level, text):
    print("LOG %d %s" % (level, text))


def pclient(cfg):
    kw = {
        "host": "127.0.0.1",
        "port": cfg["dps_port"],
        "tls": cfg["profile"],
        "roots": [read(cfg["root"])],
        "log": log,
    }
    for k in (
        "endpoint",
        "payload",
        "model_id",
        "timeout_ms",
        "min_retry_s",
        "max_retry_s",
        "key_name",
        "transport",
        "proxy",
    ):
        if k in cfg:
            kw[k] = cfg[k]
    for k in ("symmetric_key", "group_key"):
        if k in cfg:
            kw[k] = cfg[k]
    if "cert" in cfg:
        kw["cert"] = read(cfg["cert"])
        kw["key"] = read(cfg["key"])
    return ProvisioningClient(cfg["id_scope"], cfg["registration_id"], **kw)


def describe_error(e):
    d = {"type": type(e).__name__, "text": str(e)}
    for k in ("status", "error_code", "message", "tracking_id", "retriable", "code", "reason"):
        v = getattr(e, k, None)
        if v is None or isinstance(v, (str, int, bool)):
            d[k] = v
    return d


def emit(out):
    print(json.dumps(out))


def register(cfg):
    """One register(); prints {ok, result | error, elapsed_ms, stats}."""
    out = {}
    t0 = ticks_ms()
    try:
        pc = pclient(cfg)
        r = pc.register()
        out["ok"] = True
        out["result"] = r.as_dict()
        out["device_key_derived"] = pc.device_key if "group_key" in cfg else None
        out["stats"] = pc.stats
    except Exception as e:
        out["ok"] = False
        out["error"] = describe_error(e)
        out["stats"] = getattr(locals().get("pc"), "stats", None)
    out["elapsed_ms"] = ticks_diff(ticks_ms(), t0)
    emit(out)


def hub_client(cfg, result):
    kw = {"host": "127.0.0.1", "port": cfg["hub_port"], "log": log, "auto_reconnect": False}
    if "hub_profile" in cfg:
        kw["tls"] = cfg["hub_profile"]
        kw["roots"] = [read(cfg["hub_root"])]
    return result.client(**kw)


def boot(cfg):
    """What a device does at power-on: the saved assignment or DPS, then the assigned hub,
    then telemetry. Prints {ok, source, result, sent, ...}."""
    out = {"ok": False}
    try:
        pc = pclient(cfg)
        result = provision_or_load(pc, cfg["state"], force=cfg.get("force", False))
        out["source"] = result.source
        out["result"] = result.as_dict()
        client = hub_client(cfg, result)
        client.connect()
        out["tls"] = client.tls_info()["cipher"]
        client.send({"boot": cfg.get("boot_no", 1), "source": result.source}, message_id="boot")
        client.disconnect()
        out["ok"] = True
    except Exception as e:
        out["error"] = describe_error(e)
    emit(out)


def reprovision(cfg):
    """Saved assignment -> hub refuses the identity -> policy says re-provision -> DPS ->
    connect again -> telemetry. Prints the steps."""
    steps = []
    out = {"ok": False, "steps": steps}
    pc = pclient(cfg)
    policy = Reprovision(max_failures=cfg.get("max_failures", 10))
    result = provision_or_load(pc, cfg["state"])
    steps.append("loaded:" + result.source)
    try:
        for _ in range(3):
            client = hub_client(cfg, result)
            policy.watch(client)
            try:
                client.connect()
            except Exception as e:
                steps.append("connect failed: %s" % type(e).__name__)
                if policy.failed(e):
                    steps.append("reprovision: " + policy.reason)
                    result = provision_or_load(pc, cfg["state"], force=True)
                    policy.reset()
                    steps.append("provisioned:" + result.source)
                continue
            steps.append("connected")
            client.send({"after": "reprovision"}, message_id="reprovisioned")
            client.disconnect()
            out["ok"] = True
            break
    except Exception as e:
        out["error"] = describe_error(e)
    emit(out)


def load_only(cfg):
    """ProvisioningResult.load without DPS: prints what was found."""
    r = ProvisioningResult.load(cfg["state"], pclient(cfg))
    emit({"found": r is not None, "result": r.as_dict() if r else None})
