// tlsx: TLS extras for MicroPython's mbedTLS-based `tls` module (iothub firmware).
//
// What stock MicroPython cannot do, and this module adds without changing the
// MicroPython tree:
//   1. Every client TLS configuration requests an RFC 6066 max_fragment_length
//      (the board default, TLSX_DEFAULT_MFL) and is capped at TLS 1.2. This is a
//      link-time wrap of the public mbedtls_ssl_config_defaults() (the build adds
//      -Wl,--wrap=mbedtls_ssl_config_defaults), so contexts made by any library
//      (asyncio, mip, requests, umqtt) get it too.
//   2. tlsx.set_max_fragment_length(ctx, n): per-context control for a
//      tls.SSLContext. The mbedtls_ssl_config lives inside MicroPython's private
//      SSLContext struct; we mirror only its leading members (checked against
//      extmod/modtls_mbedtls.c at build time by micropython.mk / micropython.cmake)
//      and check at run time the pointers the SSLContext constructor stored
//      before writing anything. A mismatch raises instead of writing.
//   3. tlsx.heap_stats(): current and peak bytes of mbedTLS heap, in builds whose
//      mbedTLS config routes mbedTLS allocations through tlsx_heap_calloc/free
//      (boards/common/mbedtls_config_iothub.h with IOTHUB_TLSX_HEAP_STATS=1);
//      tlsx.heap_phases(): the same per handshake phase (test builds).
//
// Python-visible names are unconditional (the CMake ports' qstr scanner does not
// see a user module's compile definitions); optional features raise
// NotImplementedError when compiled out.
//
// Sources read: mbedTLS 3.6 include/mbedtls/ssl.h (mbedtls_ssl_conf_max_frag_len,
// mbedtls_ssl_conf_max_tls_version), RFC 6066 section 4, MicroPython
// extmod/modtls_mbedtls.c (SSLContext layout and constructor), GNU ld --wrap.

#include <stdlib.h>
#include <string.h>

#include "py/runtime.h"
#include "py/obj.h"
#include "py/builtin.h"

#include "mbedtls/ssl.h"
#include "mbedtls/entropy.h"
#include "mbedtls/ctr_drbg.h"
#include "mbedtls/platform.h"

#if !defined(MBEDTLS_SSL_MAX_FRAGMENT_LENGTH)
#error "tlsx needs MBEDTLS_SSL_MAX_FRAGMENT_LENGTH: build with the board's mbedTLS config (boards/common/mbedtls_config_iothub.h or the ESP32 sdkconfig fragment)"
#endif
#if !defined(MBEDTLS_SSL_CLI_C) || !defined(MBEDTLS_SSL_PROTO_TLS1_2)
#error "tlsx needs a TLS 1.2 client in mbedTLS"
#endif

// ---------------------------------------------------------------------------
// Fragment-length codes (RFC 6066 section 4: 2^9, 2^10, 2^11, 2^12).

static int tlsx_mfl_code(mp_int_t n) {
    switch (n) {
        case 0:
            return MBEDTLS_SSL_MAX_FRAG_LEN_NONE;
        case 512:
            return MBEDTLS_SSL_MAX_FRAG_LEN_512;
        case 1024:
            return MBEDTLS_SSL_MAX_FRAG_LEN_1024;
        case 2048:
            return MBEDTLS_SSL_MAX_FRAG_LEN_2048;
        case 4096:
            return MBEDTLS_SSL_MAX_FRAG_LEN_4096;
        default:
            return -1;
    }
}

static mp_int_t tlsx_mfl_bytes(int code) {
    switch (code) {
        case MBEDTLS_SSL_MAX_FRAG_LEN_512:
            return 512;
        case MBEDTLS_SSL_MAX_FRAG_LEN_1024:
            return 1024;
        case MBEDTLS_SSL_MAX_FRAG_LEN_2048:
            return 2048;
        case MBEDTLS_SSL_MAX_FRAG_LEN_4096:
            return 4096;
        default:
            return 0;
    }
}

// The largest fragment this build's buffers allow (mbedTLS refuses codes above
// min(IN, OUT): MBEDTLS_TLS_EXT_ADV_CONTENT_LEN in library/ssl_misc.h).
#define TLSX_BUF_MIN (MBEDTLS_SSL_IN_CONTENT_LEN < MBEDTLS_SSL_OUT_CONTENT_LEN ? \
    MBEDTLS_SSL_IN_CONTENT_LEN : MBEDTLS_SSL_OUT_CONTENT_LEN)

// Board default in bytes (0 = do not request). A board may set it explicitly;
// otherwise: a build whose input buffer is below the 16 KB TLS record size must
// ask servers for records that fit, so it requests the largest size that fits
// both buffers; a stock-sized input buffer requests nothing (stock behaviour).
#ifndef TLSX_DEFAULT_MFL
#if MBEDTLS_SSL_IN_CONTENT_LEN >= 16384
#define TLSX_DEFAULT_MFL (0)
#elif TLSX_BUF_MIN >= 4096
#define TLSX_DEFAULT_MFL (4096)
#elif TLSX_BUF_MIN >= 2048
#define TLSX_DEFAULT_MFL (2048)
#elif TLSX_BUF_MIN >= 1024
#define TLSX_DEFAULT_MFL (1024)
#else
#define TLSX_DEFAULT_MFL (512)
#endif
#endif

#if TLSX_DEFAULT_MFL != 0 && TLSX_DEFAULT_MFL != 512 && TLSX_DEFAULT_MFL != 1024 \
    && TLSX_DEFAULT_MFL != 2048 && TLSX_DEFAULT_MFL != 4096
#error "TLSX_DEFAULT_MFL must be 0, 512, 1024, 2048 or 4096"
#endif
#if TLSX_DEFAULT_MFL > TLSX_BUF_MIN
#error "TLSX_DEFAULT_MFL is larger than min(MBEDTLS_SSL_IN_CONTENT_LEN, MBEDTLS_SSL_OUT_CONTENT_LEN)"
#endif

// Request `code` on a client config and cap it at TLS 1.2: with TLS 1.3
// compiled in, mbedTLS 3.6 aborts when a TLS 1.3 server echoes MFL in
// EncryptedExtensions. Returns an mbedTLS error code (0 on success).
static int tlsx_apply(mbedtls_ssl_config *conf, int code) {
    int ret = mbedtls_ssl_conf_max_frag_len(conf, (unsigned char)code);
    if (ret == 0 && code != MBEDTLS_SSL_MAX_FRAG_LEN_NONE) {
        mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
    }
    return ret;
}

// ---------------------------------------------------------------------------
// Link-time wrap: the board default for every client configuration.

int __real_mbedtls_ssl_config_defaults(mbedtls_ssl_config *conf, int endpoint, int transport, int preset);

int __wrap_mbedtls_ssl_config_defaults(mbedtls_ssl_config *conf, int endpoint, int transport, int preset) {
    int ret = __real_mbedtls_ssl_config_defaults(conf, endpoint, transport, preset);
    if (ret == 0 && TLSX_DEFAULT_MFL != 0
        && endpoint == MBEDTLS_SSL_IS_CLIENT && transport == MBEDTLS_SSL_TRANSPORT_STREAM) {
        ret = tlsx_apply(conf, tlsx_mfl_code(TLSX_DEFAULT_MFL));
    }
    return ret;
}

// ---------------------------------------------------------------------------
// Access to the mbedtls_ssl_config inside a tls.SSLContext.

// Leading members of mp_obj_ssl_context_t in extmod/modtls_mbedtls.c. Keep in
// step with sslcontext_prefix.txt: the build compares that file against the
// tree being built and fails on a mismatch.
typedef struct _tlsx_ssl_context_prefix_t {
    mp_obj_base_t base;
    #ifdef TLSX_TEST_WRONG_LAYOUT
    int wrong; // negative test of the run-time check only (never in a board build)
    #endif
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context ctr_drbg;
    mbedtls_ssl_config conf;
} tlsx_ssl_context_prefix_t;

static mp_obj_t tlsx_sslcontext_type(void) {
    mp_obj_t mod = mp_import_name(MP_QSTR_tls, mp_const_none, MP_OBJ_NEW_SMALL_INT(0));
    mp_obj_t type = mp_load_attr(mod, MP_QSTR_SSLContext);
    if (!mp_obj_is_type(type, &mp_type_type)) {
        mp_raise_msg(&mp_type_RuntimeError, MP_ERROR_TEXT("tlsx: tls.SSLContext is not a type"));
    }
    return type;
}

// Returns the config of a client tls.SSLContext (or of an instance of a Python
// subclass of it), after checking that the pointers its constructor stored are
// where this build expects them. Raises instead of returning a guess.
static mbedtls_ssl_config *tlsx_get_conf(mp_obj_t ctx_in) {
    mp_obj_t native = mp_obj_cast_to_native_base(ctx_in, tlsx_sslcontext_type());
    if (native == MP_OBJ_NULL) {
        mp_raise_TypeError(MP_ERROR_TEXT("tlsx: expected a tls.SSLContext"));
    }
    tlsx_ssl_context_prefix_t *p = MP_OBJ_TO_PTR(native);
    mbedtls_ssl_config *conf = &p->conf;
    // ssl_context_make_new() calls mbedtls_ssl_conf_rng(conf, mbedtls_ctr_drbg_random,
    // &self->ctr_drbg) and mbedtls_ssl_conf_verify(conf, cb, self): both pointers
    // must point back into this very object.
    bool ok = conf->MBEDTLS_PRIVATE(f_rng) == mbedtls_ctr_drbg_random
        && conf->MBEDTLS_PRIVATE(p_rng) == (void *)&p->ctr_drbg;
    #if defined(MBEDTLS_X509_CRT_PARSE_C)
    ok = ok && conf->MBEDTLS_PRIVATE(p_vrfy) == (void *)p;
    #endif
    if (!ok) {
        mp_raise_msg(&mp_type_RuntimeError,
            MP_ERROR_TEXT("tlsx: tls.SSLContext layout does not match this build; nothing written"));
    }
    if (mbedtls_ssl_conf_get_endpoint(conf) != MBEDTLS_SSL_IS_CLIENT) {
        mp_raise_ValueError(MP_ERROR_TEXT("tlsx: max fragment length is requested by clients; this is a server context"));
    }
    return conf;
}

// set_max_fragment_length(ctx, n): n in 512, 1024, 2048, 4096 (0: request nothing).
static mp_obj_t tlsx_set_max_fragment_length(mp_obj_t ctx_in, mp_obj_t n_in) {
    mp_int_t n = mp_obj_get_int(n_in);
    int code = tlsx_mfl_code(n);
    if (code < 0) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("tlsx: max fragment length must be 512, 1024, 2048 or 4096 (got %d)"), (int)n);
    }
    if (n > TLSX_BUF_MIN) {
        mp_raise_msg_varg(&mp_type_ValueError,
            MP_ERROR_TEXT("tlsx: max fragment length %d exceeds this firmware's TLS buffers (IN %d, OUT %d)"),
            (int)n, (int)MBEDTLS_SSL_IN_CONTENT_LEN, (int)MBEDTLS_SSL_OUT_CONTENT_LEN);
    }
    mbedtls_ssl_config *conf = tlsx_get_conf(ctx_in);
    int ret = tlsx_apply(conf, code);
    if (ret != 0) {
        mp_raise_OSError(ret);
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_2(tlsx_set_max_fragment_length_obj, tlsx_set_max_fragment_length);

// get_max_fragment_length(ctx) -> the size this context requests, or 0.
// (What a server agreed to is not kept by an mbedTLS 3.6 client: it only checks
// that an echo matches the request. Check the wire for that.)
static mp_obj_t tlsx_get_max_fragment_length(mp_obj_t ctx_in) {
    mbedtls_ssl_config *conf = tlsx_get_conf(ctx_in);
    return MP_OBJ_NEW_SMALL_INT(tlsx_mfl_bytes(conf->MBEDTLS_PRIVATE(mfl_code)));
}
static MP_DEFINE_CONST_FUN_OBJ_1(tlsx_get_max_fragment_length_obj, tlsx_get_max_fragment_length);

// ---------------------------------------------------------------------------
// Heap accounting (test builds only).

#if defined(IOTHUB_TLSX_HEAP_STATS) && IOTHUB_TLSX_HEAP_STATS

// Each block carries its size in a header as large as the strictest alignment.
typedef union {
    size_t size;
    long double ld;
    void *p;
    long long ll;
} tlsx_heap_hdr_t;

static size_t tlsx_heap_current;
static size_t tlsx_heap_peak;
static void tlsx_phase_track(void);

void *tlsx_heap_calloc(size_t nmemb, size_t size) {
    if (size != 0 && nmemb > (SIZE_MAX - sizeof(tlsx_heap_hdr_t)) / size) {
        return NULL;
    }
    size_t n = nmemb * size;
    tlsx_heap_hdr_t *h = calloc(1, sizeof(tlsx_heap_hdr_t) + n);
    if (h == NULL) {
        return NULL;
    }
    h->size = n;
    tlsx_heap_current += n;
    if (tlsx_heap_current > tlsx_heap_peak) {
        tlsx_heap_peak = tlsx_heap_current;
    }
    tlsx_phase_track();
    return h + 1;
}

void tlsx_heap_free(void *ptr) {
    if (ptr == NULL) {
        return;
    }
    tlsx_heap_hdr_t *h = (tlsx_heap_hdr_t *)ptr - 1;
    tlsx_heap_current -= h->size;
    free(h);
}

// Per-phase figures: test builds also compile mbedTLS's debug messages in
// (MBEDTLS_DEBUG_C, boards/common/mbedtls_config_iothub.h) and take over the
// debug callback of every SSL config (-Wl,--wrap=mbedtls_ssl_conf_dbg). A
// client logs "client state: <state>" as it enters each handshake state, and
// prints the peer's chain ("peer certificate #1:") after parsing it and before
// verifying it: each of these messages closes the current phase, recording the
// highest mbedTLS heap seen in it and what was held at its end.
#if !defined(MBEDTLS_DEBUG_C)
#error "IOTHUB_TLSX_HEAP_STATS needs MBEDTLS_DEBUG_C (boards/common/mbedtls_config_iothub.h sets it)"
#endif
#include "mbedtls/debug.h"

#define TLSX_PHASES_MAX (24)
#define TLSX_PHASE_NAME (28)
typedef struct {
    char name[TLSX_PHASE_NAME];
    size_t peak;
    size_t held;
} tlsx_phase_t;

static tlsx_phase_t tlsx_phases[TLSX_PHASES_MAX]; // closed phases
static size_t tlsx_n_phases;
static tlsx_phase_t tlsx_phase_open = { "start", 0, 0 };

static void tlsx_phase_track(void) {
    if (tlsx_heap_current > tlsx_phase_open.peak) {
        tlsx_phase_open.peak = tlsx_heap_current;
    }
}

// Close the open phase and start one named by `name` (up to `len` characters).
static void tlsx_phase_mark(const char *name, size_t len) {
    if (tlsx_n_phases < TLSX_PHASES_MAX) {
        tlsx_phase_open.held = tlsx_heap_current;
        tlsx_phases[tlsx_n_phases++] = tlsx_phase_open;
    }
    if (len >= TLSX_PHASE_NAME) {
        len = TLSX_PHASE_NAME - 1;
    }
    memcpy(tlsx_phase_open.name, name, len);
    tlsx_phase_open.name[len] = '\0';
    tlsx_phase_open.peak = tlsx_heap_current;
}

static void tlsx_phase_debug(void *p, int level, const char *file, int line, const char *str) {
    (void)p;
    (void)level;
    (void)file;
    (void)line;
    static const char state[] = "client state: ";
    static const char prefix[] = "MBEDTLS_SSL_";
    static const char chain[] = "peer certificate #1:";
    if (strncmp(str, state, sizeof(state) - 1) == 0) {
        str += sizeof(state) - 1;
        if (strncmp(str, prefix, sizeof(prefix) - 1) == 0) {
            str += sizeof(prefix) - 1;
        }
        size_t len = strcspn(str, "\r\n");
        tlsx_phase_mark(str, len);
    } else if (strncmp(str, chain, sizeof(chain) - 1) == 0) {
        tlsx_phase_mark("VERIFY_CHAIN", 12);
    }
}

void __real_mbedtls_ssl_conf_dbg(mbedtls_ssl_config *conf,
    void (*f_dbg)(void *, int, const char *, int, const char *), void *p_dbg);

void __wrap_mbedtls_ssl_conf_dbg(mbedtls_ssl_config *conf,
    void (*f_dbg)(void *, int, const char *, int, const char *), void *p_dbg) {
    (void)f_dbg;
    (void)p_dbg;
    // Level 3 carries the chain print; nothing is printed.
    mbedtls_debug_set_threshold(3);
    __real_mbedtls_ssl_conf_dbg(conf, tlsx_phase_debug, NULL);
}

#define TLSX_HEAP_STATS_ON (1)
#else
#define TLSX_HEAP_STATS_ON (0)
#endif

// heap_stats(reset=False) -> (current, peak) bytes held by mbedTLS. With
// reset=True the peak restarts from the current value after reading.
static mp_obj_t tlsx_heap_stats(size_t n_args, const mp_obj_t *args) {
    #if TLSX_HEAP_STATS_ON
    mp_obj_t t[2] = {
        mp_obj_new_int_from_uint(tlsx_heap_current),
        mp_obj_new_int_from_uint(tlsx_heap_peak),
    };
    if (n_args > 0 && mp_obj_is_true(args[0])) {
        tlsx_heap_peak = tlsx_heap_current;
    }
    return mp_obj_new_tuple(2, t);
    #else
    (void)n_args;
    (void)args;
    mp_raise_msg(&mp_type_NotImplementedError,
        MP_ERROR_TEXT("tlsx: heap accounting is off in this build (IOTHUB_TLSX_HEAP_STATS)"));
    #endif
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tlsx_heap_stats_obj, 0, 1, tlsx_heap_stats);

// heap_phases(reset=False) -> [(name, peak, held), ...]: the handshake phases
// recorded since the last reset (names: mbedTLS client states without their
// MBEDTLS_SSL_ prefix, and VERIFY_CHAIN between parsing and verifying the
// server's chain), then the open phase, with the highest mbedTLS heap in each
// and what it held at the phase's end (now, for the open one). With reset=True
// the record restarts after reading, as one open phase named "start".
static mp_obj_t tlsx_heap_phases(size_t n_args, const mp_obj_t *args) {
    #if TLSX_HEAP_STATS_ON
    mp_obj_t list = mp_obj_new_list(0, NULL);
    for (size_t i = 0; i <= tlsx_n_phases; i++) {
        tlsx_phase_t *ph = i < tlsx_n_phases ? &tlsx_phases[i] : &tlsx_phase_open;
        mp_obj_t t[3] = {
            mp_obj_new_str(ph->name, strlen(ph->name)),
            mp_obj_new_int_from_uint(ph->peak),
            mp_obj_new_int_from_uint(i < tlsx_n_phases ? ph->held : tlsx_heap_current),
        };
        mp_obj_list_append(list, mp_obj_new_tuple(3, t));
    }
    if (n_args > 0 && mp_obj_is_true(args[0])) {
        tlsx_n_phases = 0;
        strcpy(tlsx_phase_open.name, "start");
        tlsx_phase_open.peak = tlsx_heap_current;
    }
    return list;
    #else
    (void)n_args;
    (void)args;
    mp_raise_msg(&mp_type_NotImplementedError,
        MP_ERROR_TEXT("tlsx: heap accounting is off in this build (IOTHUB_TLSX_HEAP_STATS)"));
    #endif
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(tlsx_heap_phases_obj, 0, 1, tlsx_heap_phases);

// ---------------------------------------------------------------------------
// Module.

static const mp_rom_map_elem_t tlsx_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_tlsx) },
    { MP_ROM_QSTR(MP_QSTR_set_max_fragment_length), MP_ROM_PTR(&tlsx_set_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_get_max_fragment_length), MP_ROM_PTR(&tlsx_get_max_fragment_length_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap_stats), MP_ROM_PTR(&tlsx_heap_stats_obj) },
    { MP_ROM_QSTR(MP_QSTR_heap_phases), MP_ROM_PTR(&tlsx_heap_phases_obj) },
    { MP_ROM_QSTR(MP_QSTR_DEFAULT_MFL), MP_ROM_INT(TLSX_DEFAULT_MFL) },
    { MP_ROM_QSTR(MP_QSTR_IN_CONTENT_LEN), MP_ROM_INT(MBEDTLS_SSL_IN_CONTENT_LEN) },
    { MP_ROM_QSTR(MP_QSTR_OUT_CONTENT_LEN), MP_ROM_INT(MBEDTLS_SSL_OUT_CONTENT_LEN) },
    { MP_ROM_QSTR(MP_QSTR_HEAP_STATS), MP_ROM_INT(TLSX_HEAP_STATS_ON) },
};
static MP_DEFINE_CONST_DICT(tlsx_module_globals, tlsx_module_globals_table);

const mp_obj_module_t tlsx_user_cmodule = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&tlsx_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_tlsx, tlsx_user_cmodule);
