# Locate the Ascend CANN toolkit.  Sets CANN_FOUND and CANN_ROOT.
# Looks at -DASCEND_HOME_PATH=..., then the ASCEND_HOME_PATH environment variable.
include_guard(GLOBAL)

set(_cann_hint "${ASCEND_HOME_PATH}")
if(NOT _cann_hint AND DEFINED ENV{ASCEND_HOME_PATH})
  set(_cann_hint "$ENV{ASCEND_HOME_PATH}")
endif()

set(CANN_FOUND FALSE)
if(_cann_hint AND EXISTS "${_cann_hint}/compiler/tikcpp/ascendc_kernel_cmake")
  set(CANN_FOUND TRUE)
  set(CANN_ROOT "${_cann_hint}")
elseif(_cann_hint AND EXISTS "${_cann_hint}/tools/tikcpp/ascendc_kernel_cmake")
  set(CANN_FOUND TRUE)
  set(CANN_ROOT "${_cann_hint}")
endif()
