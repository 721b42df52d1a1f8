# All iothub user C modules, for CMake-based ports (esp32, rp2):
#   make BOARD_DIR=... USER_C_MODULES=<repo>/firmware/cmodules/micropython.cmake
include(${CMAKE_CURRENT_LIST_DIR}/tlsx/micropython.cmake)
