# Run at build time by the iothub_tls_preset_check target (mpconfigboard.cmake):
#   cmake -DIOTHUB_TLS_BUFFERS=<configured preset> -P check_preset.cmake
# Fails when the environment (make's IOTHUB_TLS_BUFFERS=...) asks for a different
# preset than the one this build directory was configured with.
if(DEFINED ENV{IOTHUB_TLS_BUFFERS} AND NOT "$ENV{IOTHUB_TLS_BUFFERS}" STREQUAL ""
        AND NOT "$ENV{IOTHUB_TLS_BUFFERS}" STREQUAL "${IOTHUB_TLS_BUFFERS}")
    message(FATAL_ERROR "iothub: this build directory was configured with "
        "IOTHUB_TLS_BUFFERS=${IOTHUB_TLS_BUFFERS}, not $ENV{IOTHUB_TLS_BUFFERS}: "
        "build each preset in its own BUILD= directory (or make clean first)")
endif()
