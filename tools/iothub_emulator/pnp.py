"""IoT Plug and Play seen from the service side of the emulator: set a writable property of a
component, read back whether and how the device acknowledged it, invoke a component command.

Conventions (docs/pnp.md): a component's properties sit in an object marked "__t": "c"; the
device acknowledges a writable property in its reported properties with
{"value", "ac" (status), "av" (the desired version it answers), "ad" (description)}; a component
command is the direct method "{component}*{command}"; component telemetry carries `$.sub`.
"""

import time

from .topics import Identity

MARKER = "__t"


def writable_patch(name, value, component=None):
    """The desired patch that sets one writable property (of a component: marked)."""
    if not isinstance(name, str) or not name:
        raise ValueError("writable property name must be a non-empty string")
    if component is None:
        return {name: value}
    if not isinstance(component, str) or not component:
        raise ValueError("component name must be a non-empty string")
    return {component: {MARKER: "c", name: value}}


def command_name(name, component=None):
    """The direct-method name of a command: "{component}*{command}" or just the command."""
    if not isinstance(name, str) or not name:
        raise ValueError("command name must be a non-empty string")
    return name if component is None else "%s*%s" % (component, name)


def _section(doc, component):
    return doc if component is None else (doc.get(component) or {})


def writable_status(twin, name, component=None):
    """What the service knows of one writable property, from an emulator Twin:
    desired value and the desired version that set it, the device's ack, and a state:
    "not set", "pending" (no ack, or one answering an older version), "accepted" (2xx) or
    "rejected"."""
    desired = _section(twin.desired, component)
    path = (name,) if component is None else (component, name)
    set_at = twin.desired_updated.get(path)
    reported = _section(twin.reported, component)
    ack = reported.get(name) if isinstance(reported, dict) else None
    if not (isinstance(ack, dict) and isinstance(ack.get("av"), int)):
        ack = None
    if name not in desired:
        state = "not set"
    elif ack is None or set_at is None or ack["av"] < set_at:
        state = "pending"
    elif isinstance(ack.get("ac"), int) and 200 <= ack["ac"] < 300:
        state = "accepted"
    else:
        state = "rejected"
    return {
        "component": component,
        "name": name,
        "desired": desired.get(name),
        "desired_version": set_at,
        "ack": ack,
        "state": state,
    }


class PnPService:
    """Service-side Plug and Play operations on a Hub (the Emulator delegates here)."""

    def __init__(self, hub):
        self.hub = hub

    def set_writable(self, device_id, name, value, component=None, module_id=None):
        """Patch desired properties with one writable property; returns the desired $version."""
        return self.hub.patch_desired(device_id, writable_patch(name, value, component), module_id)

    def writable_status(self, device_id, name, component=None, module_id=None):
        with self.hub.lock:
            twin = self.hub.twin_of(Identity(device_id, module_id).name)
            return writable_status(twin, name, component)

    def wait_ack(self, device_id, name, component=None, version=None, timeout=10, module_id=None):
        """Wait until the device acknowledged the property at `version` (default: the version
        that last set it) or later; returns writable_status(). TimeoutError otherwise."""
        end = time.monotonic() + timeout
        with self.hub.lock:
            while True:
                st = self.writable_status(device_id, name, component, module_id)
                want = version if version is not None else st["desired_version"]
                if st["ack"] is not None and want is not None and st["ack"]["av"] >= want:
                    return st
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        "no acknowledgement of %s at version %s within %.1f s"
                        % ((component + "/" if component else "") + name, want, timeout)
                        + " (state %s, ack %r)" % (st["state"], st["ack"])
                    )
                self.hub.changed.wait(left)

    def invoke_command(
        self, device_id, name, payload=None, component=None, timeout=30, module_id=None
    ):
        """Invoke a (component) command; -> (status, payload) like invoke_method."""
        return self.hub.invoke_method(
            device_id, command_name(name, component), payload, timeout, module_id
        )
