// iothub firmware for ESP32 boards (based on ESP32_GENERIC).
#define MICROPY_HW_BOARD_NAME "ESP32 module (iothub)"
#define MICROPY_HW_MCU_NAME "ESP32"
