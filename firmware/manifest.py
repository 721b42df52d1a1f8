# Freezes the iothub device package into a firmware image.
# Board manifests include this file after their port's manifest, e.g.
#   include("$(PORT_DIR)/boards/manifest.py")
#   include("<repo>/firmware/manifest.py")
# Relative paths below resolve against this file's directory.
metadata(
    description="Azure IoT Hub client for MicroPython, with TLS made for constrained devices",
    version="0.1.0",
)

# Every module of firmware/iothub/ (subpackages included), compiled to bytecode.
package("iothub")
