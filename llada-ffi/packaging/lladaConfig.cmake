# CMake package config of llada: find_package(llada) gives the imported targets
#   llada::llada         the shared library
#   llada::llada_static  the static library (with the system libraries Rust needs)
# Installed by llada-ffi/packaging/install.sh into <prefix>/lib/cmake/llada/.
get_filename_component(_llada_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT EXISTS "${_llada_prefix}/include/llada.h")
  set(llada_FOUND FALSE)
  set(llada_NOT_FOUND_MESSAGE "llada.h not found under ${_llada_prefix}/include")
  return()
endif()

if(NOT TARGET llada::llada)
  add_library(llada::llada SHARED IMPORTED)
  set_target_properties(llada::llada PROPERTIES
    IMPORTED_LOCATION "${_llada_prefix}/lib/libllada.so"
    IMPORTED_NO_SONAME TRUE
    INTERFACE_INCLUDE_DIRECTORIES "${_llada_prefix}/include")
endif()

if(NOT TARGET llada::llada_static)
  add_library(llada::llada_static STATIC IMPORTED)
  set_target_properties(llada::llada_static PROPERTIES
    IMPORTED_LOCATION "${_llada_prefix}/lib/libllada.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_llada_prefix}/include"
    INTERFACE_LINK_LIBRARIES "gcc_s;util;rt;pthread;m;dl;c")
endif()

set(llada_INCLUDE_DIRS "${_llada_prefix}/include")
set(llada_LIBRARIES llada::llada)
unset(_llada_prefix)
