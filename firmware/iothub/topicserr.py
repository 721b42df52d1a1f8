# The texts of the ConfigErrors of iothub.topics (bad ids, properties, system properties)
# and iothub.twin (a reported patch that is not a dict): loaded for one message and dropped
# again (errors.explained), so that neither keeps them.
from .errors import ConfigError

_CONFIG = (
    # iothub.topics' codes
    "expected str or bytes, got %s",
    "device id",
    "module id",
    "properties must be a dict or a list of (name, value) pairs",
    "property names must be non-empty str",
    "property values must be str, int, float or None",
    "message_id must be a str",
    "correlation_id must be a str",
    "user_id must be a str",
    "content_type must be a str",
    "content_encoding must be a str",
    # iothub.twin's
    "reported properties must be a dict",
)


def config(code, v):
    """The ConfigError of code (iothub.topics' _C_ codes; 11: iothub.twin's), v: the value
    it is about."""
    t = _CONFIG[code]
    if not code:
        v = type(v).__name__
    elif code < 3:  # an id
        if not isinstance(v, str) or not v:
            return ConfigError(t + " must be a non-empty str")
        for c in "/#+":
            if c in v:
                return ConfigError("%s must not contain %r" % (t, c))
    return ConfigError(t % (v,) if "%" in t else t)
