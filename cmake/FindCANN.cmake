# Locate the Ascend CANN toolkit. Sets CANN_FOUND, CANN_ROOT and CANN_ASC_CONFIG_DIRS (where
# asc-config.cmake, CANN's CMake entry of the Ascend C op-package functions, may live).
# Looks at -DASCEND_HOME_PATH=..., then the ASCEND_HOME_PATH environment variable.
include_guard(GLOBAL)

set(_cann_hint "${ASCEND_HOME_PATH}")
if(NOT _cann_hint AND DEFINED ENV{ASCEND_HOME_PATH})
  set(_cann_hint "$ENV{ASCEND_HOME_PATH}")
endif()

set(CANN_FOUND FALSE)
foreach(_kernel_cmake IN ITEMS compiler/tikcpp/ascendc_kernel_cmake tools/tikcpp/ascendc_kernel_cmake)
  if(_cann_hint AND EXISTS "${_cann_hint}/${_kernel_cmake}")
    set(CANN_FOUND TRUE)
    set(CANN_ROOT "${_cann_hint}")
    break()
  endif()
endforeach()

if(CANN_FOUND)
  set(CANN_ASC_CONFIG_DIRS
      "${CANN_ROOT}/lib64/cmake"
      "${CANN_ROOT}/compiler/lib64/cmake"
      "${CANN_ROOT}/${CMAKE_SYSTEM_PROCESSOR}-linux/lib64/cmake")
endif()
