"""Local Azure IoT Hub emulator (CPython): TLS endpoint with a test PKI, MQTT 3.1.1 with IoT Hub
semantics, a Python service API (Emulator) and a CLI (`iothub-emulator`)."""

from .emulator import Emulator

__all__ = ["Emulator"]
