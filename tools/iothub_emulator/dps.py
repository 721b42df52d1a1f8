"""The Device Provisioning Service stand-in: its own TLS endpoint (own port, TLS host name
`global.azure-devices-provisioning.net`), MQTT 3.1.1 with DPS semantics (docs/protocol.md
section 4), enrollments in dps_store.py, and assignment to the hub emulator.

    from iothub_emulator import Emulator
    from iothub_emulator.dps import DPSEmulator
    with Emulator(state) as hub, DPSEmulator(state, hub) as dps:
        group_key = dps.add_group("factory-line-1")        # symmetric enrollment group
        ... device registers with derive_device_key(group_key, "sensor-42") ...
        dps.registration("sensor-42")["assignedHub"]        # hub.hostname; hub knows the device

Flow per registration: the device CONNECTs (client id = registration id, user name
`{idScope}/registrations/{registrationId}/api-version=...`, password = SAS token or empty with a
client certificate), SUBSCRIBEs to `$dps/registrations/res/#` and PUBLISHes the register
request. Credentials are checked then: 401 (errorCode 401002) for a wrong key or certificate,
404 (404201) for a registration id no enrollment covers, 200 "disabled" (operationId "") for a
disabled enrollment. Otherwise 202 "assigning" with `retry-after` (default 1 s), then, after
`assigning_polls` more 202 replies to status queries (default 0), 200 "assigned": the device
is added to the hub emulator's registry with its key (individual), derived key (group),
certificate thumbprint (individual X.509) or as a device-CA identity (X.509 group on the
PKI's device CA), so it can connect to the hub at once. The errorCode values for 401/404 are
the emulator's (DPS documents the errorCode = status * 1000 + n scheme, not every value).
Wrong ID scope: CONNACK 5. Malformed user name: CONNACK 4; client id other than the user
name's registration id: CONNACK 2.

Fault switches (attributes, set directly):
  throttle                  int: answer the next n requests with 429 (and retry-after)
  fail_assignment           (errorCode, message): complete the next assignment as "failed"
  omit_operation_id         int: leave operationId out of the next n 202 replies to register
  omit_operation_id_query   the same for 202 replies to status queries
  retry_after               seconds in 202/429 replies (None: send no retry-after)
  retry_after_first         put retry-after before $rid in the reply topic (azure-sdk-for-c's
                            test topic has that order)
  ignore_requests           read register/status requests and never answer
  service.faults.stall      answer nothing at all, CONNACK and SUBACK included.
"""

import base64
import datetime
import hashlib
import itertools
import json
import os
import threading
import time
import uuid
from urllib.parse import parse_qsl

from . import auth, mqtt, sas
from .dps_store import Store, derive_device_key
from .faults import Faults
from .session import Link, Violation
from .tlsserver import ServedEndpoint

DEFAULT_HOSTNAME = "global.azure-devices-provisioning.net"
DEFAULT_ID_SCOPE = "0ne00000E41"
RES_FILTER = "$dps/registrations/res/#"
_REGISTER = "$dps/registrations/PUT/iotdps-register/"
_QUERY = "$dps/registrations/GET/iotdps-get-operationstatus/"
STATE_FILE = "dps-emulator.json"


def _utc(t):
    return (
        datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


class _Conn:
    """Per-connection state: who connected with what."""

    def __init__(self, registration_id, password, cert_chain):
        self.registration_id = registration_id
        self.password = password
        self.cert_chain = cert_chain  # [leaf DER, intermediates...] or []
        self.granted = None  # QoS granted on the reply filter
        self.token_expiry = None


class DPSService:
    """The MQTT side (the service object session.Link drives)."""

    def __init__(self, dps):
        self.dps = dps
        self.faults = Faults()  # stall etc., shared hook points with the hub
        self.clock = dps.clock

    def event(self, name, event, detail=None):
        self.dps.event(name, event, detail)

    def deadline(self, link):
        return None

    # ---- CONNECT --------------------------------------------------------------------------

    def on_connect(self, link, pkt):
        info = link.info
        cid = pkt.client_id
        link.name = cid or None
        detail = {
            "client_id": cid,
            "username": pkt.username,
            "clean_session": pkt.clean_session,
            "sni": getattr(info, "sni", None),
            "cipher": getattr(info, "cipher", None),
        }
        rc, why, api_version = self._check_connect(pkt)
        detail["api_version"] = api_version
        if rc:
            detail["reason"] = why
            self.event(link.name, "connect", detail)
            self.event(link.name, "connack", rc)
            return rc, False
        chain = list(getattr(info, "client_cert_chain_der", None) or [])
        link.state = _Conn(cid, pkt.password, chain)
        detail["auth"] = "sas" if pkt.password else ("x509" if chain else "none")
        self.event(link.name, "connect", detail)
        self.event(link.name, "connack", 0)
        return 0, False

    def _check_connect(self, pkt):
        """-> (CONNACK return code, reason, api-version)."""
        parts = (pkt.username or "").split("/")
        if len(parts) < 4 or parts[1] != "registrations" or not parts[0] or not parts[2]:
            why = "user name is not {idScope}/registrations/{registrationId}/api-version=..."
            return auth.BAD_USERNAME, why, None
        query = "/".join(parts[3:]).lstrip("?")
        api = dict(parse_qsl(query, keep_blank_values=True)).get("api-version")
        if not api:
            return auth.BAD_USERNAME, "user name lacks api-version", None
        if parts[0] != self.dps.id_scope:
            return auth.NOT_AUTHORIZED, "unknown ID scope %r" % parts[0], api
        if pkt.client_id != parts[2]:
            why = "client id %r is not the registration id %r" % (pkt.client_id, parts[2])
            return auth.BAD_CLIENT_ID, why, api
        return 0, None, api

    def after_connack(self, link):
        pass

    def on_close(self, link, reason, graceful):
        self.event(link.name, "disconnect", reason)

    # ---- packets --------------------------------------------------------------------------

    def on_packet(self, link, pkt):
        st = link.state
        if pkt.type == mqtt.SUBSCRIBE:
            codes = []
            for flt, q in pkt.topics:
                if flt == RES_FILTER:
                    st.granted = min(q, 1)
                    codes.append(st.granted)
                else:
                    codes.append(0x80)
            self.event(link.name, "subscribe", [f for f, _ in pkt.topics])
            link.send(mqtt.suback(pkt.packet_id, codes))
        elif pkt.type == mqtt.UNSUBSCRIBE:
            link.send(mqtt.unsuback(pkt.packet_id))
        elif pkt.type == mqtt.PUBACK:
            link.in_use_pids.discard(pkt.packet_id)
        elif pkt.type == mqtt.PUBLISH:
            if pkt.qos == 2:
                raise Violation("PUBLISH with QoS 2")
            if pkt.qos == 1:
                link.send(mqtt.puback(pkt.packet_id))
            self._on_request(link, st, pkt.topic, pkt.payload)

    def _on_request(self, link, st, topic, payload):
        if topic.startswith(_REGISTER):
            kind = "register"
            query = topic[len(_REGISTER) :]
        elif topic.startswith(_QUERY):
            kind = "query"
            query = topic[len(_QUERY) :]
        else:
            raise Violation("PUBLISH to %r: not a DPS request topic" % topic)
        params = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True))
        rid = params.get("$rid")
        if not rid:
            raise Violation("DPS request without $rid: %r" % topic)
        if st.granted is None:
            self.event(link.name, "unsubscribed_request", topic)
        dps = self.dps
        self.event(link.name, kind, {"rid": rid, "operationId": params.get("operationId")})
        if dps.ignore_requests:
            self.event(link.name, "fault", "ignore_requests: no reply")
            return
        if dps.take("throttle"):
            return self._reply(link, st, 429, rid, _error(429001, "Throttled"), dps.retry_after)
        if kind == "register":
            status, body, retry = dps.register(st, payload, self.clock())
        else:
            status, body, retry = dps.query(st, params.get("operationId"), self.clock())
        self._reply(link, st, status, rid, body, retry)

    def _reply(self, link, st, status, rid, body, retry_after):
        dps = self.dps
        params = ["$rid=%s" % rid]
        if retry_after is not None:
            ra = "retry-after=%d" % retry_after
            params.insert(0 if dps.retry_after_first else 1, ra)
        topic = "$dps/registrations/res/%d/?%s" % (status, "&".join(params))
        data = json.dumps(body, separators=(",", ":")).encode()
        qos = st.granted or 0
        pid = link.next_packet_id() if qos else None
        self.event(link.name, "reply", {"status": status, "topic": topic, "body": body})
        link.send(mqtt.publish(topic, data, qos, pid))


def _error(code, message):
    return {
        "errorCode": code,
        "trackingId": str(uuid.uuid4()),
        "message": message,
        "timestampUtc": _utc(time.time()),
    }


class DPSEmulator(ServedEndpoint):
    """A DPS on loopback that assigns devices to `hub` (an iothub_emulator.Emulator)."""

    def __init__(
        self,
        state_dir,
        hub,
        *,
        profile=None,
        host="127.0.0.1",
        port=0,
        hostname=DEFAULT_HOSTNAME,
        id_scope=DEFAULT_ID_SCOPE,
        retry_after=1,
        assigning_polls=0,
        clock=None,
        ws_port=None,
    ):
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.hub = hub
        self.pki = hub.pki
        self.profile = profile or hub.profile
        self.host = host
        self._want_port = port
        self._want_ws_port = ws_port  # None: no MQTT over WebSockets; 0: any free port
        self.hostname = hostname
        self.id_scope = id_scope
        self.retry_after = retry_after
        self.assigning_polls = assigning_polls
        self.clock = clock or hub.clock
        self.store = Store(self.state_dir)
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.events = []
        self.operations = {}
        self.endpoint = None
        self.service = DPSService(self)
        # fault switches (see the module docstring)
        self.throttle = 0
        self.fail_assignment = None
        self.omit_operation_id = 0
        self.omit_operation_id_query = 0
        self.retry_after_first = False
        self.ignore_requests = False
        self._op_seq = itertools.count(1)

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self):
        from .tlsserver import TLSEndpoint

        self.endpoint = TLSEndpoint(
            self.pki,
            self.profile,
            self.host,
            self._want_port,
            handler=lambda conn: Link(conn, self.service).run(),
            name="dps",
        )
        # The test PKI's server leaf lists *.azure-devices-provisioning.net among its names
        # (pki._FILLER_SANS), so it serves the DPS host name as Azure's certificate does.
        self.endpoint.hostname = self.hostname
        self.endpoint.start()
        self._want_port = self.endpoint.port
        self._start_ws(lambda conn: Link(conn, self.service).run(), "dps-ws")
        return self

    def stop(self):
        self._stop_ws()
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None

    @property
    def connections(self):
        """ConnInfo of every TLS connection (bytes and records per direction, cipher...)."""
        return self.endpoint.connections if self.endpoint is not None else []

    def state_info(self):
        return {
            "pid": os.getpid(),
            "hostname": self.hostname,
            "host": self.host,
            "port": self.port,
            "ws_port": self.ws_port,
            "profile": self.profile,
            "id_scope": self.id_scope,
            "root_pem": self.root_pem_path,
            "device_ca_pem": self.pki.device_ca_pem_path,
        }

    # ---- enrollments --------------------------------------------------------------------------

    def add_enrollment(
        self,
        registration_id,
        *,
        key=None,
        x509_thumbprint=None,
        device_id=None,
        enabled=True,
        allocation_payload=None,
    ):
        """Individual enrollment (symmetric key, generated when neither key nor thumbprint is
        given, or an X.509 thumbprint). Returns the generated key or None."""
        return self.store.add_individual(
            registration_id, key, x509_thumbprint, device_id, enabled, allocation_payload
        )

    def add_group(self, group_id, *, key=None, x509_ca=None, enabled=True, allocation_payload=None):
        """Enrollment group: symmetric (key generated when None) or X.509 with x509_ca=True (the
        PKI's device CA) or a CA certificate (DER/PEM). Returns the generated key or None."""
        if x509_ca is True:
            x509_ca = self.pki.device_ca_der
        return self.store.add_group(group_id, key, x509_ca or None, enabled, allocation_payload)

    def disable(self, registration_id=None, group_id=None):
        self.store.set_enabled(False, registration_id, group_id)

    def enable(self, registration_id=None, group_id=None):
        self.store.set_enabled(True, registration_id, group_id)

    def remove(self, registration_id=None, group_id=None):
        self.store.remove(registration_id, group_id)

    def enrollments(self):
        return self.store.listing()

    def derived_key(self, group_id, registration_id):
        g = self.store.groups.get(group_id)
        if g is None or g["attestation"] != "symmetric":
            raise KeyError("no symmetric enrollment group %r" % group_id)
        return derive_device_key(g["key"], registration_id)

    def registrations(self):
        return self.store.registration_list()

    def registration(self, registration_id):
        """The registration state DPS keeps for a device (assignedHub, deviceId, status...)."""
        return self.store.registration(registration_id)

    # ---- events -------------------------------------------------------------------------------

    def event(self, name, event, detail=None):
        with self.lock:
            self.events.append((self.clock(), name, event, detail))
            self.changed.notify_all()

    def wait_event(self, predicate, timeout=10, since=0):
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for ev in self.events[since:]:
                    if predicate(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching DPS event within %.1f s" % timeout)
                self.changed.wait(left)

    def take(self, switch):
        with self.lock:
            n = getattr(self, switch)
            if not n:
                return False
            setattr(self, switch, n - 1)
            return True

    # ---- the registration flow ----------------------------------------------------------------

    def register(self, st, payload, now):
        """-> (status, body, retry_after) for a register request."""
        rid = st.registration_id
        try:
            req = json.loads(bytes(payload).decode("utf-8")) if payload else {}
        except (UnicodeDecodeError, ValueError):
            return 400, _error(400004, "The request body is not valid JSON."), None
        if not isinstance(req, dict) or req.get("registrationId") != rid:
            return (
                400,
                _error(400004, "registrationId in the body must be the registration id %r" % rid),
                None,
            )
        found = self._authenticate(st, now)
        if found[0] == "error":
            _, status, code, message = found
            self.event(rid, "refused", {"status": status, "reason": found[3]})
            return status, _error(code, message), None
        _, enrollment, attestation, hub_auth = found
        if not enrollment["enabled"]:
            state = {"registrationId": rid, "status": "disabled"}
            self.event(rid, "disabled", enrollment.get("group_id") or "individual")
            return 200, {"operationId": "", "status": "disabled", "registrationState": state}, None
        op_id = "4.%016x.%s" % (next(self._op_seq), uuid.uuid4())
        with self.lock:
            self.operations[op_id] = {
                "registration_id": rid,
                "enrollment": enrollment,
                "attestation": attestation,
                "hub_auth": hub_auth,
                "device_payload": req.get("payload"),
                "polls_left": self.assigning_polls,
                "created": now,
            }
        body = {"operationId": op_id, "status": "assigning"}
        if self.take("omit_operation_id"):
            del body["operationId"]
        return 202, body, self.retry_after

    def query(self, st, op_id, now):
        """-> (status, body, retry_after) for an operation-status query."""
        with self.lock:
            op = self.operations.get(op_id or "")
        if op is None or op["registration_id"] != st.registration_id:
            return 404, _error(404203, "Operation not found."), None
        with self.lock:
            assigning = op["polls_left"] > 0
            if assigning:
                op["polls_left"] -= 1
            else:
                self.operations.pop(op_id, None)
        if assigning:
            body = {
                "operationId": op_id,
                "status": "assigning",
                "registrationState": {
                    "registrationId": op["registration_id"],
                    "status": "assigning",
                },
            }
            if self.take("omit_operation_id_query"):
                del body["operationId"]
            return 202, body, self.retry_after
        return 200, self._assign(op, op_id, now), None

    def _assign(self, op, op_id, now):
        rid = op["registration_id"]
        enrollment = op["enrollment"]
        kind, value = op["hub_auth"]
        device_id = enrollment.get("device_id") or rid
        prev = self.store.registration(rid)
        state = {
            op["attestation"]: {},
            "registrationId": rid,
            "createdDateTimeUtc": prev["createdDateTimeUtc"] if prev else _utc(now),
            "lastUpdatedDateTimeUtc": _utc(now),
            "etag": base64.b64encode(hashlib.sha256(op_id.encode()).digest()[:12]).decode(),
        }
        failure = self.fail_assignment
        if failure is not None:
            self.fail_assignment = None
            state.update(status="failed", errorCode=failure[0], errorMessage=failure[1])
            self.event(rid, "failed", failure)
            return {"operationId": op_id, "status": "failed", "registrationState": state}
        if kind == "key":
            self.hub.add_device(device_id, key=value)
        elif kind == "thumbprint":
            self.hub.add_device(device_id, x509_thumbprint=value)
        else:
            self.hub.add_device(device_id, x509_ca=True)
        substatus = "initialAssignment"
        if prev and prev.get("status") == "assigned":
            substatus = "reprovisionedToInitialAssignment"
        state.update(
            assignedHub=self.hub.hostname,
            deviceId=device_id,
            status="assigned",
            substatus=substatus,
        )
        if enrollment.get("allocation_payload") is not None:
            state["payload"] = enrollment["allocation_payload"]
        record = dict(state)
        record["enrollment"] = enrollment.get("group_id") or "individual"
        record["devicePayload"] = op["device_payload"]
        self.store.record_registration(record)
        self.event(rid, "assigned", {"deviceId": device_id, "hub": self.hub.hostname, "auth": kind})
        return {"operationId": op_id, "status": "assigned", "registrationState": state}

    # ---- attestation ----------------------------------------------------------------------------

    def _authenticate(self, st, now):
        """("ok", enrollment, attestation name, (hub auth kind, value)) or
        ("error", status, errorCode, message)."""
        rid = st.registration_id
        mode = "symmetricKey" if st.password else ("x509" if st.cert_chain else None)
        if mode is None:
            return ("error", 401, 401002, "Unauthorized: no SAS token and no client certificate.")
        ind = self.store.get_individual(rid)
        if ind is not None:
            if mode == "symmetricKey":
                if ind["attestation"] != "symmetric":
                    return ("error", 401, 401002, "Unauthorized: this enrollment uses X.509.")
                why = self._check_token(st, ind["key"], now)
                if why:
                    return ("error", 401, 401002, "Unauthorized: " + why)
                return ("ok", ind, mode, ("key", ind["key"]))
            if ind["attestation"] != "x509":
                return ("error", 401, 401002, "Invalid certificate.")
            why = _check_leaf(st.cert_chain[0], rid, now)
            tps = _thumbprints(st.cert_chain[0])
            if why is None and not (set(tps) & set(ind["thumbprints"])):
                why = "thumbprint does not match the enrollment"
            if why:
                return ("error", 401, 401002, "Invalid certificate.")
            return ("ok", ind, mode, ("thumbprint", tps[1]))
        groups = [
            g
            for g in self.store.group_list()
            if g["attestation"] == ("symmetric" if mode == "symmetricKey" else "x509")
        ]
        if not groups:
            return ("error", 404, 404201, "Device enrollment record not found.")
        for g in groups:
            if mode == "symmetricKey":
                key = derive_device_key(g["key"], rid)
                if not self._check_token(st, key, now):
                    return ("ok", g, mode, ("key", key))
            else:
                ca_der = base64.b64decode(g["ca_der"])
                depth = _chain_depth(st.cert_chain, ca_der, rid, now)
                if depth is not None:
                    if depth == 0 and ca_der == self.pki.device_ca_der:
                        # the hub emulator accepts leaves its device CA signed directly
                        return ("ok", g, mode, ("ca", None))
                    return ("ok", g, mode, ("thumbprint", _thumbprints(st.cert_chain[0])[1]))
        if mode == "symmetricKey":
            return ("error", 401, 401002, "Unauthorized: the SAS token does not verify.")
        return ("error", 401, 401002, "Invalid certificate.")

    def _check_token(self, st, key, now):
        """None when the SAS password verifies with key for this registration, else why not."""
        try:
            token = st.password.decode("utf-8")
            fields = sas.parse(token)
            if fields.get("skn", "registration") != "registration":
                return "skn must be 'registration' or absent"
            sas.verify(token, key, self.id_scope, ["registrations", st.registration_id], now)
        except UnicodeDecodeError:
            return "password is not UTF-8"
        except sas.SASError as e:
            return str(e)
        return None


def _thumbprints(der):
    return (hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper())


def _check_leaf(der, rid, now):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "certificate does not parse"
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    if not cert.not_valid_before_utc <= t <= cert.not_valid_after_utc:
        return "certificate outside its validity period"
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != rid:
        return "certificate CN is not the registration id"
    return None


def _chain_depth(chain, ca_der, rid, now):
    """How many intermediates (sent by the device) lie between its leaf (CN = registration id)
    and the CA, or None when the leaf does not chain to the CA."""
    from cryptography import x509

    if not chain or _check_leaf(chain[0], rid, now):
        return None
    ca = x509.load_der_x509_certificate(ca_der)
    certs = [x509.load_der_x509_certificate(d) for d in chain]
    cur = certs[0]
    for depth in range(len(certs)):
        if _issued_by(cur, ca):
            return depth
        for inter in certs[1:]:
            if inter is not cur and _is_ca(inter) and _issued_by(cur, inter):
                cur = inter
                break
        else:
            return None
    return None


def _issued_by(cert, issuer):
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:  # ValueError (issuer name), InvalidSignature, TypeError (key type)
        return False


def _is_ca(cert):
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
