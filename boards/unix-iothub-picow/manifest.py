# ruff: noqa: F821  (manifest API: include/require/package are provided by makemanifest)
# Unix variant: the port's usual frozen modules plus the iothub package.
include("$(PORT_DIR)/variants/manifest.py")
include("$(MPY_DIR)/extmod/asyncio")
# Relative paths resolve against this file.
include("../../firmware/manifest.py")
