// adapter on CPU (contract: ops/CONTRACTS.md section 2).
//   forward : z = h Wd^T + bd;  y = h + act(z) Wu^T + bu
//   backward: a = act(z); dWu = dy^T a; dbu = sum dy; dz = (dy Wu) * act'(z); dWd = dz^T h; dbd = sum dz;
//             dh = dy + dz Wd
// Participants take row chunks (parallel.h), each run in row tiles so h, dy, z of a tile stay in
// cache for every step; weight gradients are per-participant partial sums reduced at the end. Bias gradients ride
// along as an extra column of ones ([a | 1]).
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "activation.h"
#include "aot_args.h"
#include "blas.h"
#include "float_views.h"
#include "mindpet/contracts.h"
#include "parallel.h"
#include "partials.h"

namespace mindpet {
namespace cpu {
namespace {

struct AdapterDims {
  int64_t m, d, b;
};

// Rows per tile: ~1 MiB of h (one core's L2), 64..512 rows; a chunk is at least one tile.
int64_t AdapterTile(int64_t d) { return TileRows(d, 1 << 20, 64, 512); }

// [W | bias] row by row: out [rows, cols + 1].
std::vector<float> AppendColumn(const float* w, const float* col, int64_t rows, int64_t cols) {
  std::vector<float> out(static_cast<size_t>(rows * (cols + 1)));
  for (int64_t i = 0; i < rows; ++i) {
    std::memcpy(&out[i * (cols + 1)], w + i * cols, sizeof(float) * cols);
    out[i * (cols + 1) + cols] = col[i];
  }
  return out;
}

void ForwardF32(const AdapterDims& s, const float* h, const float* wd, const float* bd, const float* wu,
                const float* bu, Activation act, float* y, float* z) {
  if (s.m == 0) return;
  const std::vector<float> wu_aug = AppendColumn(wu, bu, s.d, s.b);  // [D, B+1]
  const int threads = RowThreads(s.m, 8, 2 * s.d * s.b);
  const int64_t tile = AdapterTile(s.d);
  ParallelFor(s.m, threads, RowGrain(s.m, threads, tile), [&](Range rows, int64_t) {
    std::vector<float> a_aug(static_cast<size_t>(tile * (s.b + 1)));
    for (int64_t t = rows.begin; t < rows.end; t += tile) {
      const int64_t tr = std::min(tile, rows.end - t);
      float* z_t = z + t * s.b;
      Sgemm(false, true, tr, s.b, s.d, 1.0f, h + t * s.d, s.d, wd, s.d, 0.0f, z_t, s.b);
      for (int64_t i = 0; i < tr; ++i) {
        for (int64_t j = 0; j < s.b; ++j) {
          const float v = z_t[i * s.b + j] + bd[j];
          z_t[i * s.b + j] = v;
          a_aug[i * (s.b + 1) + j] = Activate(act, v);
        }
        a_aug[i * (s.b + 1) + s.b] = 1.0f;
      }
      std::memcpy(y + t * s.d, h + t * s.d, sizeof(float) * tr * s.d);
      Sgemm(false, true, tr, s.d, s.b + 1, 1.0f, a_aug.data(), s.b + 1, wu_aug.data(), s.b + 1, 1.0f, y + t * s.d, s.d);
    }
  });
}

void BackwardF32(const AdapterDims& s, const float* dy, const float* h, const float* wd, const float* wu,
                 const float* z, Activation act, float* dh, float* dwd, float* dbd, float* dwu, float* dbu) {
  const int threads = RowThreads(s.m, 8, 2 * s.d * s.b);
  const int64_t tile = AdapterTile(s.d);
  // Partials per chunk: dWu_aug [D, B+1] (last column dbu), dWd [B, D], dbd [B].
  const int64_t n_wu = s.d * (s.b + 1);
  const int64_t n_wd = s.b * s.d;
  const std::vector<Range> chunks = PlanChunks(s.m, threads, RowGrain(s.m, threads, tile));
  ThreadPartials partials(static_cast<int64_t>(chunks.size()), n_wu + n_wd + s.b);
  ParallelFor(chunks, threads, [&](Range rows, int64_t chunk) {
    float* p_wu = partials.part(chunk);
    float* p_wd = p_wu + n_wu;
    float* p_bd = p_wd + n_wd;
    std::fill(p_bd, p_bd + s.b, 0.0f);
    std::vector<float> a_aug(static_cast<size_t>(tile * (s.b + 1)));
    std::vector<float> dz(static_cast<size_t>(tile * s.b));
    for (int64_t t = rows.begin; t < rows.end; t += tile) {
      const int64_t tr = std::min(tile, rows.end - t);
      const float beta = t == rows.begin ? 0.0f : 1.0f;  // the chunk's first tile initialises its partials
      const float* dy_t = dy + t * s.d;
      const float* z_t = z + t * s.b;
      for (int64_t i = 0; i < tr; ++i) {
        for (int64_t j = 0; j < s.b; ++j) a_aug[i * (s.b + 1) + j] = Activate(act, z_t[i * s.b + j]);
        a_aug[i * (s.b + 1) + s.b] = 1.0f;
      }
      // [dWu | dbu] += dy^T [a | 1]
      Sgemm(true, false, s.d, s.b + 1, tr, 1.0f, dy_t, s.d, a_aug.data(), s.b + 1, beta, p_wu, s.b + 1);
      // dz = (dy Wu) * act'(z)
      Sgemm(false, false, tr, s.b, s.d, 1.0f, dy_t, s.d, wu, s.b, 0.0f, dz.data(), s.b);
      for (int64_t i = 0; i < tr; ++i) {
        for (int64_t j = 0; j < s.b; ++j) {
          float& v = dz[i * s.b + j];
          v *= ActivateGrad(act, z_t[i * s.b + j]);
          p_bd[j] += v;
        }
      }
      // dWd += dz^T h ; dh = dy + dz Wd
      Sgemm(true, false, s.b, s.d, tr, 1.0f, dz.data(), s.b, h + t * s.d, s.d, beta, p_wd, s.d);
      std::memcpy(dh + t * s.d, dy_t, sizeof(float) * tr * s.d);
      Sgemm(false, false, tr, s.d, s.b, 1.0f, dz.data(), s.b, wd, s.d, 1.0f, dh + t * s.d, s.d);
    }
  });
  std::vector<float> wu_aug(static_cast<size_t>(n_wu));
  partials.ReduceInto(0, n_wu, 1.0f, wu_aug.data());
  for (int64_t i = 0; i < s.d; ++i) {
    std::memcpy(dwu + i * s.b, &wu_aug[i * (s.b + 1)], sizeof(float) * s.b);
    dbu[i] = wu_aug[i * (s.b + 1) + s.b];
  }
  partials.ReduceInto(n_wu, n_wd, 1.0f, dwd);
  partials.ReduceInto(n_wu + n_wd, s.b, 1.0f, dbd);
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace ad = mindpet::contracts::adapter;

namespace {
std::string RunAdapterForward(const AotArgs& args) {
  const mindpet::cpu::AdapterDims s{args.dim(ad::kFwdH, 0), args.dim(ad::kFwdH, 1), args.dim(ad::kFwdWDown, 0)};
  const int y_idx = ad::kFwdNumInputs + ad::kFwdY;
  const int z_idx = ad::kFwdNumInputs + ad::kFwdZ;
  if (args.ndim(ad::kFwdH) != 2 || args.ndim(ad::kFwdWDown) != 2 || args.dim(ad::kFwdWDown, 1) != s.d ||
      args.numel(ad::kFwdBDown) != s.b || args.dim(ad::kFwdWUp, 0) != s.d || args.dim(ad::kFwdWUp, 1) != s.b ||
      args.numel(ad::kFwdBUp) != s.d) {
    return "shapes do not follow h [M,D], w_down [B,D], b_down [B], w_up [D,B], b_up [D]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {ad::kFwdH, ad::kFwdWDown, ad::kFwdBDown, ad::kFwdWUp, ad::kFwdBUp,
                                           y_idx, z_idx})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  mindpet::cpu::Activation act{};
  std::string bad = mindpet::cpu::ReadActivation(args, ad::kFwdActivation, &act);
  if (bad.empty()) bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn h(args, ad::kFwdH), wd(args, ad::kFwdWDown), bd(args, ad::kFwdBDown), wu(args, ad::kFwdWUp),
      bu(args, ad::kFwdBUp);
  FloatOut y(args, y_idx), z(args, z_idx);
  mindpet::cpu::ForwardF32(s, h.get(), wd.get(), bd.get(), wu.get(), bu.get(),
                           act, y.get(), z.get());
  mindpet::cpu::CommitAll({&y, &z});
  return {};
}

std::string RunAdapterBackward(const AotArgs& args) {
  const mindpet::cpu::AdapterDims s{args.dim(ad::kBwdH, 0), args.dim(ad::kBwdH, 1), args.dim(ad::kBwdWDown, 0)};
  const int o = ad::kBwdNumInputs;
  if (args.ndim(ad::kBwdH) != 2 || args.numel(ad::kBwdDy) != s.m * s.d || args.dim(ad::kBwdWDown, 1) != s.d ||
      args.dim(ad::kBwdWUp, 0) != s.d || args.dim(ad::kBwdWUp, 1) != s.b || args.numel(ad::kBwdZ) != s.m * s.b) {
    return "shapes do not follow dy [M,D], h [M,D], w_down [B,D], w_up [D,B], z [M,B]";
  }
  if (!mindpet::cpu::SameFloatDType(args, {ad::kBwdDy, ad::kBwdH, ad::kBwdWDown, ad::kBwdWUp, ad::kBwdZ,
                                           o + ad::kBwdDh, o + ad::kBwdDWDown, o + ad::kBwdDBDown,
                                           o + ad::kBwdDWUp, o + ad::kBwdDBUp})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  mindpet::cpu::Activation act{};
  std::string bad = mindpet::cpu::ReadActivation(args, ad::kBwdActivation, &act);
  if (bad.empty()) bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn dy(args, ad::kBwdDy), h(args, ad::kBwdH), wd(args, ad::kBwdWDown), wu(args, ad::kBwdWUp),
      z(args, ad::kBwdZ);
  FloatOut dh(args, o + ad::kBwdDh), dwd(args, o + ad::kBwdDWDown), dbd(args, o + ad::kBwdDBDown),
      dwu(args, o + ad::kBwdDWUp), dbu(args, o + ad::kBwdDBUp);
  mindpet::cpu::BackwardF32(s, dy.get(), h.get(), wd.get(), wu.get(), z.get(),
                            act, dh.get(), dwd.get(), dbd.get(), dwu.get(),
                            dbu.get());
  mindpet::cpu::CommitAll({&dh, &dwd, &dbd, &dwu, &dbu});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(AdapterForward, ad::kFwdNumInputs + ad::kFwdNumOutputs, RunAdapterForward)
MINDPET_AOT_ENTRY(AdapterBackward, ad::kBwdNumInputs + ad::kBwdNumOutputs, RunAdapterBackward)
