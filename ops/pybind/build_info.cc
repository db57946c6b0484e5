#include "mindpet/build_info.h"

#ifndef MINDPET_VERSION_INFO
#define MINDPET_VERSION_INFO "unknown"
#endif
#ifndef MINDPET_HAS_OPENMP
#define MINDPET_HAS_OPENMP 0
#endif

namespace mindpet {

BuildInfo GetBuildInfo() {
  BuildInfo info;
  info.version = MINDPET_VERSION_INFO;
#if defined(__clang__)
  info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info.compiler = std::string("gcc ") + __VERSION__;
#else
  info.compiler = "unknown";
#endif
  info.openmp = MINDPET_HAS_OPENMP != 0;
  return info;
}

}  // namespace mindpet
