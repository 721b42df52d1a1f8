# Device side of the TLS tests: runs on the MicroPython unix port (via host_tests/mpyrun.py).
# Builds a context with iothub.tls_context, connects with a plain socket and prints one JSON
# line: what was configured, what was negotiated, or the error (type, message, reason).
#
#   import tls_client; tls_client.main({"port": 1234, "host": "hub.azure-devices.net", ...})
#
# Config keys: port, host (server_hostname), profile, roots (list of file paths, DER or PEM),
# cert, key (file paths), mfl, require_mfl, send (text to send after the handshake),
# expect (bytes to read back), timeout (seconds, default 10).
import json
import select
import socket
import time


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _result(**kw):
    print(json.dumps(kw))


def main(cfg):
    import iothub
    import iothub.tlsprofile as tlsprofile

    kw = {}
    if cfg.get("roots") is not None:
        kw["roots"] = [_read(p) for p in cfg["roots"]]
    if cfg.get("cert"):
        kw["cert"] = _read(cfg["cert"])
        kw["key"] = _read(cfg["key"])
    if cfg.get("mfl"):
        kw["max_fragment_length"] = cfg["mfl"]
    if cfg.get("require_mfl"):
        kw["require_mfl"] = True
    t0 = time.ticks_ms()
    try:
        ctx = iothub.tls_context(cfg.get("profile", "ecc"), **kw)
    except Exception as e:
        _result(stage="context", ok=False, error=type(e).__name__, message=str(e))
        return
    raw = socket.socket()
    raw.settimeout(cfg.get("timeout", 10))
    raw.connect(socket.getaddrinfo("127.0.0.1", cfg["port"])[0][-1])
    try:
        sock = ctx.wrap_socket(raw, server_hostname=cfg["host"])
    except Exception as e:
        raw.close()
        _result(
            stage="handshake",
            ok=False,
            error=type(e).__name__,
            message=str(e),
            reason=getattr(e, "reason", None),
            code=getattr(e, "code", None),
            configured=ctx.iothub_info,
        )
        return
    ms = time.ticks_diff(time.ticks_ms(), t0)
    info = tlsprofile.tls_info(sock, ctx)
    got = b""
    if cfg.get("send"):
        sock.write(cfg["send"].encode())
        want = len(cfg.get("expect", ""))
        sock.setblocking(False)
        p = select.poll()
        p.register(sock, select.POLLIN)
        deadline = time.ticks_add(time.ticks_ms(), int(cfg.get("timeout", 10) * 1000))
        while len(got) < want and time.ticks_diff(deadline, time.ticks_ms()) > 0:
            p.poll(100)
            chunk = sock.read(want - len(got))
            if chunk:
                got += chunk
            elif chunk == b"":
                break
    sock.close()
    _result(
        stage="done",
        ok=True,
        cipher=info.cipher,
        version=info.version,
        info=info.as_dict(),
        configured=ctx.iothub_info,
        received=got.decode(),
        ms=ms,
    )
