# iothub unix variant (host tests of the MFL firmware), built outside the tree:
#   make -C ports/unix VARIANT_DIR=<repo>/boards/unix-iothub \
#        USER_C_MODULES=<repo>/firmware/cmodules
# Knobs (make variables):
#   IOTHUB_TLS_BUFFERS  ecc (default) | rsa | stock : mbedTLS record buffer preset,
#                       the same presets as the ESP32 and Pico W boards
#   IOTHUB_TLS_IN / IOTHUB_TLS_OUT : explicit sizes (override the preset)
#   IOTHUB_TLSX_HEAP_STATS=1 : count mbedTLS heap use (tlsx.heap_stats()); test builds
# Presets (figures and reasons: README "Buffer presets and why"):
#   ecc   IN 4096 / OUT 2048: holds an Azure-like ECC chain (about 2.8 KB); an RSA one (about
#         4.0 KB) fits with under 100 B to spare, too tight for real RSA hubs; requests MFL 2048
#   rsa   IN 6144 / OUT 2048: holds an Azure-like RSA chain (about 4.0 KB) with headroom;
#         requests MFL 2048
#   stock IN 16384 / OUT 4096: MicroPython's sizes, works with hubs that ignore MFL
#         (requests nothing unless IOTHUB_TLSX_DEFAULT_MFL is set)
IOTHUB_TLS_BUFFERS ?= ecc
ifeq ($(IOTHUB_TLS_BUFFERS),ecc)
IOTHUB_TLS_IN ?= 4096
IOTHUB_TLS_OUT ?= 2048
else ifeq ($(IOTHUB_TLS_BUFFERS),rsa)
IOTHUB_TLS_IN ?= 6144
IOTHUB_TLS_OUT ?= 2048
else ifeq ($(IOTHUB_TLS_BUFFERS),stock)
IOTHUB_TLS_IN ?= 16384
IOTHUB_TLS_OUT ?= 4096
else
$(error IOTHUB_TLS_BUFFERS must be ecc, rsa or stock (got "$(IOTHUB_TLS_BUFFERS)"))
endif
IOTHUB_TLSX_HEAP_STATS ?= 0

# Features this variant does without (no extra submodules or system libraries).
MICROPY_PY_BTREE = 0
MICROPY_PY_FFI = 0

# Our mbedTLS configuration: the port's own plus MFL and the buffer sizes.
# (Found through -I$(VARIANT_DIR), which the unix Makefile adds.)
MBEDTLS_CONFIG_FILE = \"mbedtls_config_iothub.h\"
CFLAGS += -I$(VARIANT_DIR)/../common
CFLAGS += -DIOTHUB_TLS_IN=$(IOTHUB_TLS_IN) -DIOTHUB_TLS_OUT=$(IOTHUB_TLS_OUT)
CFLAGS += -DIOTHUB_TLSX_HEAP_STATS=$(IOTHUB_TLSX_HEAP_STATS)

FROZEN_MANIFEST ?= $(VARIANT_DIR)/manifest.py
