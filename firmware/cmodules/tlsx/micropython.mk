# tlsx user C module for make-based ports (unix). See README "Boards and firmware: Building".
#   make -C ports/unix VARIANT_DIR=<repo>/boards/unix-iothub USER_C_MODULES=<repo>/firmware/cmodules
# Optional: IOTHUB_TLSX_DEFAULT_MFL=512|1024|2048|4096|0 overrides the default
# request (by default derived from the mbedTLS buffer sizes, see tlsx.c).
TLSX_MOD_DIR := $(USERMOD_DIR)

SRC_USERMOD_C += $(TLSX_MOD_DIR)/tlsx.c
CFLAGS_USERMOD += -I$(TLSX_MOD_DIR)
ifneq ($(IOTHUB_TLSX_DEFAULT_MFL),)
CFLAGS_USERMOD += -DTLSX_DEFAULT_MFL=$(IOTHUB_TLSX_DEFAULT_MFL)
endif

# Every client mbedtls_ssl_config gets the board default MFL (GNU ld --wrap).
LDFLAGS_USERMOD += -Wl,--wrap=mbedtls_ssl_config_defaults
# Test builds with heap accounting: per-phase figures from mbedTLS's debug
# messages (tlsx.heap_phases), so tlsx takes over every config's debug callback.
ifeq ($(IOTHUB_TLSX_HEAP_STATS),1)
LDFLAGS_USERMOD += -Wl,--wrap=mbedtls_ssl_conf_dbg
endif

# Build-time layout check: tlsx.c mirrors the leading members of
# mp_obj_ssl_context_t. Compare sslcontext_prefix.txt with the tree being built
# and refuse to build on any difference.
TLSX_LAYOUT_TREE := $(shell awk '/^typedef struct _mp_obj_ssl_context_t [{]/ {f=1; next} f {gsub(/^[ \t]+|[ \t]+$$/, ""); print; if ($$0 ~ / conf;$$/) exit}' $(TOP)/extmod/modtls_mbedtls.c | tr '\n' '|')
TLSX_LAYOUT_WANT := $(shell tr '\n' '|' < $(TLSX_MOD_DIR)/sslcontext_prefix.txt)
ifneq ($(TLSX_LAYOUT_TREE),$(TLSX_LAYOUT_WANT))
$(error tlsx: the leading members of mp_obj_ssl_context_t in $(TOP)/extmod/modtls_mbedtls.c are "$(TLSX_LAYOUT_TREE)", tlsx.c expects "$(TLSX_LAYOUT_WANT)": update tlsx.c and sslcontext_prefix.txt for this MicroPython)
endif
