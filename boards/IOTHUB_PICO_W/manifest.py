# ruff: noqa: F821  (manifest API: include/require/package are provided by makemanifest)
# RPI_PICO_W's frozen modules plus the iothub package.
include("$(PORT_DIR)/boards/RPI_PICO_W/manifest.py")
# Relative paths resolve against this file.
include("../../firmware/manifest.py")
