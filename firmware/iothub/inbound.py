# What the client does with what the hub sends: cloud-to-device (and module input)
# messages, direct-method requests, twin responses and desired-property patches.
# A mixin of DeviceClient; it uses the client's handlers, session and twin state.
import json

from . import topics
from .errors import ProtocolError
from .jsonc import dumps as _dumps
from .jsonc import loads as _loads


class Message:
    """A cloud-to-device (or module input) message."""

    def __init__(self, body, properties, system_properties, input_name=None):
        self.body = body
        self.properties = properties
        self.system_properties = system_properties
        self.input_name = input_name

    @property
    def message_id(self):
        return self.system_properties.get("mid")

    @property
    def correlation_id(self):
        return self.system_properties.get("cid")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Message %d bytes, properties=%r>" % (len(self.body), self.properties)


def _split_properties(props):
    app = {}
    system = {}
    for k, v in props.items():
        if k.startswith("$."):
            system[k[2:]] = v
        else:
            app[k] = v
    return app, system


class Inbound:
    def _on_publish(self, pkt):
        if not self._route(pkt.topic, pkt.payload):
            self._log_line(1, "ignored a message on an unexpected topic")

    def _route(self, topic, payload):
        if topic.startswith("$iothub/"):
            r = topics.parse_twin_response(topic)
            if r is not None:
                status, rid, version = r
                if rid in self._replies:
                    self._replies[rid] = (status, version, payload)
                return True
            version = topics.parse_desired_topic(topic)
            if version is not None:
                patch = _loads(payload) or {}
                if not version:
                    version = patch.get("$version", 0)
                self._deliver_desired(patch, version)
                return True
            m = topics.parse_method_topic(topic)
            if m is not None:
                self._answer_method(m[0], m[1], payload)
                return True
            return False
        props = None
        input_name = None
        if self.module_id:
            r = topics.parse_module_input_topic(topic, self.device_id, self.module_id)
            if r is not None:
                input_name, props = r
        else:
            props = topics.parse_c2d_topic(topic, self.device_id)
        if props is None:
            return False
        app, system = _split_properties(props)
        fn = self._handlers.get("message")
        if fn is not None:
            try:
                fn(Message(bytes(payload), app, system, input_name))
            except Exception as e:
                self._log_line(0, "on_message raised %r" % (e,))
        return True

    def _answer_method(self, name, rid, payload):
        fn = self._handlers.get("method")
        if fn is None:
            status, result = 404, {"error": "no handler for method %s" % name}
        else:
            try:
                try:
                    arg = _loads(payload)
                except ProtocolError:
                    arg = bytes(payload)
                r = fn(name, arg)
                if isinstance(r, tuple) and len(r) == 2:
                    status, result = r
                else:
                    status, result = 200, r
                if not isinstance(status, int) or not 0 <= status <= 65535:
                    raise ValueError("method handler returned status %r" % (status,))
            except Exception as e:
                status, result = 500, {"error": "%s: %s" % (type(e).__name__, e)}
                self._log_line(0, "method %s raised %r" % (name, e))
        body = b"" if result is None else _dumps(result).encode()
        self._publish(topics.method_response_topic(status, rid), body)
