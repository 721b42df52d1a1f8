# iothub example configuration. Copy to config.py (git-ignored), fill it in, then
#   make deploy PORT=/dev/ttyACM0
# config.py holds secrets (Wi-Fi password, device key): never commit it.

# Wi-Fi (ignored on the unix port)
WIFI_SSID = ""
WIFI_PASSWORD = ""

# Either a device connection string from the hub ...
#   HostName=<hub>.azure-devices.net;DeviceId=<device>;SharedAccessKey=<base64 key>
CONNECTION_STRING = ""

# ... or Device Provisioning Service settings (used when CONNECTION_STRING is empty).
DPS_ID_SCOPE = ""
DPS_REGISTRATION_ID = ""
DPS_SYMMETRIC_KEY = ""  # the device's own key (derive it in the factory from a group key)
DPS_STATE_FILE = "/provisioning.json"  # where the assignment is kept between boots

# TLS profile: "rsa" (hubs with DigiCert Global Root G2, the default for Azure IoT Hub)
# or "ecc" (hubs with the ECC server certificate, DigiCert Global Root G3).
TLS_PROFILE = "rsa"

# Telemetry period in seconds and the client's poll slice in milliseconds.
TELEMETRY_INTERVAL_S = 30
POLL_MS = 1000

# Time sync (Wi-Fi boards): NTP server, attempts and per-attempt timeout in seconds.
NTP_HOST = "pool.ntp.org"
NTP_ATTEMPTS = 5
NTP_TIMEOUT_S = 5

# LED toggled by cloud-to-device messages: None picks the board's ("LED" on Pico W, 2 on
# ESP32 DevKit boards); or a pin number/name.
LED_PIN = None

# aio_main.py (the asyncio example): the LED blinks every BLINK_MS milliseconds.
BLINK_MS = 500

# Optional, for the local hub emulator or an IoT Edge gateway: where to connect and which
# root certificates (DER bytes) to trust instead of the profile's DigiCert root.
HOST = None
PORT = 8883
ROOTS = None
