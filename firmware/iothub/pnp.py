# IoT Plug and Play conventions (docs/pnp.md): component telemetry ($.sub), reported
# properties with the "__t":"c" component marker, writable-property acknowledgements
# {"ac", "av", "ad", "value"}, desired properties split by component, and
# "component*command" method names. The helpers are pure (no sockets, no clock): builders
# raise ConfigError on bad application input, parsers raise ProtocolError on malformed hub
# input. The client's Plug and Play calls (report_properties, the automatic acks) are at
# the end. Loaded only when the application uses a Plug and Play feature: a client without
# one never imports this module.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


from .errors import ConfigError, ConnectionLost, ProtocolError
from .jsonc import dumps as _dumps

MARKER = "__t"  # the member that marks a component in reported and desired properties
COMPONENT = "c"  # its value
SEPARATOR = "*"  # method name of a component command: {component}*{command}
UNKNOWN_COMMAND = const(404)  # status answered for a command no handler knows
_NAME_MAX = const(64)  # DTDL names: at most 64 characters


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_component(name):
    """A component name as DTDL allows it: a letter, then letters, digits or "_", not
    ending with "_", at most 64 characters. Returns it; ConfigError otherwise."""
    if not isinstance(name, str) or not name or len(name) > _NAME_MAX:
        raise ConfigError("component name must be a str of 1..64 characters, got %r" % (name,))
    ok = name[0].isalpha() and name[-1] != "_"
    for c in name:
        if not (c.isalpha() or c.isdigit() or c == "_") or ord(c) > 127:
            ok = False
    if not ok:
        raise ConfigError(
            "component name %r: a letter, then letters, digits or '_' (not ending with '_')" % name
        )
    return name


def _check_property(name):
    # Twin keys exclude '.', '$', space and control characters; "__t" is the marker.
    if not isinstance(name, str) or not name:
        raise ConfigError("property name must be a non-empty str, got %r" % (name,))
    if name == MARKER:
        raise ConfigError("%r is the component marker, not a property name" % MARKER)
    for c in name:
        if c in ".$ " or ord(c) < 32:
            raise ConfigError("property name %r: no '.', '$', space or control character" % name)
    return name


def _plain(value, depth=0):
    # JSON values only (MicroPython's json.dumps prints other objects as invalid JSON)
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if depth > 16:
        return False
    if isinstance(value, (list, tuple)):
        for v in value:
            if not _plain(v, depth + 1):
                return False
        return True
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str) or not _plain(value[k], depth + 1):
                return False
        return True
    return False


def _json(value, what):
    if not _plain(value):
        raise ConfigError("%s is not a JSON value (finite numbers, str, list, dict...)" % what)
    return _dumps(value)


# ---- telemetry -----------------------------------------------------------------------------


def telemetry_property(component):
    """The "$.sub={component}" system property of component telemetry."""
    # (topics is loaded here, not with this module: a Plug and Play handler client that
    # sends no component telemetry never needs it)
    from .topics import quote

    return "$.sub=" + quote(check_component(component))


def add_component(topic, component):
    """A telemetry topic (devices/.../messages/events/[bag]) with the component appended."""
    return topic + ("" if topic.endswith("/") else "&") + telemetry_property(component)


# ---- reported properties -------------------------------------------------------------------


class Patch:
    """A reported-properties patch: root properties, components (wrapped with "__t":"c")
    and writable-property acknowledgements, several of each in one JSON object.

        p = Patch().report({"serialNumber": "A1"}).report({"maxTemp": 30}, "thermostat1")
        p.ack("targetTemperature", 21.5, version, component="thermostat2")
        client.report_properties(p)

    encode() writes a fixed order (root members first, then components in first-use order,
    the marker first in each, ack members as ac, av, ad, value): the bytes azure-sdk-for-c's
    property writer produces for the same calls. A name given twice keeps its last value."""

    def __init__(self):
        self._members = {}  # component (None: root) -> [[name, JSON text], ...]
        self._order = []  # components in first-use order

    def _section(self, component):
        members = self._members.get(component)
        if members is None:
            if component is not None:
                check_component(component)
            members = self._members[component] = []
            self._order.append(component)
        return members

    def _put(self, component, name, text):
        _check_property(name)
        members = self._section(component)
        for m in members:
            if m[0] == name:
                m[1] = text
                return self
        members.append([name, text])
        return self

    def report(self, properties, component=None):
        """Add read-only properties (a dict; None deletes a property)."""
        if not isinstance(properties, dict):
            raise ConfigError("reported properties must be a dict")
        members = []  # all checked before any is added
        for name in sorted(properties):  # one order on every runtime
            _check_property(name)
            members.append((name, _json(properties[name], "property %r" % (name,))))
        self._section(component)
        for name, text in members:
            self._put(component, name, text)
        return self

    def ack(self, name, value, version, status=200, description=None, component=None):
        """Add the acknowledgement of a writable property: the value the device applied,
        the desired $version it answers (av), a status code (ac) and an optional
        description (ad)."""
        if not _is_int(version) or version < 0:
            raise ConfigError("ack version must be a non-negative int, got %r" % (version,))
        if not _is_int(status):
            raise ConfigError("ack status must be an int, got %r" % (status,))
        text = '{"ac":%d,"av":%d' % (status, version)
        if description is not None:
            if not isinstance(description, str):
                raise ConfigError("ack description must be a str")
            text += ',"ad":' + _json(description, "description")
        text += ',"value":' + _json(value, "value of %r" % (name,)) + "}"
        return self._put(component, name, text)

    def __len__(self):
        return len(self._order)

    def encode(self):
        """The JSON text of the patch, as bytes."""
        out = ["{"]
        first = True
        root = self._members.get(None)
        if root:
            for name, text in root:
                if not first:
                    out.append(",")
                first = False
                out.append(_key(name))
                out.append(text)
        for component in self._order:
            if component is None:
                continue
            if not first:
                out.append(",")
            first = False
            out.append('"')
            out.append(component)  # checked: letters, digits, "_"
            out.append('":{"' + MARKER + '":"' + COMPONENT + '"')
            for name, text in self._members[component]:
                out.append(",")
                out.append(_key(name))
                out.append(text)
            out.append("}")
        out.append("}")
        return "".join(out).encode()


def _key(name):
    # '"name":' -- json.dumps only when the name needs escaping
    if '"' in name or "\\" in name:
        return _dumps(name) + ":"
    return '"' + name + '":'


# ---- desired properties --------------------------------------------------------------------


def _component_body(name, value, components):
    """The member dict when `name` is a component (marker "__t":"c", or a name the model
    declares), else None. A declared component that is not an object is malformed."""
    if isinstance(value, dict):
        if value.get(MARKER) == COMPONENT or name in components:
            return value
        return None
    if name in components and value is not None:
        raise ProtocolError("desired component %r is not a JSON object" % name)
    return None


def writable_properties(desired, components=()):
    """[(component or None, name, value)] of a desired-properties patch, or of the desired
    section of a full twin, sorted. Members starting with "$" ($version, $metadata) are
    skipped. An object marked "__t":"c", or named in `components` (the model's component
    names, for patches written without the marker), is a component: its members are its
    properties (the marker skipped). value None: the property was deleted (null). A
    declared component set to null (deleted with all its properties) yields nothing."""
    if not isinstance(desired, dict):
        raise ProtocolError("desired properties are not a JSON object")
    out = []
    for name in sorted(desired):
        if name.startswith("$"):
            continue
        value = desired[name]
        body = _component_body(name, value, components)
        if body is None:
            if not (value is None and name in components):
                out.append((None, name, value))
            continue
        for member in sorted(body):
            if member == MARKER or member.startswith("$"):
                continue
            out.append((name, member, body[member]))
    return out


def ack_of(reported, name, component=None):
    """The acknowledgement {"ac", "av", "ad"?, "value"} of a writable property in a reported
    section, or None when there is none (or it is not shaped like one)."""
    section = reported if component is None else reported.get(component)
    if not isinstance(section, dict):
        return None
    ack = section.get(name)
    if not isinstance(ack, dict) or not _is_int(ack.get("av")) or not _is_int(ack.get("ac")):
        return None
    return ack


def unacknowledged(twin, components=()):
    """(desired $version, [(component, name, value)]) for a full twin {"desired",
    "reported"}: the writable properties whose acknowledgement is missing or answers an
    older desired version. After a connect, acknowledge these: they changed while the
    device was away (the convention IoT Central relies on)."""
    if not isinstance(twin, dict):
        raise ProtocolError("the twin is not a JSON object")
    desired = twin.get("desired")
    reported = twin.get("reported")
    if not isinstance(desired, dict):
        raise ProtocolError("the twin has no desired properties object")
    if not isinstance(reported, dict):
        reported = {}
    version = desired.get("$version")
    if not _is_int(version):
        raise ProtocolError("the twin's desired properties have no integer $version")
    out = []
    for component, name, value in writable_properties(desired, components):
        if value is None:
            continue
        ack = ack_of(reported, name, component)
        if ack is None or ack["av"] < version:
            out.append((component, name, value))
    return version, out


def _ack_result(r):
    # on_writable's return value: None (200), a status, or (status, description)
    if r is None:
        return 200, None
    if _is_int(r):
        return r, None
    if isinstance(r, tuple) and len(r) == 2 and _is_int(r[0]):
        if r[1] is None or isinstance(r[1], str):
            return r
    raise ValueError("on_writable returned %r, not a status or (status, description)" % (r,))


def acknowledge(on_writable, items, version, log=None):
    """Call on_writable(component, name, value, version) for each (component, name, value)
    and return the Patch acknowledging every one (None when nothing is to acknowledge).
    The handler returns None (200), a status, or (status, description); an exception is
    acknowledged with status 500. Deleted properties (None) reach the handler and are not
    acknowledged."""
    patch = None
    for component, name, value in items:
        try:
            status, description = _ack_result(on_writable(component, name, value, version))
        except Exception as e:  # an application callback never breaks the loop
            status, description = 500, "%s: %s" % (type(e).__name__, e)
            if log is not None:
                log(0, "on_writable(%r, %r) raised %r" % (component, name, e))
        if value is None:
            continue
        if patch is None:
            patch = Patch()
        try:
            patch.ack(name, value, version, status, description, component)
        except ConfigError as e:
            if log is not None:
                log(0, "cannot acknowledge %r of %r: %s" % (name, component, e))
    return patch if patch else None


# ---- commands ------------------------------------------------------------------------------


def split_command(method_name):
    """(component or None, command) of a direct-method name: "thermostat1*getMaxMinReport"
    -> ("thermostat1", "getMaxMinReport"); a name without "*" is a root command. Splits at
    the first "*"."""
    i = method_name.find(SEPARATOR)
    if i < 0:
        return None, method_name
    return method_name[:i] or None, method_name[i + 1 :]


def command_method(command, component=None):
    """The method name the service invokes for a command: "{component}*{command}"."""
    if not isinstance(command, str) or not command:
        raise ConfigError("command name must be a non-empty str")
    if component is None:
        return command
    return check_component(component) + SEPARATOR + command


def handler(on_command, on_method=None):
    """A method handler (name, payload) -> result that calls on_command(component, command,
    payload). on_command returns (status, payload) or a payload (200); None means "not a
    command I know": the call goes to on_method when there is one, else it is answered
    404 with an error naming the command."""

    def handle(method_name, payload):
        component, command = split_command(method_name)
        r = on_command(component, command, payload)
        if r is not None:
            return r
        if on_method is not None:
            return on_method(method_name, payload)
        if component is None:
            what = "unknown command %r" % command
        else:
            what = "unknown command %r of component %r" % (command, component)
        return UNKNOWN_COMMAND, {"error": what}

    return handle


# ---- the client's Plug and Play calls (DeviceClient and iothub.twin call these) ------------


def report_properties(tw, properties, component=None, timeout_ms=None):
    """Send a reported PATCH through twin tw (iothub.inbound.Twin): a dict of properties (of a
    component: wrapped with "__t":"c"), or a Patch. Returns the new reported version."""
    from .twin import PATCH, request

    body = reported_patch(properties, component)
    version, _ = request(tw, PATCH, body, "twin reported PATCH", timeout_ms)
    return version


def reported_patch(properties, component=None):
    """The reported PATCH body for report_properties() (a dict, or a Patch)."""
    if isinstance(properties, Patch):
        if component is not None:
            raise ConfigError("a Patch names its components itself: drop component=")
        patch = properties
    else:
        patch = Patch().report(properties, component)
    return patch.encode()


def writable(tw, desired, version, full_twin):
    """on_writable for each writable property of a desired patch (or, with full_twin, of the
    whole twin document: those not acknowledged at its desired version), all acknowledged in
    one reported PATCH that is not waited for (this runs inside poll()). An ack lost with the
    link is sent again after the reconnect, when the twin shows it missing or older than the
    desired version."""
    from .twin import PATCH

    c = tw.c
    try:
        if full_twin:
            version, items = unacknowledged(desired, c.components)
        else:
            items = writable_properties(desired, c.components)
    except ProtocolError as e:
        from .errors import explained

        explained("reports", "report", c, "twin", "writable properties not acknowledged: %s" % (e,))
        return
    patch = acknowledge(c._handlers.get("writable"), items, version, c._log_line)
    if patch is not None and c.is_connected:
        tw.req += 1
        try:
            c._s.publish(PATCH + str(tw.req), patch.encode())
        except ConnectionLost as e:  # acknowledged again after the reconnect
            c._lost(e)
