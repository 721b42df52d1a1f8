"""Loopback admin API of a running emulator: HTTP + JSON on 127.0.0.1, for the CLI and demos.

    GET  /status                         hub host name, port, profile, CA paths
    GET  /devices                        identities (no keys)
    POST /devices   {device_id, key?, x509_thumbprint?, x509_ca?, module_id?}    -> {key}
    POST /c2d       {device_id, payload | payload_b64, properties?, message_id?, correlation_id?} -> {message_id}
    POST /method    {device_id, name, payload?, timeout?, module_id?}            -> {status, payload}
    POST /desired   {device_id, patch, module_id?}                               -> {version}
    POST /writable  {device_id, name, value, component?, module_id?, wait?}      -> {version, status}
    GET  /writable?device_id=D&name=N[&component=C][&module_id=M]               -> status
    POST /command   {device_id, name, component?, payload?, timeout?, module_id?} -> {status, payload}
    GET  /telemetry[?device_id=D][&component=C]  [{..., component, payload (text) or payload_b64}]
    GET  /twin?device_id=D[&module_id=M]
    GET  /events[?since=N]
    GET  /faults ; POST /faults {name: value, ...} ; POST /faults/reset
    POST /drop      {device_id, module_id?}

Errors answer 4xx with {"error": "..."}. Only ever bound to 127.0.0.1.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .hub import HubError
from .registry import RegistryError


def telemetry_json(rec):
    out = dict(rec)
    payload = out.pop("payload")
    try:
        out["payload"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        out["payload"] = None
        out["payload_b64"] = base64.b64encode(payload).decode()
    return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "iothub-emulator-admin"
    emu = None  # set per server class

    def log_message(self, fmt, *args):  # quiet: the CLI prints what matters
        pass

    def _reply(self, code, obj):
        body = json.dumps(obj, default=repr).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        data = json.loads(self.rfile.read(n).decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("request body must be a JSON object")
        return data

    def _dispatch(self, method):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            fn = getattr(
                self, "%s_%s" % (method, url.path.strip("/").replace("/", "_") or "root"), None
            )
            if fn is None:
                return self._reply(404, {"error": "no such endpoint %s %s" % (method, url.path)})
            body = self._body() if method == "POST" else {}
            return self._reply(200, fn(q, body))
        except KeyError as e:
            return self._reply(400, {"error": "missing or unknown field %s" % e})
        except (ValueError, TypeError, HubError, RegistryError) as e:
            return self._reply(400, {"error": str(e)})

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    # -- endpoints --
    def GET_status(self, q, b):
        return self.emu.state_info()

    def GET_devices(self, q, b):
        return self.emu.registry.listing()

    def POST_devices(self, q, b):
        key = self.emu.add_device(
            b["device_id"],
            key=b.get("key"),
            x509_thumbprint=b.get("x509_thumbprint"),
            x509_ca=bool(b.get("x509_ca")),
            module_id=b.get("module_id"),
        )
        return {"key": key}

    def POST_c2d(self, q, b):
        if "payload_b64" in b:
            payload = base64.b64decode(b["payload_b64"])
        else:
            payload = b.get("payload", "")
        mid = self.emu.send_c2d(
            b["device_id"],
            payload,
            b.get("properties"),
            b.get("message_id"),
            b.get("correlation_id"),
        )
        return {"message_id": mid}

    def POST_method(self, q, b):
        status, payload = self.emu.invoke_method(
            b["device_id"],
            b["name"],
            b.get("payload"),
            float(b.get("timeout", 30)),
            b.get("module_id"),
        )
        return {"status": status, "payload": payload}

    def POST_desired(self, q, b):
        return {"version": self.emu.patch_desired(b["device_id"], b["patch"], b.get("module_id"))}

    def GET_telemetry(self, q, b):
        recs = self.emu.telemetry(q.get("device_id"))
        if "component" in q:
            recs = [r for r in recs if r.get("component") == q["component"]]
        return [telemetry_json(r) for r in recs]

    def POST_writable(self, q, b):
        # status: {desired, desired_version, ack, state}; with wait=S, after the device's ack
        dev, name, comp, mod = b["device_id"], b["name"], b.get("component"), b.get("module_id")
        version = self.emu.set_writable(dev, name, b["value"], comp, mod)
        if b.get("wait"):
            try:
                status = self.emu.wait_writable_ack(dev, name, comp, version, float(b["wait"]), mod)
            except TimeoutError:
                status = self.emu.writable_status(dev, name, comp, mod)
        else:
            status = self.emu.writable_status(dev, name, comp, mod)
        return {"version": version, "status": status}

    def GET_writable(self, q, b):
        return self.emu.writable_status(
            q["device_id"], q["name"], q.get("component"), q.get("module_id")
        )

    def POST_command(self, q, b):
        status, payload = self.emu.invoke_command(
            b["device_id"],
            b["name"],
            b.get("payload"),
            b.get("component"),
            float(b.get("timeout", 30)),
            b.get("module_id"),
        )
        return {"status": status, "payload": payload}

    def GET_twin(self, q, b):
        return self.emu.twin(q["device_id"], q.get("module_id"))

    def GET_events(self, q, b):
        evs = self.emu.events[int(q.get("since", 0)) :]
        return [list(e) for e in evs]

    def GET_faults(self, q, b):
        return self.emu.faults.as_dict()

    def POST_faults(self, q, b):
        self.emu.faults.set(**b)
        return self.emu.faults.as_dict()

    def POST_faults_reset(self, q, b):
        self.emu.faults.reset()
        return self.emu.faults.as_dict()

    def POST_drop(self, q, b):
        return {"dropped": self.emu.drop(b["device_id"], b.get("module_id"))}


class AdminServer:
    def __init__(self, emu, port=0):
        handler = type("AdminHandler", (_Handler,), {"emu": emu})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = None

    def start(self):
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="admin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
