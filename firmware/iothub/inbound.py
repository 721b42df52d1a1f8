# What the client does with what the hub sends: cloud-to-device (and module input)
# messages, direct-method requests, twin responses and desired-property patches.
# Loaded with the first PUBLISH from the hub (a telemetry-only client never loads it).
import json

from . import routes
from .errors import ProtocolError
from .jsonc import dumps, loads


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


def route(c, pkt):
    """Deliver one PUBLISH from the hub to DeviceClient c's handlers or twin."""
    topic = pkt.topic
    payload = pkt.payload
    props = None
    input_name = None
    if topic.startswith("$iothub/"):
        r = routes.parse_twin_response(topic)
        if r is not None:
            if c._tw is not None:
                c._tw.on_response(r[1], r[0], r[2], payload)
            return
        r = routes.parse_desired_topic(topic)
        if r is not None:
            c._twin().on_patch(payload, r)
            return
        r = routes.parse_method_topic(topic)
        if r is not None:
            _answer_method(c, r[0], r[1], payload)
            return
    elif c.module_id:
        r = routes.parse_module_input_topic(topic, c.device_id, c.module_id)
        if r is not None:
            input_name, props = r
    else:
        props = routes.parse_c2d_topic(topic, c.device_id)
    if props is None:
        c._log_line(1, "ignored a message on an unexpected topic")
        return
    app = {}
    system = {}  # "$.mid" and the like, without "$."
    for k, v in props.items():
        if k.startswith("$."):
            system[k[2:]] = v
        else:
            app[k] = v
    fn = c._handlers.get("message")
    if fn is not None:
        try:
            fn(Message(bytes(payload), app, system, input_name))
        except Exception as e:
            c._log_line(0, "on_message raised %r" % (e,))


def _answer_method(c, name, rid, payload):
    fn = c._handlers.get("method")
    on_command = c._handlers.get("command")
    if on_command is not None:  # Plug and Play: "component*command", then on_method
        from .pnp import command_handler

        fn = command_handler(on_command, fn)
    if fn is None:
        status, result = 404, {"error": "no handler for method %s" % name}
    else:
        try:
            try:
                arg = loads(payload)
            except ProtocolError:
                arg = bytes(payload)
            r = fn(name, arg)
            if hasattr(r, "send") and hasattr(c, "_answer_later"):
                # a coroutine (an async def handler of iothub.aio): answered when it returns
                c._answer_later(name, rid, r)
                return
            status, result = method_status(r)
        except Exception as e:
            status, result = 500, {"error": "%s: %s" % (type(e).__name__, e)}
            c._log_line(0, "method %s raised %r" % (name, e))
    respond(c, status, result, rid)


def method_status(r):
    """A method handler's result: (status, payload), or a payload answered with 200."""
    if isinstance(r, tuple) and len(r) == 2:
        status, result = r
    else:
        status, result = 200, r
    if not isinstance(status, int) or not 0 <= status <= 65535:
        raise ValueError("method handler returned status %r" % (status,))
    return status, result


def respond(c, status, result, rid):
    body = b"" if result is None else dumps(result).encode()
    c._publish(routes.method_response_topic(status, rid), body)
