"""The local IoT Hub emulator: the TLS endpoint (tlsserver.py, test PKI in pki.py) with the hub
service (hub.py) as its connection handler, a persisted registry, and the service-side API.

    from iothub_emulator import Emulator
    with Emulator(state_dir) as emu:
        key = emu.add_device("dev1")
        cs = emu.connection_string("dev1")      # ...;GatewayHostName=127.0.0.1 (dial emu.port)
        ... device connects, sends ...
        emu.wait_telemetry(1, "dev1")

Services are kept apart from the endpoint: a DPS service can get its own TLSEndpoint (own port and
host name) with a handler built on the same session.Link loop.
"""

import os
import time

from .faults import Faults
from .hub import Hub
from .registry import Registry
from .tlsserver import ServedEndpoint

STATE_FILE = "emulator.json"  # what a running `serve` writes for the CLI: ports, URLs, CA paths


class Emulator(ServedEndpoint):
    def __init__(
        self,
        state_dir,
        profile="ecc",
        host="127.0.0.1",
        port=0,
        hub_name="emulated-hub",
        clock=time.time,
        *,
        pki=None,
        ws_port=None,
    ):
        from .pki import TestPKI

        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.profile = profile
        self.host = host
        self._want_port = port
        self._want_ws_port = ws_port  # None: no MQTT over WebSockets; 0: any free port
        self.clock = clock
        self.pki = pki or TestPKI.load_or_create(self.state_dir, hub_name)
        self.hostname = self.pki.hub_hostname
        self.registry = Registry(self.state_dir)
        self.faults = Faults()
        self.hub = Hub(self.hostname, self.registry, self.faults, clock, self.pki.device_ca_der)
        from .pnp import PnPService

        self.pnp = PnPService(self.hub)
        self.endpoint = None
        self.admin = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self):
        from .tlsserver import TLSEndpoint

        self.endpoint = TLSEndpoint(
            self.pki, self.profile, self.host, self._want_port, handler=self.hub.handle, name="hub"
        ).start()
        self._want_port = self.endpoint.port  # restart() comes back on the same port
        self._start_ws(self.hub.handle, "hub-ws")
        return self

    def stop(self):
        if self.admin is not None:
            self.admin.stop()
            self.admin = None
            try:
                os.remove(os.path.join(self.state_dir, "admin-token"))
            except OSError:
                pass
        self._stop_ws()
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None

    def restart(self):
        """Fault: the hub goes away (every connection dropped) and comes back on the same port.
        Registry, twins, queued C2D and persistent sessions survive, as on a real hub."""
        self._stop_ws()
        if self.endpoint is not None:
            self.endpoint.stop()
        self.hub.event(None, "restart", None)
        return self.start()

    def start_admin(self, port=0):
        """Serve the loopback admin API (HTTP + JSON on 127.0.0.1). Returns its URL. Requests
        need the bearer token in `admin_token`, also written to <state>/admin-token (0600)."""
        from .admin import TOKEN_FILE, AdminServer
        from .files import write_private

        self.admin = AdminServer(self, port).start()
        write_private(os.path.join(self.state_dir, TOKEN_FILE), self.admin.token + "\n")
        return self.admin.url

    @property
    def admin_token(self):
        return self.admin.token if self.admin is not None else None

    def admin_call(self, method, path, body=None, timeout=60):
        """One request to this emulator's admin API, as the CLI sends it."""
        from .admin import call

        return call(self.admin.url, self.admin.token, method, path, body, timeout)

    # ---- endpoint facts ---------------------------------------------------------------------

    @property
    def events(self):
        """[(time, identity, event, detail)], e.g. ("connect", {...}), ("connack", rc), ("disconnect", reason)."""
        with self.hub.lock:
            return list(self.hub.events)

    # ---- registry ---------------------------------------------------------------------------

    def add_device(
        self, device_id, *, key=None, x509_thumbprint=None, x509_ca=False, module_id=None
    ):
        """Register a device (or module). key=None with no X.509 option generates a key and
        returns it; otherwise returns None."""
        return self.registry.add(device_id, key, x509_thumbprint, x509_ca, module_id)

    def add_policy(self, name, key=None):
        """Hub-level shared access policy with DeviceConnect: tokens with skn=name and this key
        may connect any device. Returns the generated key (if key is None)."""
        return self.registry.add_policy(name, key)

    def device_key(self, device_id, module_id=None):
        entry = self.registry.get(device_id, module_id)
        return entry.get("key") if entry else None

    def connection_string(self, device_id, module_id=None, gateway=True):
        entry = self.registry.get(device_id, module_id)
        if entry is None:
            raise KeyError("unknown identity %r" % device_id)
        parts = ["HostName=" + self.hostname, "DeviceId=" + device_id]
        if module_id:
            parts.append("ModuleId=" + module_id)
        if entry["auth"] == "sas":
            parts.append("SharedAccessKey=" + entry["key"])
        else:
            parts.append("x509=true")
        if gateway:
            parts.append("GatewayHostName=" + self.host)
        return ";".join(parts)

    # ---- service side -----------------------------------------------------------------------

    def telemetry(self, device_id=None):
        return self.hub.telemetry(device_id)

    def wait_telemetry(self, n, device_id=None, timeout=10):
        return self.hub.wait_telemetry(n, device_id, timeout)

    def send_c2d(self, device_id, payload, properties=None, message_id=None, correlation_id=None):
        """Queue a cloud-to-device message (delivered at once if the device is subscribed,
        else when it subscribes). Returns its message id."""
        return self.hub.send_c2d(device_id, payload, properties, message_id, correlation_id)

    def pending_c2d(self, device_id):
        return self.hub.pending_c2d(device_id)

    def invoke_method(self, device_id, name, payload=None, timeout=30, module_id=None):
        """-> (status, payload). (404, {...}) if the device is offline or not subscribed to
        methods; (504, {...}) if it does not answer within `timeout` seconds."""
        return self.hub.invoke_method(device_id, name, payload, timeout, module_id)

    def patch_desired(self, device_id, patch, module_id=None):
        return self.hub.patch_desired(device_id, patch, module_id)

    def twin(self, device_id, module_id=None):
        return self.hub.twin(device_id, module_id)

    # ---- IoT Plug and Play (pnp.py) ----------------------------------------------------------

    def set_writable(self, device_id, name, value, component=None, module_id=None):
        """Set a writable property (of a component); returns the desired $version."""
        return self.pnp.set_writable(device_id, name, value, component, module_id)

    def writable_status(self, device_id, name, component=None, module_id=None):
        """{desired, desired_version, ack {ac, av, ad?, value} or None, state}."""
        return self.pnp.writable_status(device_id, name, component, module_id)

    def wait_writable_ack(
        self, device_id, name, component=None, version=None, timeout=10, module_id=None
    ):
        """writable_status() once the device acknowledged `version` (default: the latest set)."""
        return self.pnp.wait_ack(device_id, name, component, version, timeout, module_id)

    def invoke_command(
        self, device_id, name, payload=None, component=None, timeout=30, module_id=None
    ):
        """Invoke a command ("{component}*{name}" for a component); -> (status, payload)."""
        return self.pnp.invoke_command(device_id, name, payload, component, timeout, module_id)

    def connected(self, device_id, module_id=None):
        return self.hub.connected(device_id, module_id)

    def wait_connected(self, device_id, timeout=10, module_id=None):
        return self.hub.wait_connected(device_id, timeout, module_id)

    def wait_event(self, predicate, timeout=10, since=0):
        """The first event (time, identity, event, detail) at index >= since matching predicate."""
        return self.hub.wait_event(predicate, timeout, since)

    def wait_disconnect(self, device_id, timeout=10):
        """The reason of the next disconnect of `device_id` (or of one already recorded after
        its last connect)."""
        with self.hub.lock:
            start = 0
            for i, ev in enumerate(self.hub.events):
                if ev[1] == device_id and ev[2] == "connack":
                    start = i
        ev = self.hub.wait_event(
            lambda e: e[1] == device_id and e[2] == "disconnect", timeout, since=start
        )
        return ev[3]

    def connect_info(self, device_id, module_id=None):
        """What the latest accepted CONNECT of this identity carried: client_id, username,
        api_version, model_id, device_client_type, auth, clean_session, keepalive, sni, cipher..."""
        name = device_id if module_id is None else device_id + "/" + module_id
        with self.hub.lock:
            d = self.hub.connect_infos.get(name)
            return dict(d) if d else None

    # ---- faults -----------------------------------------------------------------------------

    def drop(self, device_id, module_id=None, reason="dropped by fault injection"):
        """Abort the identity's connection (no close_notify, no DISCONNECT). True if there was one."""
        link = self.hub.link_of(device_id, module_id)
        if link is None:
            return False
        self.hub.event(link.name, "fault", reason)
        link.kick(reason)
        return True

    def send_raw(self, device_id, data, module_id=None, tls=True):
        """Write raw bytes to the identity's connection: inside TLS (tls=True: e.g. a malformed MQTT
        packet) or straight onto TCP (tls=False: breaks TLS framing)."""
        link = self.hub.link_of(device_id, module_id)
        if link is None:
            raise KeyError("identity %r is not connected" % device_id)
        if tls:
            return link.send(bytes(data), force=True)
        link.conn.send_raw(bytes(data))
        return True

    def send_ws_frames(self, device_id, *frames, module_id=None):
        """Over WebSockets: raw bytes inside TLS but outside WebSocket framing (hand-made
        frames), each argument in its own TLS record."""
        link = self.hub.link_of(device_id, module_id)
        if link is None or not hasattr(link.conn, "send_frames"):
            raise KeyError("identity %r is not connected over WebSockets" % device_id)
        link.conn.send_frames(*frames)

    # ---- state file for the CLI -------------------------------------------------------------

    def state_info(self):
        return {
            "pid": os.getpid(),
            "hostname": self.hostname,
            "host": self.host,
            "port": self.port,
            "ws_port": self.ws_port,
            "profile": self.profile,
            "root_pem": self.root_pem_path,
            "root_pem_rsa": self.pki.root_pem_path("rsa"),
            "root_pem_ecc": self.pki.root_pem_path("ecc"),
            "root_der": self.pki.root_der_path(self.profile),
            "device_ca_pem": self.pki.device_ca_pem_path,
            "admin_url": self.admin.url if self.admin is not None else None,
            "admin_port": self.admin.port if self.admin is not None else None,
            "admin_token_file": os.path.join(self.state_dir, "admin-token"),
        }
