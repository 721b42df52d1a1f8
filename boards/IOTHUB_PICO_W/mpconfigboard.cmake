# iothub firmware for the Raspberry Pi Pico W: MicroPython's RPI_PICO_W plus the tlsx
# module, mbedTLS record buffers sized for Azure IoT Hub chains, and the iothub package
# frozen in. Built outside the MicroPython tree (see README "Board builds"):
#   cd micropython/ports/rp2
#   make BOARD_DIR=<repo>/boards/IOTHUB_PICO_W \
#        USER_C_MODULES=<repo>/firmware/cmodules/micropython.cmake
# Buffer preset (CMake variable, pass with CMAKE_ARGS="-DIOTHUB_TLS_BUFFERS=ecc"):
#   rsa   (default) IN 6144 / OUT 2048, requests MFL 2048: RSA (G2) and ECC (G3) hubs
#   ecc   IN 4096 / OUT 2048, requests MFL 2048: ECC hubs only (smaller handshake peak)
#   stock IN 16384 / OUT 4096, requests nothing by default: hubs that ignore MFL
# On rp2 mbedTLS allocates from the MicroPython GC heap: the input buffer is one
# contiguous GC block per connection.

# --- RPI_PICO_W, as its mpconfigboard.cmake sets it ---
set(PICO_BOARD "pico_w")

set(MICROPY_PY_LWIP ON)
set(MICROPY_PY_NETWORK_CYW43 ON)

# Bluetooth
set(MICROPY_PY_BLUETOOTH ON)
set(MICROPY_BLUETOOTH_BTSTACK ON)
set(MICROPY_PY_BLUETOOTH_CYW43 ON)

# The pin names of the Pico W (the file is MicroPython's own).
set(MICROPY_BOARD_PINS ${MICROPY_PORT_DIR}/boards/RPI_PICO_W/pins.csv)

if(NOT DEFINED MICROPY_HW_FLASH_STORAGE_BYTES)
    set(MICROPY_HW_FLASH_STORAGE_BYTES 868352)  # 848 * 1024
endif()

# --- iothub ---
set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)

if(NOT IOTHUB_TLS_BUFFERS)
    set(IOTHUB_TLS_BUFFERS rsa)
endif()
if(IOTHUB_TLS_BUFFERS STREQUAL "rsa")
    set(IOTHUB_TLS_IN 6144)
    set(IOTHUB_TLS_OUT 2048)
elseif(IOTHUB_TLS_BUFFERS STREQUAL "ecc")
    set(IOTHUB_TLS_IN 4096)
    set(IOTHUB_TLS_OUT 2048)
elseif(IOTHUB_TLS_BUFFERS STREQUAL "stock")
    set(IOTHUB_TLS_IN 16384)
    set(IOTHUB_TLS_OUT 4096)
else()
    message(FATAL_ERROR "IOTHUB_TLS_BUFFERS must be rsa, ecc or stock (got '${IOTHUB_TLS_BUFFERS}')")
endif()

# Our mbedTLS configuration: rp2's own (ports/rp2/mbedtls/mbedtls_config_port.h), plus MFL
# and the buffer sizes. rp2 reads MBEDTLS_CONFIG_FILE in extmod.cmake, after this file.
set(MBEDTLS_CONFIG_FILE ${MICROPY_BOARD_DIR}/../common/mbedtls_config_iothub.h)
list(APPEND MICROPY_DEF_BOARD
    IOTHUB_TLS_IN=${IOTHUB_TLS_IN}
    IOTHUB_TLS_OUT=${IOTHUB_TLS_OUT}
)
