// Test variant (Pico W-like heap): boards/unix-iothub plus the Pico W's way of
// allocating mbedTLS memory, i.e. from the MicroPython GC heap through m_tracked_calloc.
#include "../unix-iothub/mpconfigvariant.h"

// rp2: MICROPY_TRACKED_ALLOC (MICROPY_SSL_MBEDTLS || ...); provides m_tracked_calloc/free.
#define MICROPY_TRACKED_ALLOC (1)
