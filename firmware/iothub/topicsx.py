# The IoT Hub MQTT names a client needs once (client id, user name: built at construction)
# and the property-bag encoder of tools and tests (docs/protocol.md section 2). Split from
# iothub.topics, which keeps what a send needs; reached as iothub.topics.<name> too.

from .errors import ConfigError
from .topics import _bag, _id, quote

API_VERSION = "2021-04-12"


def client_id(device_id, module_id=None):
    """MQTT client id: {device_id} or {device_id}/{module_id}."""
    if module_id is None:
        return _id(device_id, 1)  # (codes of iothub.topicserr's texts)
    return _id(device_id, 1) + "/" + _id(module_id, 2)


def username(hostname, device_id, module_id=None, model_id=None):
    """{host}/{device}[/{module}]/?api-version=2021-04-12[&model-id={quote(model)}]"""
    if not isinstance(hostname, str) or not hostname:
        raise ConfigError("hostname must be a non-empty str")
    u = hostname + "/" + client_id(device_id, module_id) + "/?api-version=" + API_VERSION
    if model_id is not None:
        if not isinstance(model_id, str) or not model_id:
            raise ConfigError("model id must be a non-empty str")
        u += "&model-id=" + quote(model_id)
    return u


def encode_property_bag(props):
    """ "k=v&k2=v2" with names and values percent-encoded; a None value gives "k", "" gives "k=".

    A dict is encoded sorted by name (MicroPython dicts have no fixed order); a list of pairs
    keeps its order."""
    return "&".join(_bag([], props, isinstance(props, dict)))
