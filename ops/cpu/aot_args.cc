// Call counts of the aot entry points (see CountCall in aot_args.h).
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "aot_args.h"

namespace mindpet {
namespace cpu {
namespace {

struct CallCounts {
  std::mutex mutex;
  std::map<std::string, int64_t> counts;
};

CallCounts& Counts() {
  static CallCounts* counts = new CallCounts();  // never destroyed: kernels may run during exit
  return *counts;
}

}  // namespace

void CountCall(const char* kernel) {
  CallCounts& c = Counts();
  std::lock_guard<std::mutex> lock(c.mutex);
  ++c.counts[kernel];
}

}  // namespace cpu
}  // namespace mindpet

// Calls of the entry point `kernel` (e.g. "LoraLinearBackwardInput") since the library was loaded.
MINDPET_AOT_EXPORT int64_t MindpetKernelCalls(const char* kernel) {
  mindpet::cpu::CallCounts& c = mindpet::cpu::Counts();
  std::lock_guard<std::mutex> lock(c.mutex);
  const auto it = c.counts.find(kernel == nullptr ? "" : kernel);
  return it == c.counts.end() ? 0 : it->second;
}
