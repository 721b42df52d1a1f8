// mbedTLS config for the Pico W-like unix build: the repository's iothub config with
// MicroPython's bare-metal memory hooks, as ports/rp2/mbedtls/mbedtls_config_port.h does:
// MBEDTLS_PLATFORM_MEMORY, calloc/free = m_tracked_calloc/m_tracked_free (GC heap).
#ifndef IOTHUB_MBEDTLS_CONFIG_PICOW_H
#define IOTHUB_MBEDTLS_CONFIG_PICOW_H
#define MICROPY_MBEDTLS_CONFIG_BARE_METAL (1)
#include "mbedtls_config_iothub.h"
// Unix has no hardware entropy source: use the OS one (as the unix coverage variant does,
// which also tests the bare-metal memory hooks).
#undef MBEDTLS_ENTROPY_HARDWARE_ALT
#undef MBEDTLS_NO_PLATFORM_ENTROPY
#endif
