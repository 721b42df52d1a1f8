"""The IoT Hub service behind the TLS endpoint: sessions, telemetry capture, C2D queues, twins, direct
methods, and the service-side operations the Emulator exposes (docs/protocol.md section 2).

Threads: one per connection (the endpoint calls `handle(conn)`), plus the callers of the service API.
All shared state is guarded by `self.lock`; packets are written outside it.
"""

import itertools
import json
import threading
import time

from . import auth, mqtt
from .session import Link, Violation
from .topics import Identity, desired_patch, method_request, split_properties, twin_response
from .twin import Twin, TwinError

D2C_LIMIT = 256 * 1024  # body + property names and values (§2.5)
C2D_LIMIT = 64 * 1024
C2D_MAX_PENDING = 50
METHOD_PAYLOAD_LIMIT = 128 * 1024
MAX_SUBSCRIPTIONS = 5  # "A device can only subscribe to five topics at a time"


class HubError(Exception):
    pass


class Session:
    """MQTT session state kept across connections when CleanSession is 0."""

    def __init__(self):
        self.subs = {}  # filter -> (feature, granted qos)

    def granted(self, feature):
        for feat, q in self.subs.values():
            if feat == feature:
                return q
        return None


class LinkState:
    def __init__(self, result, session):
        self.identity = Identity(result.device_id, result.module_id)
        self.info = result.info
        self.session = session
        self.token_expiry = result.info.get("token_expiry")
        self.will = None


class C2DMessage:
    def __init__(self, seq, payload, properties, message_id, correlation_id):
        self.seq = seq
        self.payload = payload
        self.properties = properties
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.link = None  # the connection it is in flight on
        self.packet_id = None
        self.deliveries = 0


class Hub:
    def __init__(self, hostname, registry, faults, clock=time.time, device_ca_der=None):
        self.hostname = hostname
        self.registry = registry
        self.faults = faults
        self.clock = clock
        self.device_ca_der = device_ca_der
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.events = []
        self.telemetry_log = []
        self.twins = {}
        self.sessions = {}
        self.live = {}
        self.connect_infos = {}
        self.c2d = {}
        self.methods = {}
        self._rids = itertools.count(1)
        self._c2d_ids = itertools.count(1)

    # ---- bookkeeping ------------------------------------------------------------------------

    def event(self, name, event, detail=None):
        with self.lock:
            self.events.append((self.clock(), name, event, detail))
            self.changed.notify_all()

    def deadline(self, link):
        st = link.state
        if st is None or st.token_expiry is None or not self.faults.close_at_token_expiry:
            return None
        return st.token_expiry

    def twin_of(self, name):
        with self.lock:
            t = self.twins.get(name)
            if t is None:
                t = self.twins[name] = Twin()
            return t

    # ---- connection lifecycle ---------------------------------------------------------------

    def handle(self, conn):
        """The endpoint's per-connection handler."""
        Link(conn, self).run()

    def on_connect(self, link, pkt):
        info = link.info
        link.name = pkt.client_id or None
        tls = {}
        if info is not None:
            tls = {k: getattr(info, k, None) for k in ("sni", "version", "cipher")}
        delay = self.faults.delay_connack_s
        if delay:
            self.event(link.name, "fault", "delay_connack_s %g" % delay)
            time.sleep(delay)  # this connection's own thread: only its CONNACK waits
        if self.faults.refuse_connack is not None:
            rc = int(self.faults.refuse_connack)
            self.event(link.name, "connack", rc)
            self.event(link.name, "fault", "refuse_connack %d" % rc)
            return rc, False
        res = auth.authenticate(
            pkt,
            self.hostname,
            self.registry,
            getattr(info, "client_cert_der", None),
            self.device_ca_der,
            self.clock(),
        )
        detail = dict(res.info)
        detail.pop("query", None)
        detail.update(tls)
        if res.rc != 0:
            detail["reason"] = res.reason
            self.event(link.name, "connect", detail)
            self.event(link.name, "connack", res.rc)
            return res.rc, False
        name = Identity(res.device_id, res.module_id).name
        link.name = name
        with self.lock:
            if pkt.clean_session:
                self.sessions.pop(name, None)
                session = Session()
                present = False
                if res.module_id is None:
                    # azure-sdk-for-c: "Connecting with Clean Session true will remove all enqueued C2D messages".
                    purged = [m for m in self.c2d.get(res.device_id, [])]
                    self.c2d[res.device_id] = []
                    if purged:
                        self.events.append((self.clock(), name, "c2d_purged", len(purged)))
            else:
                present = name in self.sessions
                session = self.sessions.setdefault(name, Session())
            st = LinkState(res, session)
            if pkt.will is not None:
                st.will = pkt.will
            link.state = st
            old = self.live.get(name)
            if old is not None and old is not link:
                self._release_inflight(old)
            self.live[name] = link
            self.connect_infos[name] = detail
            self.events.append((self.clock(), name, "connect", detail))
            self.events.append((self.clock(), name, "connack", 0))
            self.changed.notify_all()
        if old is not None and old is not link:
            self.event(
                name,
                "disconnect",
                "replaced by a new connection (400027 ConnectionForcefullyClosedOnNewConnection)",
            )
            old.kick(
                "replaced by a new connection (400027 ConnectionForcefullyClosedOnNewConnection)"
            )
        return 0, present

    def after_connack(self, link):
        with self.lock:
            self.changed.notify_all()  # wait_connected() looks at link.connected
        if link.state.session.granted("c2d") is not None:
            self._deliver_c2d(link)

    def on_close(self, link, reason, graceful):
        st = link.state
        with self.lock:
            if st is not None and self.live.get(link.name) is link:
                del self.live[link.name]
                self._release_inflight(link)
                if st.info.get("clean_session"):
                    self.sessions.pop(link.name, None)
                self.events.append((self.clock(), link.name, "disconnect", reason))
            elif st is None:
                self.events.append((self.clock(), link.name, "disconnect", reason))
            self.changed.notify_all()
        if st is not None and link.connected and not graceful and st.will is not None:
            topic, payload, qos, retain = st.will
            kind, data = st.identity.classify_publish(topic)
            if kind == "telemetry":
                self._capture(
                    st,
                    topic,
                    payload,
                    data,
                    qos,
                    None,
                    False,
                    retain,
                    extra={"iothub-MessageType": "Will"},
                )

    def _release_inflight(self, link):
        """Put C2D messages in flight on `link` back in the queue for redelivery (lock held)."""
        st = link.state
        if st is None or st.identity.module_id:
            return
        for m in self.c2d.get(st.identity.device_id, []):
            if m.link is link:
                m.link = None
                m.packet_id = None

    # ---- packets from the device ------------------------------------------------------------

    def on_packet(self, link, pkt):
        st = link.state
        if pkt.type == mqtt.PUBLISH:
            self._on_publish(link, st, pkt)
        elif pkt.type == mqtt.PUBACK:
            self._on_puback(link, st, pkt.packet_id)
        elif pkt.type == mqtt.SUBSCRIBE:
            self._on_subscribe(link, st, pkt)
        elif pkt.type == mqtt.UNSUBSCRIBE:
            with self.lock:
                for flt in pkt.topics:
                    st.session.subs.pop(flt, None)
            self.event(link.name, "unsubscribe", list(pkt.topics))
            link.send(mqtt.unsuback(pkt.packet_id))

    def _on_publish(self, link, st, pkt):
        if pkt.qos == 2:
            raise Violation("PUBLISH with QoS 2 to %r: IoT Hub closes the connection" % pkt.topic)
        if self.faults.take_drop_publish():
            self.event(
                link.name,
                "fault",
                "drop_next_publish: connection dropped on PUBLISH %r" % pkt.topic,
            )
            raise Violation("fault: connection dropped on PUBLISH")
        kind, data = st.identity.classify_publish(pkt.topic)
        if kind is None:
            raise Violation(data)
        if kind == "telemetry":
            self._capture(
                st, pkt.topic, pkt.payload, data, pkt.qos, pkt.packet_id, pkt.dup, pkt.retain
            )
            if pkt.qos == 1:
                delay = self.faults.delay_puback_s
                if delay:
                    t = threading.Timer(delay, link.send, (mqtt.puback(pkt.packet_id),))
                    t.daemon = True
                    t.start()
                else:
                    link.send(mqtt.puback(pkt.packet_id))
            return
        if pkt.qos == 1:
            link.send(mqtt.puback(pkt.packet_id))
        if kind in ("twin_get", "twin_patch"):
            self._on_twin(link, st, kind, data, pkt.payload)
        elif kind == "method_res":
            self._on_method_response(link, st, data[0], data[1], pkt.payload)

    def _capture(self, st, topic, payload, pairs, qos, packet_id, dup, retain, extra=None):
        size = len(payload) + sum(len(k) + len(v or "") for k, v in pairs)
        if size > D2C_LIMIT:
            raise Violation("telemetry message of %d bytes exceeds the 256 KB D2C limit" % size)
        custom, system = split_properties(pairs)
        if retain:
            custom["mqtt-retain"] = "true"
        if extra:
            custom.update(extra)
        rec = {
            "device_id": st.identity.device_id,
            "module_id": st.identity.module_id,
            "topic": topic,
            "payload": bytes(payload),
            "properties": custom,
            "system_properties": system,
            "qos": qos,
            "packet_id": packet_id,
            "dup": dup,
            "received_at": self.clock(),
            "component": system.get("sub"),  # Plug and Play component ($.sub), or None
        }
        with self.lock:
            self.telemetry_log.append(rec)
            self.events.append(
                (
                    rec["received_at"],
                    st.identity.name,
                    "telemetry",
                    {
                        "bytes": len(payload),
                        "properties": dict(custom),
                        "system_properties": dict(system),
                    },
                )
            )
            self.changed.notify_all()

    def _on_puback(self, link, st, pid):
        done = None
        with self.lock:
            link.in_use_pids.discard(pid)
            if st.identity.module_id is None:
                q = self.c2d.get(st.identity.device_id, [])
                for m in q:
                    if m.link is link and m.packet_id == pid:
                        q.remove(m)
                        done = m
                        break
            if done is not None:
                self.events.append((self.clock(), link.name, "c2d_complete", done.message_id))
                self.changed.notify_all()

    def _on_subscribe(self, link, st, pkt):
        codes = []
        new_c2d = False
        with self.lock:
            subs = st.session.subs
            for flt, q in pkt.topics:
                feature, why = st.identity.classify_filter(flt)
                if feature is None and why.startswith("foreign"):
                    self.events.append((self.clock(), link.name, "subscribe_refused", flt))
                    raise Violation(why)
                if feature is None or (flt not in subs and len(subs) >= MAX_SUBSCRIPTIONS):
                    codes.append(0x80)
                    self.events.append((self.clock(), link.name, "subscribe_refused", flt))
                    continue
                granted = min(q, 1)
                new_c2d = new_c2d or feature == "c2d"
                subs[flt] = (feature, granted)
                codes.append(granted)
            self.events.append(
                (
                    self.clock(),
                    link.name,
                    "subscribe",
                    [(f, c) for (f, _), c in zip(pkt.topics, codes, strict=True)],
                )
            )
        link.send(mqtt.suback(pkt.packet_id, codes))
        if new_c2d:
            self._deliver_c2d(link)

    # ---- twin -------------------------------------------------------------------------------

    def _on_twin(self, link, st, kind, props, payload):
        rid = props["$rid"]
        override = self.faults.twin_status_override
        version = None
        body = b""
        if override is not None:
            status = int(override)
            body = json.dumps(
                {"errorCode": status * 1000, "message": "fault: twin_status_override"}
            ).encode()
            self.event(link.name, "fault", "twin_status_override %d" % status)
        elif kind == "twin_get":
            status = 200
            with self.lock:
                doc = self.twin_of(st.identity.name).document()
            body = json.dumps(doc, separators=(",", ":")).encode()
            self.event(link.name, "twin_get", rid)
        else:
            try:
                try:
                    patch = json.loads(bytes(payload).decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise TwinError(400, "reported patch is not valid JSON") from None
                with self.lock:
                    version = self.twin_of(st.identity.name).patch_reported(patch)
                status = 204
                self.event(link.name, "twin_reported", {"patch": patch, "version": version})
            except TwinError as e:
                status = e.status
                body = json.dumps({"errorCode": status * 1000, "message": str(e)}).encode()
                self.event(link.name, "twin_reported_error", {"status": status, "reason": str(e)})
        q = st.session.granted("twin_res")
        if q is None:
            self.event(link.name, "twin_response_dropped", "not subscribed to $iothub/twin/res/#")
            return
        self._publish(link, twin_response(status, rid, version), body, q)

    def _publish(self, link, topic, payload, qos):
        pid = link.next_packet_id() if qos else None
        link.send(mqtt.publish(topic, payload, qos, pid))
        return pid

    # ---- methods ----------------------------------------------------------------------------

    def _on_method_response(self, link, st, status, rid, payload):
        with self.lock:
            w = self.methods.get(rid)
            if w is None or w["name"] != link.name:
                self.events.append((self.clock(), link.name, "method_response_unknown_rid", rid))
                return
            try:
                text = bytes(payload).decode("utf-8")
                value = json.loads(text) if text else None
            except (UnicodeDecodeError, ValueError):
                value = bytes(payload).decode("utf-8", "replace")
                self.events.append((self.clock(), link.name, "method_response_not_json", rid))
            w["result"] = (status, value)
            w["done"].set()
            self.events.append(
                (self.clock(), link.name, "method_response", {"rid": rid, "status": status})
            )

    def invoke_method(self, device_id, name, payload=None, timeout=30, module_id=None):
        ident = Identity(device_id, module_id)
        if not name or len(name) > 128 or any(c in name for c in "/?#+\x00"):
            raise HubError("method name %r: 1..128 characters, no '/', '?', '#' or '+'" % name)
        body = json.dumps(payload).encode() if payload is not None else b""
        if len(body) > METHOD_PAYLOAD_LIMIT:
            raise HubError("method payload of %d bytes exceeds 128 KB" % len(body))
        with self.lock:
            link = self.live.get(ident.name)
            st = link.state if link is not None else None
            if st is None or st.session.granted("methods") is None:
                why = (
                    "device is not connected"
                    if link is None
                    else "device is not subscribed to $iothub/methods/POST/#"
                )
                self.events.append(
                    (self.clock(), ident.name, "method_404", {"method": name, "reason": why})
                )
                return 404, {
                    "errorCode": 404103,
                    "message": "Timed out waiting for device to connect. " + why,
                }
            rid = "%x" % next(self._rids)
            w = {"name": ident.name, "done": threading.Event(), "result": None}
            self.methods[rid] = w
            self.events.append(
                (self.clock(), ident.name, "method_request", {"method": name, "rid": rid})
            )
        try:
            self._publish(
                link, method_request(name, rid), body, 0
            )  # method requests are QoS 0 (§2.9)
            if w["done"].wait(timeout):
                return w["result"]
            self.event(ident.name, "method_timeout", {"method": name, "rid": rid})
            return 504, {
                "errorCode": 504101,
                "message": "Timed out waiting for the response from device.",
            }
        finally:
            with self.lock:
                self.methods.pop(rid, None)

    # ---- desired properties -----------------------------------------------------------------

    def patch_desired(self, device_id, patch, module_id=None):
        ident = Identity(device_id, module_id)
        self._check_identity(device_id, module_id)
        with self.lock:
            twin = self.twin_of(ident.name)
            try:
                version = twin.patch_desired(patch)
            except TwinError as e:
                raise HubError(str(e)) from None
            link = self.live.get(ident.name)
            q = link.state.session.granted("desired") if link is not None and link.state else None
            self.events.append(
                (
                    self.clock(),
                    ident.name,
                    "desired",
                    {"patch": patch, "version": version, "pushed": q is not None},
                )
            )
        if q is not None:
            body = dict(patch)
            body["$version"] = version
            self._publish(
                link, desired_patch(version), json.dumps(body, separators=(",", ":")).encode(), q
            )
        return version

    # ---- cloud-to-device --------------------------------------------------------------------

    def send_c2d(self, device_id, payload, properties=None, message_id=None, correlation_id=None):
        self._check_identity(device_id, None)
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        payload = bytes(payload)
        if len(payload) > C2D_LIMIT:
            raise HubError("C2D message of %d bytes exceeds the 64 KB limit" % len(payload))
        with self.lock:
            q = self.c2d.setdefault(device_id, [])
            if len(q) >= C2D_MAX_PENDING:
                raise HubError(
                    "device %r already has %d pending C2D messages (limit)"
                    % (device_id, C2D_MAX_PENDING)
                )
            m = C2DMessage(
                next(self._c2d_ids), payload, dict(properties or {}), message_id, correlation_id
            )
            if m.message_id is None:
                m.message_id = "c2d-%d" % m.seq
            q.append(m)
            self.events.append((self.clock(), device_id, "c2d_enqueued", m.message_id))
            link = self.live.get(device_id)
        if (
            link is not None
            and link.state is not None
            and link.state.session.granted("c2d") is not None
        ):
            self._deliver_c2d(link)
        return m.message_id

    def _deliver_c2d(self, link):
        st = link.state
        if st.identity.module_id is not None:
            return
        out = []
        with self.lock:
            if self.live.get(link.name) is not link:
                return
            qos = st.session.granted("c2d")
            if qos is None:
                return
            for m in self.c2d.get(st.identity.device_id, []):
                if m.link is not None:
                    continue
                dup = m.deliveries > 0
                m.deliveries += 1
                pairs = [("$.mid", m.message_id)]
                if m.correlation_id is not None:
                    pairs.append(("$.cid", m.correlation_id))
                pairs.append(("$.to", "/devices/%s/messages/deviceBound" % st.identity.device_id))
                pairs.extend(sorted(m.properties.items()))
                topic = st.identity.c2d_topic(pairs)
                if qos:
                    m.link = link
                    m.packet_id = link.next_packet_id()
                out.append((m, topic, dup and qos > 0))
            if qos == 0:  # delivered at most once: completed on send
                done = {id(m) for m, _, _ in out}
                self.c2d[st.identity.device_id] = [
                    m for m in self.c2d.get(st.identity.device_id, []) if id(m) not in done
                ]
            for m, _, dup in out:
                self.events.append(
                    (self.clock(), link.name, "c2d_sent", {"message_id": m.message_id, "dup": dup})
                )
        for m, topic, dup in out:
            link.send(mqtt.publish(topic, m.payload, qos, m.packet_id, dup=dup))

    def pending_c2d(self, device_id):
        with self.lock:
            return [m.message_id for m in self.c2d.get(device_id, [])]

    # ---- service-side queries ---------------------------------------------------------------

    def _check_identity(self, device_id, module_id):
        if self.registry.get(device_id, module_id) is None:
            raise HubError("unknown identity %r" % Identity(device_id, module_id).name)

    def telemetry(self, device_id=None):
        with self.lock:
            return [
                dict(r)
                for r in self.telemetry_log
                if device_id is None or r["device_id"] == device_id
            ]

    def wait_telemetry(self, n, device_id=None, timeout=10):
        end = time.monotonic() + timeout
        with self.lock:
            while True:
                got = self.telemetry(device_id)
                if len(got) >= n:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "waited %.1f s for %d telemetry messages%s, got %d"
                        % (
                            timeout,
                            n,
                            "" if device_id is None else " from %r" % device_id,
                            len(got),
                        )
                    )
                self.changed.wait(left)

    def twin(self, device_id, module_id=None):
        with self.lock:
            return self.twin_of(Identity(device_id, module_id).name).document()

    def connected(self, device_id, module_id=None):
        with self.lock:
            link = self.live.get(Identity(device_id, module_id).name)
            return link is not None and link.connected and not link.closed

    def wait_connected(self, device_id, timeout=10, module_id=None):
        end = time.monotonic() + timeout
        with self.lock:
            while not self.connected(device_id, module_id):
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "device %r did not connect within %.1f s"
                        % (Identity(device_id, module_id).name, timeout)
                    )
                self.changed.wait(min(left, 0.1))
            return True

    def wait_event(self, predicate, timeout=10, since=0):
        """Wait until some event (time, name, event, detail) at index >= since satisfies
        predicate; returns it."""
        end = time.monotonic() + timeout
        seen = since
        with self.lock:
            while True:
                for ev in self.events[seen:]:
                    if predicate(ev):
                        return ev
                seen = len(self.events)
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching event within %.1f s" % timeout)
                self.changed.wait(left)

    def link_of(self, device_id, module_id=None):
        with self.lock:
            return self.live.get(Identity(device_id, module_id).name)
