# iothub firmware for the Raspberry Pi Pico W: MicroPython's RPI_PICO_W plus the tlsx
# module, mbedTLS record buffers sized for Azure IoT Hub chains, and the iothub package
# frozen in. Built outside the MicroPython tree (see README "Boards and firmware: Building"):
#   cd micropython/ports/rp2
#   make BOARD_DIR=<repo>/boards/IOTHUB_PICO_W \
#        USER_C_MODULES=<repo>/firmware/cmodules/micropython.cmake \
#        IOTHUB_TLS_BUFFERS=rsa BUILD=build-IOTHUB_PICO_W-rsa
# Buffer preset, IOTHUB_TLS_BUFFERS (a make variable, which make passes on to CMake in
# the environment, or -DIOTHUB_TLS_BUFFERS=... in an exported CMAKE_ARGS):
#   rsa   (default) IN 6144 / OUT 2048, requests MFL 2048: RSA (G2) and ECC (G3) hubs
#   ecc   IN 4096 / OUT 2048, requests MFL 2048: ECC hubs only (smaller handshake peak)
#   stock IN 16384 / OUT 4096, requests nothing by default: hubs that ignore MFL
# Do not pass CMAKE_ARGS on make's command line: ports/rp2/Makefile appends the board
# and USER_C_MODULES to CMAKE_ARGS, and a command-line value replaces all of that
# (the stock RPI_PICO gets built, without tlsx).
# The preset is fixed when a build directory is first configured: use one BUILD=
# directory per preset (the build stops if IOTHUB_TLS_BUFFERS asks for another one).
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

if(NOT DEFINED IOTHUB_TLS_BUFFERS)
    # First configure of this build directory (no -D): the make variable / environment.
    if(DEFINED ENV{IOTHUB_TLS_BUFFERS} AND NOT "$ENV{IOTHUB_TLS_BUFFERS}" STREQUAL "")
        set(_iothub_preset "$ENV{IOTHUB_TLS_BUFFERS}")
    else()
        set(_iothub_preset rsa)
    endif()
    set(IOTHUB_TLS_BUFFERS "${_iothub_preset}" CACHE STRING "iothub TLS buffer preset: rsa, ecc or stock")
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
message(STATUS "iothub: TLS buffer preset ${IOTHUB_TLS_BUFFERS} (IN ${IOTHUB_TLS_IN} / OUT ${IOTHUB_TLS_OUT})")

# rp2's Makefile configures a build directory once: stop any later build of it that
# asks for another preset instead of silently building the configured one.
add_custom_target(iothub_tls_preset_check ALL
    COMMAND ${CMAKE_COMMAND} -DIOTHUB_TLS_BUFFERS=${IOTHUB_TLS_BUFFERS}
        -P ${MICROPY_BOARD_DIR}/check_preset.cmake
    VERBATIM
)
