# iothub: Azure IoT Hub client for MicroPython (ESP32, Pico W, unix port).
#
# Names are loaded lazily (module __getattr__), so `import iothub` costs almost nothing
# and a device pays in RAM only for the parts it uses: a device that never provisions
# never loads `iothub.provisioning`.

__version__ = "0.1.0"

_LAZY = {
    "ROOT_G2": "roots",
    "ROOT_G3": "roots",
    "tls_context": "tlsprofile",
    "TLSInfo": "tlsprofile",
    "sas_token": "sas",
    "derive_device_key": "sas",
    "device_resource_uri": "sas",
    "parse_connection_string": "connstr",
    "unix_time": "clock",
    "DeviceClient": "client",
    "Message": "inbound",
    "ConfigError": "errors",
    "IoTHubError": "errors",
    "TLSError": "errors",
    "ProtocolError": "errors",
    "ConnectionLost": "errors",
    "Timeout": "errors",
    "ConnectionRefused": "errors",
    "AuthenticationError": "errors",
    "StatusError": "errors",
    "ProxyError": "errors",
}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        # MicroPython resolves `from . import submodule` by asking the package first.
        if name.startswith("_") or not name.islower():
            raise AttributeError(name)
        try:
            return __import__("iothub." + name, None, None, ("_",))
        except ImportError:
            raise AttributeError(name)
    m = __import__("iothub." + mod, None, None, (name,))
    value = getattr(m, name)
    globals()[name] = value
    return value
