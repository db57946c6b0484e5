// Build information of the native part, exposed to Python as mindpet._native.build_info().
#pragma once
#include <string>

namespace mindpet {

struct BuildInfo {
  std::string version;   // package version the native part was built for
  std::string compiler;  // compiler id and version
  bool openmp;           // CPU kernels use OpenMP threads
};

BuildInfo GetBuildInfo();

}  // namespace mindpet
