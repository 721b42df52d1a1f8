# tlsx user C module for CMake-based ports (esp32, rp2).
#   USER_C_MODULES=<repo>/firmware/cmodules/micropython.cmake
# Optional CMake variable IOTHUB_TLSX_DEFAULT_MFL (512|1024|2048|4096|0) overrides
# the default request (by default derived from the mbedTLS buffer sizes).
add_library(usermod_tlsx INTERFACE)

target_sources(usermod_tlsx INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}/tlsx.c
)

target_include_directories(usermod_tlsx INTERFACE
    ${CMAKE_CURRENT_LIST_DIR}
)

if(DEFINED IOTHUB_TLSX_DEFAULT_MFL)
    target_compile_definitions(usermod_tlsx INTERFACE TLSX_DEFAULT_MFL=${IOTHUB_TLSX_DEFAULT_MFL})
endif()

# Every client mbedtls_ssl_config gets the board default MFL (GNU ld --wrap);
# INTERFACE link options reach the firmware's final link on rp2 and esp32.
target_link_options(usermod_tlsx INTERFACE "-Wl,--wrap=mbedtls_ssl_config_defaults")

target_link_libraries(usermod INTERFACE usermod_tlsx)

# Build-time layout check: tlsx.c mirrors the leading members of
# mp_obj_ssl_context_t. Compare sslcontext_prefix.txt with the tree being built
# (whitespace-normalised text from the struct's opening brace to its conf member).
file(READ "${MICROPY_DIR}/extmod/modtls_mbedtls.c" _tlsx_src)
string(REGEX MATCH "typedef struct _mp_obj_ssl_context_t [{][^}]*" _tlsx_tree "${_tlsx_src}")
string(FIND "${_tlsx_tree}" " conf;" _tlsx_end)
if(_tlsx_end EQUAL -1)
    set(_tlsx_tree "(no mbedtls_ssl_config conf member found)")
else()
    math(EXPR _tlsx_end "${_tlsx_end} + 6")
    string(SUBSTRING "${_tlsx_tree}" 0 ${_tlsx_end} _tlsx_tree)
    string(REGEX REPLACE "^typedef struct _mp_obj_ssl_context_t [{]" "" _tlsx_tree "${_tlsx_tree}")
endif()
string(REGEX REPLACE "[ \t\r\n]+" " " _tlsx_tree "${_tlsx_tree}")
string(STRIP "${_tlsx_tree}" _tlsx_tree)
file(READ "${CMAKE_CURRENT_LIST_DIR}/sslcontext_prefix.txt" _tlsx_want)
string(REGEX REPLACE "[ \t\r\n]+" " " _tlsx_want "${_tlsx_want}")
string(STRIP "${_tlsx_want}" _tlsx_want)
if(NOT "${_tlsx_tree}" STREQUAL "${_tlsx_want}")
    message(FATAL_ERROR "tlsx: the leading members of mp_obj_ssl_context_t in "
        "${MICROPY_DIR}/extmod/modtls_mbedtls.c are '${_tlsx_tree}', tlsx.c expects "
        "'${_tlsx_want}': update tlsx.c and sslcontext_prefix.txt for this MicroPython")
endif()
