// iothub firmware for the Raspberry Pi Pico W: RPI_PICO_W's settings, another name.
#include "boards/RPI_PICO_W/mpconfigboard.h"

#undef MICROPY_HW_BOARD_NAME
#define MICROPY_HW_BOARD_NAME "Raspberry Pi Pico W (iothub)"
