"""IoT Hub MQTT topics, seen from the hub (docs/protocol.md 2.6-2.9, 2.11-2.12).

Classifies what a device publishes or subscribes to, decodes property bags and builds the topics the
hub sends. Device and module ids are never percent-decoded by the hub (§2.12); bag keys and values are,
case-insensitively (`%2f` == `%2F`), and `+` is a literal plus, never a space.
"""

from urllib.parse import quote, unquote

# System property keys on the D2C topic (§2.6), reported without their "$." prefix.
SYSTEM_KEYS = (
    "mid",
    "cid",
    "uid",
    "ct",
    "ce",
    "ctime",
    "exp",
    "on",
    "ifid",
    "sub",
    "diagid",
    "diagctx",
)


def decode_bag(bag):
    """'k1=v1&k2&k3=' -> [(k1, 'v1'), (k2, None), (k3, '')], decoded. Optional leading '?' tolerated."""
    if bag.startswith("?"):
        bag = bag[1:]
    out = []
    if not bag:
        return out
    for part in bag.split("&"):
        if not part:
            continue
        k, eq, v = part.partition("=")
        out.append((unquote(k, errors="strict"), unquote(v, errors="strict") if eq else None))
    return out


def encode_bag(pairs):
    """[(k, v)] -> 'k=v&k2&k3=' with names and values encoded like urllib.parse.quote(safe="").

    System keys keep a literal '$.' (the form in Microsoft's MQTT doc); values are always encoded, so
    '/' in `$.to` becomes %2F and clients that split topics on '/' keep the bag in one level."""
    parts = []
    for k, v in pairs:
        if k.startswith("$."):
            ek = "$." + quote(k[2:], safe="")
        else:
            ek = quote(k, safe="")
        if v is None:
            parts.append(ek)
        else:
            parts.append(ek + "=" + quote(str(v), safe=""))
    return "&".join(parts)


def split_properties(pairs):
    """Split decoded bag pairs into (custom, system) dicts; system keys lose their '$.' prefix."""
    custom = {}
    system = {}
    for k, v in pairs:
        if k.startswith("$."):
            system[k[2:]] = v
        else:
            custom[k] = v
    return custom, system


def parse_query(s):
    """Decoded dict of a '?k=v&...' tail (the part after '?'); keys without '=' map to None."""
    return dict(decode_bag(s))


class Identity:
    """The topics one device or module may use."""

    def __init__(self, device_id, module_id=None):
        self.device_id = device_id
        self.module_id = module_id
        base = "devices/" + device_id
        if module_id:
            base += "/modules/" + module_id
        self.base = base
        self.events = base + "/messages/events/"
        self.name = device_id if not module_id else device_id + "/" + module_id

    # -- what the device publishes ------------------------------------------------------------

    def classify_publish(self, topic):
        """-> (kind, info) with kind one of 'telemetry', 'twin_get', 'twin_patch', 'method_res', or
        (None, reason) when IoT Hub would not accept this topic from this identity."""
        if topic.startswith(self.events) or topic + "/" == self.events:
            bag = topic[len(self.events) :] if topic.startswith(self.events) else ""
            try:
                return "telemetry", decode_bag(bag)
            except UnicodeDecodeError:
                return None, "property bag is not valid percent-encoded UTF-8"
        if topic.startswith("$iothub/twin/"):
            head, q, query = topic.partition("?")
            if not q:
                return None, "twin request topic without '?$rid='"
            try:
                props = parse_query(query)
            except UnicodeDecodeError:
                return None, "twin request query is not valid percent-encoding"
            if not props.get("$rid"):
                return None, "twin request without $rid"
            if head == "$iothub/twin/GET/":
                return "twin_get", props
            if head == "$iothub/twin/PATCH/properties/reported/":
                return "twin_patch", props
            return None, "unknown twin operation %r" % head
        if topic.startswith("$iothub/methods/res/"):
            head, q, query = topic.partition("?")
            parts = head.split("/")  # ['$iothub','methods','res','{status}','']
            if not q or len(parts) != 5 or parts[4] != "":
                return None, "method response topic is not $iothub/methods/res/{status}/?$rid={rid}"
            try:
                status = int(parts[3])
                props = parse_query(query)
            except (ValueError, UnicodeDecodeError):
                return None, "method response status %r is not an integer" % parts[3]
            if not props.get("$rid"):
                return None, "method response without $rid"
            return "method_res", (status, props["$rid"])
        if topic.startswith("devices/"):
            segs = topic.split("/")
            if len(segs) > 1 and segs[1] != self.device_id:
                return None, "publish to another device's topic %r" % topic
            if self.module_id and (len(segs) < 4 or segs[3] != self.module_id):
                return None, "publish to another identity's topic %r" % topic
        return None, "IoT Hub does not accept publishes to %r" % topic

    # -- what the device subscribes to --------------------------------------------------------

    def classify_filter(self, flt):
        """-> (feature, None) for an accepted filter, (None, 'foreign:...') for another identity's
        topic (the hub disconnects), (None, 'unknown:...') for a filter the hub does not serve."""
        fixed = {
            "$iothub/twin/res/#": "twin_res",
            "$iothub/twin/PATCH/properties/desired/#": "desired",
            "$iothub/methods/POST/#": "methods",
        }
        if flt in fixed:
            return fixed[flt], None
        segs = flt.split("/")
        if segs[0] == "devices" and len(segs) > 1:
            # azure-sdk-for-c subscribes devices/+/messages/devicebound/# ('+' in place of the id).
            if segs[1] not in (self.device_id, "+"):
                return None, "foreign: subscribe to another device's topic %r" % flt
            own = "devices/" + self.device_id + "/" + "/".join(segs[2:])
            if not self.module_id:
                if own == self.base + "/messages/devicebound/#":
                    return "c2d", None
            else:
                if len(segs) > 3 and segs[2] == "modules" and segs[3] not in (self.module_id, "+"):
                    return None, "foreign: subscribe to another module's topic %r" % flt
                own = self.base + "/" + "/".join(segs[4:]) if len(segs) > 4 else ""
                if own in (self.base + "/inputs/#", self.base + "/#"):
                    return "inputs", None
        return None, "unknown: IoT Hub serves no topic filter %r" % flt

    # -- what the hub publishes ---------------------------------------------------------------

    def c2d_topic(self, bag_pairs):
        return "devices/%s/messages/devicebound/%s" % (self.device_id, encode_bag(bag_pairs))


def twin_response(status, rid, version=None):
    t = "$iothub/twin/res/%d/?$rid=%s" % (status, quote(rid, safe=""))
    if version is not None:
        t += "&$version=%d" % version
    return t


def desired_patch(version):
    return "$iothub/twin/PATCH/properties/desired/?$version=%d" % version


def method_request(name, rid):
    # The name goes raw (azure-sdk-for-c takes it from the topic without decoding; a Plug and Play
    # command arrives as "component*command").
    return "$iothub/methods/POST/%s/?$rid=%s" % (name, quote(rid, safe=""))
