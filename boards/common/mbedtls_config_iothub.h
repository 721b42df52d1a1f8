// mbedTLS configuration for iothub firmware (unix variant and Pico W).
//
// Named by MBEDTLS_CONFIG_FILE from boards/unix-iothub/mpconfigvariant.mk and
// boards/IOTHUB_PICO_W/mpconfigboard.cmake. It takes the port's own mbedTLS
// configuration unchanged, then:
//   - compiles in RFC 6066 max_fragment_length (stock MicroPython leaves it out),
//   - sizes the record buffers per board (IOTHUB_TLS_IN / IOTHUB_TLS_OUT, set by
//     the board files; the port's defaults are IN 16384 / OUT 4096),
//   - shrinks them after the handshake and trims the heap the handshake needs
//     (smaller elliptic-curve windows, only the curves and key exchanges IoT Hub
//     uses).
// The input buffer must hold the largest handshake message the server sends (its
// Certificate message: mbedTLS reassembles handshake messages in the input
// buffer whatever the MFL) and every record once MFL is agreed. Figures and the
// reasoning behind each board's sizes: README "Boards and firmware: Building".
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

// --- Less heap per connection (README "mbedTLS heap per handshake phase"). Each
// option below was kept because tools/bench/bench_tls_heap.py showed it pays and
// the handshake still succeeds against both emulator chains; the figures, the
// CPU cost and the options tried and rejected are in the README; what each
// option does, with sources: docs/mbedtls-memory.md.

// After the handshake, shrink the record buffers to the max fragment length the
// client requested (mbedTLS reallocates them at the end of the handshake; the
// input buffer must still hold the whole Certificate message during it). ecc
// preset with MFL 2048: -2048 B held per connection; rsa preset: -4096 B.
// Only in builds whose input buffer is below the 16 KB TLS record, i.e. that
// request MFL: a client that requests none gets its input buffer shrunk to
// min(IN, OUT) by mbedTLS 3.6 (4096 B in the stock preset), which then refuses
// the 16 KB records of a hub that was never asked for less.
#if MBEDTLS_SSL_IN_CONTENT_LEN < 16384
#define MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH
#endif

// Elliptic-curve arithmetic: the smallest comb window (mbedTLS's default is 4).
// Each point multiplication by another point than the generator (ECDSA verify,
// ECDHE) precomputes 2^(w-1) points on the heap: -2.3 KB of handshake peak with
// the ECC chain, about 7 % more handshake time. (Multiplications by the
// generator use mbedTLS's precomputed tables in flash, MBEDTLS_ECP_FIXED_POINT_OPTIM,
// left on: turning it off saves flash, not heap, and costs 23 % of the ECC
// handshake time.)
#define MBEDTLS_ECP_WINDOW_SIZE 2
// NIST fast reduction (the rp2 port already sets it; this makes the unix variant
// match): less heap and about 45 % less time in P-256/P-384 arithmetic.
#define MBEDTLS_ECP_NIST_OPTIM

// Curves: IoT Hub's chains and ECDHE use P-256 and P-384 (DigiCert Global Root
// G3 and the Azure ECC issuing CAs are P-384; X.509 device keys are P-256 or
// P-384). The port enables six more; they only cost code.
#undef MBEDTLS_ECP_DP_SECP192R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP521R1_ENABLED
#undef MBEDTLS_ECP_DP_SECP192K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP224K1_ENABLED
#undef MBEDTLS_ECP_DP_SECP256K1_ENABLED

// Key exchanges: both TLS profiles offer ECDHE suites only (ECDHE-ECDSA for the
// ECC hub, ECDHE-RSA for the RSA hub). Static-RSA and PSK key exchanges go.
#undef MBEDTLS_KEY_EXCHANGE_RSA_ENABLED
#undef MBEDTLS_KEY_EXCHANGE_PSK_ENABLED

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
