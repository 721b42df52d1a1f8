# Zero-touch provisioning: register with the Device Provisioning Service (DPS) over MQTT,
# then connect to the hub it assigns (docs/protocol.md section 4).
#
#   from iothub.provisioning import ProvisioningClient, provision_or_load
#   pc = ProvisioningClient("0ne0012345", "sensor-42", symmetric_key=KEY)
#   result = provision_or_load(pc, "/provisioning.json")   # DPS only when nothing is saved
#   client = result.client()                               # DeviceClient for the assigned hub
#
# Importable on its own: a device that never provisions never loads this module, and this
# module loads the MQTT session and TLS code only when register() runs. Names and payloads
# (dps_topics.py) and the reply decisions (dps_replies.py) are pure; this module owns the
# link, the clock, the waiting between polls (retry-after, clamped; backoff.Backoff when the
# service throttles without one), the overall timeout and persistence.
import json
import os

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from . import dps_replies as dr
from . import dps_topics as dt
from . import linkopen, mqttconn
from .clock import ticks_add, ticks_diff, ticks_ms
from .dps_errors import EnrollmentDisabled, ProvisioningError, RegistrationError  # noqa: F401
from .errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    ProtocolError,
    StatusError,
    Timeout,
)

_MAX_REQUESTS = const(100)  # hard bound on requests per register() besides the timeout
_MAX_REPLY = const(16384)  # largest DPS reply accepted (registration state + custom payload)
_TXBUF = const(768)  # CONNECT with a 128-character registration id and its SAS token fits
SESSION_BUFFERS = (_TXBUF, _MAX_REPLY, 512)  # for iothub.aprov (a _const is not importable)
_FORMAT = const(1)  # version of the saved-result file

# ProvisioningResult's fields, in constructor order: (attribute, registrationState member).
# The one list that the constructor, from_state(), as_dict() and load() go by.
_FIELDS = (
    ("assigned_hub", "assignedHub"),
    ("device_id", "deviceId"),
    ("status", "status"),
    ("substatus", "substatus"),
    ("payload", "payload"),
    ("registration_id", "registrationId"),
    ("id_scope", None),  # not in the reply: the client's
    ("etag", "etag"),
    ("created", "createdDateTimeUtc"),
    ("last_updated", "lastUpdatedDateTimeUtc"),
)


def _log_to(log, level, text):
    if log is not None:
        log(level, text)


class ProvisioningResult:
    """An assignment: `assigned_hub`, `device_id`, `status` ("assigned"), `substatus`
    (initialAssignment, deviceDataMigrated, reprovisionedToInitialAssignment...),
    `payload` (returned by a custom allocation policy, or None), `registration_id`,
    `id_scope`, `etag`, `created`, `last_updated` and `source` ("dps" or "saved").

    client(**kw) makes the DeviceClient for the assigned hub with the credentials the
    device registered with. save()/load() keep the assignment (never the keys) on flash."""

    def __init__(self, assigned_hub, device_id, source="dps", **fields):
        if not isinstance(assigned_hub, str) or not assigned_hub:
            raise ConfigError("assigned_hub must be a non-empty str")
        if not isinstance(device_id, str) or not device_id:
            raise ConfigError("device_id must be a non-empty str")
        self.assigned_hub = assigned_hub
        self.device_id = device_id
        for name, _ in _FIELDS[2:]:
            setattr(self, name, fields.pop(name, None))
        if fields:
            raise ConfigError("unknown ProvisioningResult field %s" % sorted(fields)[0])
        if not self.status:
            self.status = "assigned"
        self.source = source
        self._creds = None  # {"shared_access_key": ...} or {"cert": ..., "key": ...}
        self._tls = None  # {"tls": profile, "roots": ...} of the provisioning client
        self._model_id = None  # the Plug and Play model id the device registered with

    @classmethod
    def _from(cls, get, source, **extra):
        fields = {}
        for name, member in _FIELDS[2:]:
            fields[name] = get(name, member)
        fields.update(extra)
        return cls(
            get("assigned_hub", "assignedHub"), get("device_id", "deviceId"), source, **fields
        )

    @classmethod
    def from_state(cls, state, id_scope=None):
        """From a DPS registrationState dict (the 200 "assigned" reply)."""
        return cls._from(
            lambda name, member: state.get(member) if member else None, "dps", id_scope=id_scope
        )

    def attach(self, credentials, tls=None, model_id=None):
        """Give the result the credentials (TLS settings, model id) client() uses."""
        self._creds = credentials
        self._tls = tls
        self._model_id = model_id
        return self

    def client(self, cls=None, **kw):
        """A DeviceClient for the assigned hub (connect() not called). Keyword arguments
        go to DeviceClient; tls= and roots= default to the provisioning client's unless
        tls= is given (a hub may use another profile than the DPS: then give roots= too,
        or rely on that profile's default root). cls: the client class, by default
        iothub.client.DeviceClient (iothub.aio.DeviceClient for asyncio)."""
        if cls is None:
            from .client import DeviceClient as cls

        if self._creds is None:
            raise ConfigError(
                "this result has no credentials: load it with ProvisioningResult.load(path, pc) "
                "or provision_or_load(pc, path)"
            )
        args = {}
        if self._tls and "tls" not in kw:
            args.update(self._tls)
        args.update(self._creds)
        if self._model_id is not None:
            args["model_id"] = self._model_id  # announced again in the hub CONNECT
        args.update(kw)
        return cls(self.assigned_hub, self.device_id, **args)

    def as_dict(self):
        d = {"format": _FORMAT}
        for name, _ in _FIELDS:
            d[name] = getattr(self, name)
        return d

    def save(self, path):
        """Write the assignment as JSON (no key material). Written to path + ".tmp" first
        and renamed, so a power cut leaves the old file or the new one."""
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.as_dict()))
        try:
            os.remove(path)  # MicroPython's rename does not replace on every port
        except OSError:
            pass
        os.rename(tmp, path)

    @classmethod
    def load(cls, path, provisioning_client=None):
        """The saved assignment, or None if there is no file. Raises ConfigError when the
        file is damaged. With provisioning_client, the result gets its credentials, and
        None is returned when it was saved for another ID scope or registration id."""
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return None
        try:
            d = json.loads(text)
        except ValueError:
            raise ConfigError("%s is not a saved provisioning result (not JSON)" % path)
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            raise ConfigError("%s is not a saved provisioning result (format)" % path)
        r = cls._from(lambda name, member: d.get(name), "saved")
        pc = provisioning_client
        if pc is not None:
            if r.id_scope != pc.id_scope or r.registration_id != pc.registration_id:
                return None
            r.attach(pc.credentials(), pc.tls_settings(), pc.model_id)
        return r

    def __repr__(self):
        return "<ProvisioningResult %s on %s (%s, %s)>" % (
            self.device_id,
            self.assigned_hub,
            self.status,
            self.source,
        )


class ProvisioningClient:
    """Registers one device with DPS over MQTT (TLS 1.2, port 8883), or MQTT over WebSockets
    (transport="websockets", port 443), optionally through an HTTP proxy (proxy=, as for
    DeviceClient).

    Credentials, exactly one of:
      symmetric_key   the device's key (individual enrollment, or derived in the factory
                      from a group key: iothub.sas.derive_device_key)
      group_key       an enrollment group key; the device key is derived here and the
                      group key is not kept (better: derive in the factory, see README)
      cert, key       X.509 (PEM or DER); the certificate CN must be the registration id
    endpoint: the DPS host name (TLS server name and SNI); host: address to dial instead
    (default: endpoint); tls: "rsa" or "ecc" profile; roots: trust anchors (default: the
    profile's DigiCert root). payload: JSON-able data sent with the registration (e.g.
    {"modelId": "dtmi:...;1"}). model_id: the IoT Plug and Play model (DTDL) id, sent as
    {"modelId": ...} in the payload (IoT Central picks the device template by it) and by
    the result's client() in its CONNECT. timeout_ms bounds a whole register(); retry-after
    values are clamped to [min_retry_s, max_retry_s]; a throttled request without retry-after
    is repeated after backoff.next_delay_ms() (default: dps_replies.throttle_backoff(
    min_retry_s, max_retry_s), reset when the registration moves on). key_name: skn of the SAS token
    ("registration" as the DPS doc shows; None to omit it, as the python SDK does)."""

    def __init__(
        self,
        id_scope,
        registration_id,
        *,
        symmetric_key=None,
        group_key=None,
        cert=None,
        key=None,
        endpoint=dt.DEFAULT_ENDPOINT,
        host=None,
        port=None,
        transport="mqtt",
        proxy=None,
        tls="rsa",
        roots=None,
        max_fragment_length=None,
        payload=None,
        model_id=None,
        timeout_ms=60000,
        min_retry_s=dr.MIN_RETRY_S,
        max_retry_s=dr.MAX_RETRY_S,
        sas_ttl=3600,
        key_name="registration",
        keepalive=60,
        ssl_context=None,
        backoff=None,
        log=None,
    ):
        given = (symmetric_key is not None) + (group_key is not None) + (cert is not None)
        if given != 1:
            raise ConfigError(
                "give exactly one credential: symmetric_key=, group_key= or cert= with key="
            )
        if (cert is None) != (key is None):
            raise ConfigError("X.509 needs both cert= and key=")
        self.id_scope = dt.check_id_scope(id_scope)
        self.registration_id = dt.check_registration_id(registration_id, cert is not None)
        if not isinstance(endpoint, str) or not endpoint:
            raise ConfigError("endpoint must be the DPS host name")
        for v, what in ((min_retry_s, "min_retry_s"), (max_retry_s, "max_retry_s")):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError("%s must be a non-negative int (seconds)" % what)
        if max_retry_s < min_retry_s:
            raise ConfigError("max_retry_s must not be below min_retry_s")
        if sas_ttl < 60:
            raise ConfigError("sas_ttl must be at least 60 s")
        from . import sas

        if group_key is not None:
            # only the derived key is stored; the group key is not kept on the object
            symmetric_key = sas.derive_device_key(group_key, self.registration_id)
        elif symmetric_key is not None:
            sas.decode_key(symmetric_key)  # fail now on a damaged key, not at register()
        self._key = symmetric_key
        self._cert = cert
        self._pkey = key
        self.endpoint = endpoint
        self.host = host or endpoint
        self.port = port or (443 if transport == "websockets" else 8883)
        if transport != "mqtt" or proxy is not None:
            from .transport import Link

            linkopen.use(Link(), transport, proxy, 1024, 32768)  # check the options now
        self.transport = transport
        self.proxy = proxy
        self.tls = tls
        self.roots = roots
        self.max_fragment_length = max_fragment_length
        if model_id is not None:
            if not isinstance(model_id, str) or not model_id:
                raise ConfigError("model_id must be a non-empty str (a DTDL id, dtmi:...;1)")
            if payload is None:
                payload = {}
            elif not isinstance(payload, dict):
                raise ConfigError("model_id= goes into the payload: payload= must be a dict")
            elif payload.get("modelId", model_id) != model_id:
                raise ConfigError("payload= has another modelId than model_id=")
            payload = dict(payload)
            payload["modelId"] = model_id
        self.model_id = model_id
        self.payload = payload
        self._payload_json = dt.encode_payload(payload)
        self.timeout_ms = timeout_ms
        self.min_retry_s = min_retry_s
        self.max_retry_s = max_retry_s
        self.sas_ttl = sas_ttl
        self.key_name = key_name
        self.keepalive = keepalive
        self._ctx = ssl_context  # the application's (kept) or None: made per register()
        if backoff is None:
            backoff = dr.throttle_backoff(min_retry_s, max_retry_s)
        self._backoff = backoff
        self._log = log
        self._rid = 0
        self._reply = None
        # what the last register() did: requests sent, replies, seconds waited per delay
        self.stats = {"requests": 0, "polls": 0, "retries": 0, "waits_ms": []}

    @property
    def device_key(self):
        """The symmetric key used (derived from the group key when one was given)."""
        return self._key

    def credentials(self):
        """Keyword arguments that give a DeviceClient the same credentials."""
        if self._cert is not None:
            return {"cert": self._cert, "key": self._pkey}
        return {"shared_access_key": self._key}

    def tls_settings(self):
        d = {"tls": self.tls}
        if self.transport != "mqtt":
            d["transport"] = self.transport
        if self.proxy is not None:
            d["proxy"] = self.proxy
        if self.roots is not None:
            d["roots"] = self.roots
        if self.max_fragment_length is not None:
            d["max_fragment_length"] = self.max_fragment_length
        return d

    def _context(self):
        if self._ctx is None:
            self._ctx = own_context(
                self.tls, self.roots, self.max_fragment_length, self._cert, self._pkey, self._log
            )
        return self._ctx

    def _password(self):
        if self._cert is not None:
            return None
        from . import sas
        from .credentials import sas_password

        uri = sas.dps_resource_uri(self.id_scope, self.registration_id)
        return sas_password(uri, self._key, self.sas_ttl, self.key_name)[0]

    # The session's owner (iothub.session): its requests are QoS 0, so no PUBACK is
    # expected and no packet id is held but the SUBSCRIBE's.
    def _on_puback(self, pid):
        pass

    def _pid_in_use(self, pid):
        return False

    def _on_publish(self, pkt):
        if pkt.type != 3:  # mqtt.DROPPED: a PUBLISH the decoder could not take (ignored)
            return
        try:
            r = dt.parse_response_topic(pkt.topic)
        except ProtocolError as e:
            _log_to(self._log, 1, "ignored a malformed DPS reply topic: %s" % (e,))
            return
        if r is None:
            _log_to(self._log, 1, "ignored a message on an unexpected topic")
            return
        status, rid, retry_after = r
        if rid == str(self._rid):
            self._reply = (status, retry_after, bytes(pkt.payload))

    def register(self, timeout_ms=None):
        """Register (or re-register) and wait for the assignment. Returns a
        ProvisioningResult. Raises RegistrationError (a StatusError: 401, 404...),
        ProvisioningError / EnrollmentDisabled (completed without assignment), Timeout
        (no assignment within timeout_ms), TLSError, ConnectionLost (also when the heap
        had no room for the link or a reply: try again later), ConnectionRefused."""
        try:
            return self._register(timeout_ms)
        except MemoryError:
            raise ConnectionLost("DPS registration ran out of memory (the link is closed)")

    def _register(self, timeout_ms):
        from .session import Session

        if timeout_ms is None:
            timeout_ms = self.timeout_ms
        deadline = ticks_add(ticks_ms(), timeout_ms)
        self.stats = {"requests": 0, "polls": 0, "retries": 0, "waits_ms": []}
        log = self._log
        s = Session(*SESSION_BUFFERS)
        linkopen.use(s.link, self.transport, self.proxy, _TXBUF, _MAX_REPLY)
        s.owner = self
        password = self._password()
        _log_to(
            log, 1, "DPS: connecting to %s:%d as %s" % (self.host, self.port, self.registration_id)
        )
        mqttconn.open_session(
            s,
            self.host,
            self.port,
            self._context(),
            self.endpoint,
            self.registration_id,
            dt.username(self.id_scope, self.registration_id),
            password,
            self.keepalive,
            True,  # DPS treats every session as clean
            deadline,
        )
        password = None
        ok = False
        try:
            mqttconn.subscribe(s, [dt.RES_SUB], deadline)
            steps = self._steps(s, timeout_ms, deadline)
            step = next(steps)
            while True:
                # the conversation asks for the next reply (None) or a delay (ms)
                try:
                    if step is None:
                        s.wait(lambda: self._reply is not None, deadline, "reply")
                    else:
                        _idle(s, step)
                except Timeout as e:
                    step = steps.throw(e)
                    continue
                try:
                    step = steps.send(None)
                except StopIteration:
                    ok = True
                    return self._result
        finally:
            s.close(clean=ok)
            if is_own(self._ctx):
                self._ctx = None  # a one-off link: do not keep the TLS context around

    def _steps(self, s, timeout_ms, deadline):
        """The DPS conversation on an open, subscribed session s, without waiting: a
        generator yielding None when it needs the next reply (in self._reply; the driver
        throws Timeout in when none came) and a delay in ms to wait before the next request.
        Ends with the ProvisioningResult in self._result. Shared by register() and
        iothub.aio.register()."""
        stats = self.stats
        log = self._log
        op = None
        self._result = None
        self._backoff.reset()
        for _ in range(_MAX_REQUESTS):
            self._rid += 1
            rid = str(self._rid)
            self._reply = None
            if op is None:
                s.publish(
                    dt.register_topic(rid),
                    dt.register_body(self.registration_id, self._payload_json),
                )
            else:
                s.publish(dt.query_topic(rid, op), b"")
                stats["polls"] += 1
            stats["requests"] += 1
            try:
                yield None
            except Timeout:
                raise Timeout(
                    "DPS did not answer the %s request within the %d ms timeout"
                    % ("status" if op else "register", timeout_ms)
                )
            status, retry_after, payload = self._reply
            self._reply = None
            step = dr.next_step(
                status,
                dr.parse_body(payload),
                retry_after,
                op,
                self._backoff,
                self.min_retry_s,
                self.max_retry_s,
            )
            kind = step[0]
            if kind == dr.ASSIGNED:
                result = ProvisioningResult.from_state(step[1], self.id_scope)
                if result.registration_id is None:
                    result.registration_id = self.registration_id
                _log_to(log, 1, "DPS: assigned %s on %s" % (result.device_id, result.assigned_hub))
                self._result = result.attach(self.credentials(), self.tls_settings(), self.model_id)
                return
            if kind == dr.POLL:
                op = step[1]
                self._backoff.reset()
                delay = step[2]
            elif kind == dr.RETRY:
                stats["retries"] += 1
                delay = step[1]
            else:  # REGISTER
                op = None
                delay = step[1]
            left = ticks_diff(deadline, ticks_ms())
            if delay >= left:
                raise Timeout(
                    "DPS asked to wait %d s (status %d) but only %d ms of the %d ms timeout are left"
                    % (delay // 1000, status, max(left, 0), timeout_ms)
                )
            _log_to(log, 2, "DPS: status %d, next request in %d ms" % (status, delay))
            stats["waits_ms"].append(delay)
            yield delay
        raise Timeout("DPS: no assignment after %d requests" % _MAX_REQUESTS)


def _idle(s, delay_ms):
    # Wait on the link, not in sleep: PINGREQ goes out when due and a dropped link is
    # noticed; replies to older requests arriving meanwhile are dropped.
    until = ticks_add(ticks_ms(), delay_ms)
    while True:
        left = ticks_diff(until, ticks_ms())
        if left <= 0:
            return
        s.pump(min(left, 1000))


def provision_or_load(pc, path, *, force=False, timeout_ms=None):
    """The saved assignment for pc's ID scope and registration id, or a new one from DPS
    (saved to path). force=True always asks DPS (after repeated hub failures or when the
    hub refused the identity: see Reprovision). A failed save is not fatal."""
    if not force:
        try:
            r = ProvisioningResult.load(path, pc)
        except ConfigError as e:
            _log_to(pc._log, 1, "ignoring the saved assignment: %s" % (e,))
            r = None
        if r is not None:
            return r
    r = pc.register(timeout_ms)
    try:
        r.save(path)
    except OSError as e:
        _log_to(pc._log, 0, "could not save the assignment to %s: %s" % (path, e))
    return r


class Reprovision:
    """When to go back to DPS (Microsoft's guidance, docs/protocol.md 5.1): at once when
    the hub refuses the identity (CONNACK 4/5, status 401/403/404), or after
    `max_failures` consecutive failed connection attempts (default 10).

        policy = Reprovision()
        policy.watch(client)              # counts failed reconnects from poll()
        try: client.connect()
        except IoTHubError as e: policy.failed(e)
        ... in the loop: if policy.due: result = provision_or_load(pc, path, force=True)
    """

    def __init__(self, max_failures=10):
        if not isinstance(max_failures, int) or max_failures < 1:
            raise ConfigError("max_failures must be a positive int")
        self.max_failures = max_failures
        self.failures = 0
        self.due = False
        self.reason = None
        self._attempt_pending = False

    def failed(self, err=None):
        """Record one failed connection attempt; True when re-provisioning is due."""
        if _refused_identity(err):
            return self._set_due("the hub refused the identity: %s" % (err,))
        self.failures += 1
        if self.failures >= self.max_failures:
            self._set_due("%d consecutive failed connection attempts" % self.failures)
        return self.due

    def connected(self):
        self.failures = 0
        self._attempt_pending = False

    def reset(self):
        self.connected()
        self.due = False
        self.reason = None

    def _set_due(self, reason):
        if not self.due:
            self.due = True
            self.reason = reason
        return True

    def watch(self, client):
        """Chain onto client.on_connection_state: CONNECTED resets the count, each RETRYING
        after an attempt counts one failure, AUTH_FAILED makes re-provisioning due."""
        prev = client.on_connection_state

        def on_state(state, detail):
            if state == "connected":
                self.connected()
            elif state == "retrying":
                if self._attempt_pending:
                    self.failed()
                self._attempt_pending = True
            elif state == "auth_failed":
                self._set_due("the hub refused the credentials (CONNACK %s)" % (detail,))
            if prev is not None:
                prev(state, detail)

        client.on_connection_state = on_state
        return client


def _refused_identity(err):
    if isinstance(err, AuthenticationError):
        return True
    return isinstance(err, StatusError) and err.status in (401, 403, 404)


def own_context(profile, roots=None, mfl=None, cert=None, key=None, log=None):
    """A TLS context for a client's settings, marked as the SDK's own: a client may drop and
    rebuild it (new credentials, end of a one-off link). A context the application passed as
    ssl_context= is not marked, and the clients keep it."""
    from .tlsprofile import tls_context

    ctx = tls_context(profile, roots=roots, max_fragment_length=mfl, cert=cert, key=key, log=log)
    try:
        ctx._iothub_owned = True
    except AttributeError:  # a firmware whose context type takes no attributes
        pass
    return ctx


def is_own(ctx):
    """True for a context made by own_context()."""
    return getattr(ctx, "_iothub_owned", False) is True
