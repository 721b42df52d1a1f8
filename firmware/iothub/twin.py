# Device twin: GET and reported PATCH correlated by $rid with bounded waits, and desired
# properties delivered once per $version (also after a reconnect, when patches pushed while
# offline were missed). A mixin of DeviceClient.
from . import topics
from .clock import ticks_add, ticks_ms
from .errors import ConfigError, ConnectionLost, IoTHubError, ProtocolError, StatusError
from .jsonc import dumps as _dumps
from .jsonc import loads as _loads


class Twin:
    def _twin_filters(self):
        return [topics.TWIN_RES_SUB, topics.TWIN_DESIRED_SUB]

    def _request(self, topic_fn, payload, what, timeout_ms):
        if not self.is_connected:
            raise ConnectionLost("not connected")
        if not self._want_twin:
            # first twin request: subscribe to the responses (connect() renews it later);
            # a desired handler subscribed them already
            if not self._handlers.get("desired"):
                self._subscribe(self._twin_filters())
            self._want_twin = True
        self._rid += 1
        rid = str(self._rid)
        self._replies[rid] = None
        deadline = ticks_add(ticks_ms(), timeout_ms or self.timeout_ms)
        try:
            self._publish(topic_fn(rid), payload)
            self._s.wait(lambda: self._replies.get(rid) is not None, deadline, what + " response")
            status, version, body = self._replies[rid]
        except (ConnectionLost, ProtocolError) as e:
            self._lost(e)
            raise
        finally:
            self._replies.pop(rid, None)
        if status >= 400:
            raise StatusError(status, what, body)
        return version, body

    def get_twin(self, timeout_ms=None):
        """The twin document {"desired": {...}, "reported": {...}}."""
        doc = self._fetch_twin(timeout_ms)
        v = (doc.get("desired") or {}).get("$version")
        if isinstance(v, int) and (self._desired_version is None or v > self._desired_version):
            self._desired_version = v
        return doc

    def update_reported(self, patch, timeout_ms=None):
        """PATCH reported properties (None deletes a member). Returns the new version."""
        if not isinstance(patch, dict):
            raise ConfigError("reported properties must be a dict")
        version, _ = self._request(
            topics.twin_reported_topic, _dumps(patch).encode(), "twin reported PATCH", timeout_ms
        )
        return version

    def _fetch_twin(self, timeout_ms=None):
        _, body = self._request(topics.twin_get_topic, b"", "twin GET", timeout_ms)
        return _loads(body) or {}

    def _resync_twin(self):
        # Desired patches are pushed only while connected: after every connect GET the twin
        # and deliver the desired document once if its $version moved while we were away.
        self._resync_at = None
        try:
            doc = self._fetch_twin()
        except IoTHubError as e:
            if self.is_connected:
                self._log_line(1, "twin re-sync failed (%s); retrying in 5 s" % (e,))
                self._resync_at = ticks_add(ticks_ms(), 5000)
            return
        desired = doc.get("desired") or {}
        version = desired.get("$version")
        if not isinstance(version, int):
            return
        if self._desired_version is None:
            self._desired_version = version  # first connect: the application reads the twin itself
        elif version > self._desired_version:
            self._deliver_desired(desired, version)

    def _deliver_desired(self, patch, version):
        if self._desired_version is not None and version <= self._desired_version:
            return
        self._desired_version = version
        fn = self._handlers.get("desired")
        if fn is not None:
            try:
                fn(patch, version)
            except Exception as e:
                self._log_line(0, "on_desired raised %r" % (e,))
