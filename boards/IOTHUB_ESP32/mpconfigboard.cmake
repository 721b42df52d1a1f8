# iothub firmware for ESP32 boards: MicroPython's ESP32_GENERIC plus the tlsx module,
# mbedTLS record buffers sized for Azure IoT Hub chains, and the iothub package frozen in.
# Built outside the MicroPython tree (see README "Boards and firmware: Building"):
#   cd micropython/ports/esp32
#   make BOARD_DIR=<repo>/boards/IOTHUB_ESP32 BUILD=build-IOTHUB_ESP32-rsa \
#        CMAKE_ARGS="-DUSER_C_MODULES=<repo>/firmware/cmodules/micropython.cmake -DIOTHUB_TLS_BUFFERS=rsa"
# (A CMAKE_ARGS given on make's command line replaces the one ports/esp32/Makefile builds,
# USER_C_MODULES included: put both in it, as above, or the module is silently left out.)
# Buffer preset (CMake variable IOTHUB_TLS_BUFFERS, or the environment variable of that name):
#   rsa   (default) IN 6144 / OUT 2048, requests MFL 2048: RSA (G2) and ECC (G3) hubs
#   ecc   IN 4096 / OUT 2048, requests MFL 2048: ECC hubs only (smaller handshake peak)
#   stock IN 16384 / OUT 4096, requests nothing by default: hubs that ignore MFL
# On ESP32 mbedTLS allocates from the IDF heap (not the MicroPython GC heap).

set(IDF_TARGET esp32)

if(NOT IOTHUB_TLS_BUFFERS AND DEFINED ENV{IOTHUB_TLS_BUFFERS})
    set(IOTHUB_TLS_BUFFERS $ENV{IOTHUB_TLS_BUFFERS})
endif()
if(NOT IOTHUB_TLS_BUFFERS)
    set(IOTHUB_TLS_BUFFERS rsa)
endif()
if(NOT IOTHUB_TLS_BUFFERS MATCHES "^(rsa|ecc|stock)$")
    message(FATAL_ERROR "IOTHUB_TLS_BUFFERS must be rsa, ecc or stock (got '${IOTHUB_TLS_BUFFERS}')")
endif()

# ESP32_GENERIC's sdkconfig fragments (as its mpconfigboard.cmake lists them), then ours:
# ESP-IDF compiles MFL into mbedTLS (CONFIG_MBEDTLS_SSL_MAX_FRAGMENT_LENGTH) and takes the
# record buffer sizes from the fragment of the chosen preset. Relative paths are relative
# to ports/esp32.
set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    boards/sdkconfig.ble
)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/boards/sdkconfig.csi)
    list(APPEND SDKCONFIG_DEFAULTS boards/sdkconfig.csi)
endif()
list(APPEND SDKCONFIG_DEFAULTS
    ${MICROPY_BOARD_DIR}/sdkconfig.iothub
    ${MICROPY_BOARD_DIR}/sdkconfig.tls_${IOTHUB_TLS_BUFFERS}
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
