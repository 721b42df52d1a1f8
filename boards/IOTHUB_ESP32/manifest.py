# ruff: noqa: F821  (manifest API: include/require/package are provided by makemanifest)
# ESP32_GENERIC's frozen modules plus the iothub package.
include("$(PORT_DIR)/boards/manifest.py")
# Relative paths resolve against this file.
include("../../firmware/manifest.py")
