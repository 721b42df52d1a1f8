// iothub unix variant: the standard unix variant plus the tlsx module's build
// settings (mpconfigvariant.mk). Used for host tests of the MFL firmware.
#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

// Found through the port directory (-I.), since this variant lives outside it.
#include "variants/mpconfigvariant_common.h"
