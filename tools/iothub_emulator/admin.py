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

Loopback alone does not keep a web page in the developer's browser out (cross-site requests,
DNS rebinding), and the API hands out device keys. So every request must:
  - name a loopback host in `Host` (127.0.0.1, localhost or [::1]): a rebound DNS name is refused;
  - carry no `Origin` header: browsers add it to cross-site requests, the CLI never does;
  - carry `Authorization: Bearer <token>`, the random token `serve` writes to
    <state>/admin-token (mode 0600) and prints;
  - for POST, be JSON (`Content-Type: application/json`), which a page cannot send without a
    CORS preflight that this server never answers.
Refusals: 403 (Host, Origin), 401 (token), 415 (Content-Type); they never echo the token.
"""

import base64
import hmac
import json
import secrets
import threading
import urllib.error
import urllib.request
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


TOKEN_FILE = "admin-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")


def new_token():
    return secrets.token_urlsafe(32)


class AdminError(Exception):
    """The admin API refused a request or could not be reached; .status is the HTTP status
    (None when unreachable)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def call(url, token, method, path, body=None, timeout=60):
    """One admin API request (the CLI's and the tests' way in): JSON in, JSON out."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if method == "POST":
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read().decode()).get("error")
        except ValueError:
            msg = str(e)
        raise AdminError(msg, e.code) from None
    except (urllib.error.URLError, OSError) as e:
        raise AdminError(
            "admin API %s not reachable: %s" % (url, getattr(e, "reason", e))
        ) from None


def _host_name(host):
    # "127.0.0.1:8080" -> "127.0.0.1"; "[::1]:8080" -> "[::1]"
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Handler(BaseHTTPRequestHandler):
    server_version = "iothub-emulator-admin"
    emu = None  # set per server class
    token = None  # set per server class

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

    def _refusal(self, method):
        """(status, error) when the request must be refused, else None."""
        host = self.headers.get("Host")
        if host is None or _host_name(host) not in LOOPBACK_NAMES:
            return 403, "Host %r is not a loopback name (DNS rebinding?)" % ((host or "")[:80],)
        if self.headers.get("Origin") is not None:
            return 403, "requests from a web page (with an Origin header) are refused"
        auth = self.headers.get("Authorization") or ""
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            return 401, (
                "missing or wrong admin token: send 'Authorization: Bearer <token>' with the "
                "token from the state directory's %s" % TOKEN_FILE
            )
        if method == "POST":
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return 415, "POST bodies must be JSON (Content-Type: application/json)"
        return None

    def _dispatch(self, method):
        refused = self._refusal(method)
        if refused is not None:
            self.close_connection = True
            return self._reply(refused[0], {"error": refused[1]})
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
    """The admin API on 127.0.0.1:port. token: the bearer token requests must carry (default:
    a new random one, in .token)."""

    def __init__(self, emu, port=0, token=None):
        self.token = token or new_token()
        handler = type("AdminHandler", (_Handler,), {"emu": emu, "token": self.token})
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
