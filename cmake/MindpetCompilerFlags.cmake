# Shared compiler settings for every native target of mindpet.
include_guard(GLOBAL)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  add_compile_options(-Wall -Wextra -fvisibility=hidden)
  if(CMAKE_BUILD_TYPE STREQUAL "Release")
    add_compile_options(-O3)
  endif()
endif()

# OpenMP is optional: without it the CPU kernels run single-threaded.
find_package(OpenMP COMPONENTS CXX)
