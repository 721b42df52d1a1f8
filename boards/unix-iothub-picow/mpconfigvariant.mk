# Test variant (Pico W-like heap): boards/unix-iothub's settings, then mbedTLS on the GC heap (rp2-like).
include $(VARIANT_DIR)/../unix-iothub/mpconfigvariant.mk
MBEDTLS_CONFIG_FILE = \"mbedtls_config_picow.h\"
