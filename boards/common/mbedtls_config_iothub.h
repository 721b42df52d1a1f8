// mbedTLS configuration for iothub firmware (unix variant and Pico W).
//
// Named by MBEDTLS_CONFIG_FILE from boards/unix-iothub/mpconfigvariant.mk and
// boards/IOTHUB_PICO_W/mpconfigboard.cmake. It takes the port's own mbedTLS
// configuration unchanged, then:
//   - compiles in RFC 6066 max_fragment_length (stock MicroPython leaves it out),
//   - sizes the record buffers per board (IOTHUB_TLS_IN / IOTHUB_TLS_OUT, set by
//     the board files; the port's defaults are IN 16384 / OUT 4096).
// The input buffer must hold the largest handshake message the server sends (its
// Certificate message: mbedTLS reassembles handshake messages in the input
// buffer whatever the MFL) and every record once MFL is agreed. Figures and the
// reasoning behind each board's sizes: README "Board builds".
#ifndef IOTHUB_MBEDTLS_CONFIG_IOTHUB_H
#define IOTHUB_MBEDTLS_CONFIG_IOTHUB_H

// The port's configuration (ports/<port>/mbedtls/mbedtls_config_port.h).
#include "mbedtls/mbedtls_config_port.h"

#define MBEDTLS_SSL_MAX_FRAGMENT_LENGTH

#ifdef IOTHUB_TLS_IN
#undef MBEDTLS_SSL_IN_CONTENT_LEN
#define MBEDTLS_SSL_IN_CONTENT_LEN (IOTHUB_TLS_IN)
#endif

#ifdef IOTHUB_TLS_OUT
#undef MBEDTLS_SSL_OUT_CONTENT_LEN
#define MBEDTLS_SSL_OUT_CONTENT_LEN (IOTHUB_TLS_OUT)
#endif

// MFL contexts are capped at TLS 1.2 by tlsx; keep TLS 1.3 out of the build too
// (mbedTLS 3.6 aborts when a TLS 1.3 server echoes MFL).
#undef MBEDTLS_SSL_PROTO_TLS1_3

// Test builds only: count mbedTLS heap use (tlsx.heap_stats()). Routes
// mbedTLS allocations through counting wrappers around the C library's calloc.
#if defined(IOTHUB_TLSX_HEAP_STATS) && IOTHUB_TLSX_HEAP_STATS
#if MICROPY_MBEDTLS_CONFIG_BARE_METAL
#error "IOTHUB_TLSX_HEAP_STATS is for unix test builds (bare-metal ports allocate from the GC heap)"
#endif
#include <stddef.h>
void *tlsx_heap_calloc(size_t nmemb, size_t size);
void tlsx_heap_free(void *ptr);
#define MBEDTLS_PLATFORM_MEMORY
#undef MBEDTLS_PLATFORM_STD_CALLOC
#undef MBEDTLS_PLATFORM_STD_FREE
#define MBEDTLS_PLATFORM_STD_CALLOC tlsx_heap_calloc
#define MBEDTLS_PLATFORM_STD_FREE tlsx_heap_free
// Per-phase figures (tlsx.heap_phases()): tlsx follows the handshake through
// mbedTLS's debug messages, which it takes over (nothing is printed).
#define MBEDTLS_DEBUG_C
#endif

#endif // IOTHUB_MBEDTLS_CONFIG_IOTHUB_H
