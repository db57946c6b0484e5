// low_rank_adapter on CPU (contract: ops/CONTRACTS.md section 3). The D x B projections are never
// materialised: every product goes through the rank-R factors.
//   forward : t = h Ldl; z = t Ldr + bd; q = act(z) Lul; y = h + q Lur + bu
//   backward: dbu = sum dy; dLur = q^T dy; dq = dy Lur^T; dLul = act(z)^T dq; dz = (dq Lul^T) * act'(z);
//             dbd = sum dz; dLdr = t^T dz; dt = dz Ldr^T; dLdl = h^T dt; dh = dy + dt Ldl^T
// Participants take row chunks (parallel.h), processed in row tiles kept in cache; weight gradients
// are per-participant partial sums. The up bias rides along as an extra row of Lur against a column of ones ([q | 1]).
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

struct LowRankDims {
  int64_t m, d, b, r;
};

// Rows per tile: ~1 MiB of h (one core's L2), 64..512 rows; a chunk is at least one tile.
int64_t AdapterTile(int64_t d) { return TileRows(d, 1 << 20, 64, 512); }

void ForwardF32(const LowRankDims& s, const float* h, const float* ldl, const float* ldr, const float* bd,
                const float* lul, const float* lur, const float* bu, Activation act, float* y, float* t_out,
                float* z_out, float* q_out) {
  if (s.m == 0) return;
  // [Lur ; bu] : [R+1, D]
  std::vector<float> lur_aug(static_cast<size_t>((s.r + 1) * s.d));
  std::memcpy(lur_aug.data(), lur, sizeof(float) * s.r * s.d);
  std::memcpy(lur_aug.data() + s.r * s.d, bu, sizeof(float) * s.d);
  const int threads = RowThreads(s.m, 8, 2 * s.r * (s.d + s.b));
  const int64_t tile = AdapterTile(s.d);
  ParallelFor(s.m, threads, RowGrain(s.m, threads, tile), [&](Range rows, int64_t) {
    std::vector<float> a(static_cast<size_t>(tile * s.b));
    std::vector<float> q_aug(static_cast<size_t>(tile * (s.r + 1)));
    for (int64_t t0 = rows.begin; t0 < rows.end; t0 += tile) {
      const int64_t tr = std::min(tile, rows.end - t0);
      const float* h_t = h + t0 * s.d;
      float* t_t = t_out + t0 * s.r;
      float* z_t = z_out + t0 * s.b;
      float* q_t = q_out + t0 * s.r;
      Sgemm(false, false, tr, s.r, s.d, 1.0f, h_t, s.d, ldl, s.r, 0.0f, t_t, s.r);
      Sgemm(false, false, tr, s.b, s.r, 1.0f, t_t, s.r, ldr, s.b, 0.0f, z_t, s.b);
      for (int64_t i = 0; i < tr; ++i) {
        for (int64_t j = 0; j < s.b; ++j) {
          const float v = z_t[i * s.b + j] + bd[j];
          z_t[i * s.b + j] = v;
          a[i * s.b + j] = Activate(act, v);
        }
      }
      Sgemm(false, false, tr, s.r, s.b, 1.0f, a.data(), s.b, lul, s.r, 0.0f, q_t, s.r);
      for (int64_t i = 0; i < tr; ++i) {
        std::memcpy(&q_aug[i * (s.r + 1)], q_t + i * s.r, sizeof(float) * s.r);
        q_aug[i * (s.r + 1) + s.r] = 1.0f;
      }
      std::memcpy(y + t0 * s.d, h_t, sizeof(float) * tr * s.d);
      Sgemm(false, false, tr, s.d, s.r + 1, 1.0f, q_aug.data(), s.r + 1, lur_aug.data(), s.d, 1.0f, y + t0 * s.d,
            s.d);
    }
  });
}

struct LowRankGrads {
  float *dh, *dldl, *dldr, *dbd, *dlul, *dlur, *dbu;
};

void BackwardF32(const LowRankDims& s, const float* dy, const float* h, const float* ldl, const float* ldr,
                 const float* lul, const float* lur, const float* t, const float* z, const float* q, Activation act,
                 const LowRankGrads& g) {
  const int threads = RowThreads(s.m, 8, 2 * s.r * (s.d + s.b));
  const int64_t tile = AdapterTile(s.d);
  // Partials: [dLur ; dbu] [R+1, D], dLul [B, R], dLdr [R, B], dbd [B], dLdl [D, R].
  const int64_t n_ur = (s.r + 1) * s.d, n_ul = s.b * s.r, n_dr = s.r * s.b, n_bd = s.b, n_dl = s.d * s.r;
  const int64_t o_ul = n_ur, o_dr = o_ul + n_ul, o_bd = o_dr + n_dr, o_dl = o_bd + n_bd;
  const std::vector<Range> chunks = PlanChunks(s.m, threads, RowGrain(s.m, threads, tile));
  ThreadPartials partials(static_cast<int64_t>(chunks.size()), o_dl + n_dl);
  ParallelFor(chunks, threads, [&](Range rows, int64_t chunk) {
    float* p = partials.part(chunk);
    std::fill(p + o_bd, p + o_bd + n_bd, 0.0f);
    std::vector<float> q_aug(static_cast<size_t>(tile * (s.r + 1)));
    std::vector<float> a(static_cast<size_t>(tile * s.b));
    std::vector<float> dz(static_cast<size_t>(tile * s.b));
    std::vector<float> dq(static_cast<size_t>(tile * s.r));
    std::vector<float> dt(static_cast<size_t>(tile * s.r));
    for (int64_t t0 = rows.begin; t0 < rows.end; t0 += tile) {
      const int64_t tr = std::min(tile, rows.end - t0);
      const float beta = t0 == rows.begin ? 0.0f : 1.0f;  // the chunk's first tile initialises its partials
      const float* dy_t = dy + t0 * s.d;
      const float* h_t = h + t0 * s.d;
      const float* z_t = z + t0 * s.b;
      for (int64_t i = 0; i < tr; ++i) {
        std::memcpy(&q_aug[i * (s.r + 1)], q + (t0 + i) * s.r, sizeof(float) * s.r);
        q_aug[i * (s.r + 1) + s.r] = 1.0f;
        for (int64_t j = 0; j < s.b; ++j) a[i * s.b + j] = Activate(act, z_t[i * s.b + j]);
      }
      // [dLur ; dbu] += [q | 1]^T dy ; dq = dy Lur^T
      Sgemm(true, false, s.r + 1, s.d, tr, 1.0f, q_aug.data(), s.r + 1, dy_t, s.d, beta, p, s.d);
      Sgemm(false, true, tr, s.r, s.d, 1.0f, dy_t, s.d, lur, s.d, 0.0f, dq.data(), s.r);
      // dLul += a^T dq ; dz = (dq Lul^T) * act'(z) ; dbd += sum dz
      Sgemm(true, false, s.b, s.r, tr, 1.0f, a.data(), s.b, dq.data(), s.r, beta, p + o_ul, s.r);
      Sgemm(false, true, tr, s.b, s.r, 1.0f, dq.data(), s.r, lul, s.r, 0.0f, dz.data(), s.b);
      for (int64_t i = 0; i < tr; ++i) {
        for (int64_t j = 0; j < s.b; ++j) {
          float& v = dz[i * s.b + j];
          v *= ActivateGrad(act, z_t[i * s.b + j]);
          p[o_bd + j] += v;
        }
      }
      // dLdr += t^T dz ; dt = dz Ldr^T ; dLdl += h^T dt ; dh = dy + dt Ldl^T
      Sgemm(true, false, s.r, s.b, tr, 1.0f, t + t0 * s.r, s.r, dz.data(), s.b, beta, p + o_dr, s.b);
      Sgemm(false, true, tr, s.r, s.b, 1.0f, dz.data(), s.b, ldr, s.b, 0.0f, dt.data(), s.r);
      Sgemm(true, false, s.d, s.r, tr, 1.0f, h_t, s.d, dt.data(), s.r, beta, p + o_dl, s.r);
      std::memcpy(g.dh + t0 * s.d, dy_t, sizeof(float) * tr * s.d);
      Sgemm(false, true, tr, s.d, s.r, 1.0f, dt.data(), s.r, ldl, s.r, 1.0f, g.dh + t0 * s.d, s.d);
    }
  });
  partials.ReduceInto(0, s.r * s.d, 1.0f, g.dlur);
  partials.ReduceInto(s.r * s.d, s.d, 1.0f, g.dbu);
  partials.ReduceInto(o_ul, n_ul, 1.0f, g.dlul);
  partials.ReduceInto(o_dr, n_dr, 1.0f, g.dldr);
  partials.ReduceInto(o_bd, n_bd, 1.0f, g.dbd);
  partials.ReduceInto(o_dl, n_dl, 1.0f, g.dldl);
}

}  // namespace
}  // namespace cpu
}  // namespace mindpet

using mindpet::cpu::AotArgs;
using mindpet::cpu::FloatIn;
using mindpet::cpu::FloatOut;
namespace lra = mindpet::contracts::low_rank_adapter;

namespace {
// Shapes from h [M,D], down_left [D,R], down_right [R,B]; checks every factor against them.
bool ReadDims(const AotArgs& args, int h, int dl, int dr, int ul, int ur, mindpet::cpu::LowRankDims* s) {
  if (args.ndim(h) != 2 || args.ndim(dl) != 2 || args.ndim(dr) != 2 || args.ndim(ul) != 2 || args.ndim(ur) != 2) {
    return false;
  }
  *s = {args.dim(h, 0), args.dim(h, 1), args.dim(dr, 1), args.dim(dl, 1)};
  return args.dim(dl, 0) == s->d && args.dim(dr, 0) == s->r && args.dim(ul, 0) == s->b && args.dim(ul, 1) == s->r &&
         args.dim(ur, 0) == s->r && args.dim(ur, 1) == s->d;
}
}  // namespace

namespace {
std::string RunLowRankAdapterForward(const AotArgs& args) {
  mindpet::cpu::LowRankDims s{};
  if (!ReadDims(args, lra::kFwdH, lra::kFwdDownLeft, lra::kFwdDownRight, lra::kFwdUpLeft, lra::kFwdUpRight, &s) ||
      args.numel(lra::kFwdBDown) != s.b || args.numel(lra::kFwdBUp) != s.d) {
    return "shapes do not follow h [M,D], down_left [D,R], down_right [R,B], b_down [B], "
           "up_left [B,R], up_right [R,D], b_up [D]";
  }
  const int o = lra::kFwdNumInputs;
  if (!mindpet::cpu::SameFloatDType(args, {lra::kFwdH, lra::kFwdDownLeft, lra::kFwdDownRight, lra::kFwdBDown,
                                           lra::kFwdUpLeft, lra::kFwdUpRight, lra::kFwdBUp, o + lra::kFwdY,
                                           o + lra::kFwdT, o + lra::kFwdZ, o + lra::kFwdQ})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  mindpet::cpu::Activation act{};
  std::string bad = mindpet::cpu::ReadActivation(args, lra::kFwdActivation, &act);
  if (bad.empty()) bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn h(args, lra::kFwdH), ldl(args, lra::kFwdDownLeft), ldr(args, lra::kFwdDownRight),
      bd(args, lra::kFwdBDown), lul(args, lra::kFwdUpLeft), lur(args, lra::kFwdUpRight), bu(args, lra::kFwdBUp);
  FloatOut y(args, o + lra::kFwdY), t(args, o + lra::kFwdT), z(args, o + lra::kFwdZ), q(args, o + lra::kFwdQ);
  mindpet::cpu::ForwardF32(s, h.get(), ldl.get(), ldr.get(), bd.get(), lul.get(), lur.get(), bu.get(),
                           act, y.get(), t.get(), z.get(), q.get());
  mindpet::cpu::CommitAll({&y, &t, &z, &q});
  return {};
}

std::string RunLowRankAdapterBackward(const AotArgs& args) {
  mindpet::cpu::LowRankDims s{};
  if (!ReadDims(args, lra::kBwdH, lra::kBwdDownLeft, lra::kBwdDownRight, lra::kBwdUpLeft, lra::kBwdUpRight, &s) ||
      args.numel(lra::kBwdDy) != s.m * s.d || args.numel(lra::kBwdT) != s.m * s.r ||
      args.numel(lra::kBwdZ) != s.m * s.b || args.numel(lra::kBwdQ) != s.m * s.r) {
    return "shapes do not follow the low_rank_adapter backward contract";
  }
  const int o = lra::kBwdNumInputs;
  if (!mindpet::cpu::SameFloatDType(
          args, {lra::kBwdDy, lra::kBwdH, lra::kBwdDownLeft, lra::kBwdDownRight, lra::kBwdUpLeft, lra::kBwdUpRight,
                 lra::kBwdT, lra::kBwdZ, lra::kBwdQ, o + lra::kBwdDh, o + lra::kBwdDDownLeft,
                 o + lra::kBwdDDownRight, o + lra::kBwdDBDown, o + lra::kBwdDUpLeft, o + lra::kBwdDUpRight,
                 o + lra::kBwdDBUp})) {
    return mindpet::cpu::kSameFloatDTypeMessage;
  }
  mindpet::cpu::Activation act{};
  std::string bad = mindpet::cpu::ReadActivation(args, lra::kBwdActivation, &act);
  if (bad.empty()) bad = mindpet::cpu::RequireBlas();
  if (!bad.empty()) return bad;
  const FloatIn dy(args, lra::kBwdDy), h(args, lra::kBwdH), ldl(args, lra::kBwdDownLeft),
      ldr(args, lra::kBwdDownRight), lul(args, lra::kBwdUpLeft), lur(args, lra::kBwdUpRight), t(args, lra::kBwdT),
      z(args, lra::kBwdZ), q(args, lra::kBwdQ);
  FloatOut dh(args, o + lra::kBwdDh), dldl(args, o + lra::kBwdDDownLeft), dldr(args, o + lra::kBwdDDownRight),
      dbd(args, o + lra::kBwdDBDown), dlul(args, o + lra::kBwdDUpLeft), dlur(args, o + lra::kBwdDUpRight),
      dbu(args, o + lra::kBwdDBUp);
  mindpet::cpu::BackwardF32(s, dy.get(), h.get(), ldl.get(), ldr.get(), lul.get(), lur.get(), t.get(), z.get(),
                            q.get(), act,
                            {dh.get(), dldl.get(), dldr.get(), dbd.get(), dlul.get(), dlur.get(), dbu.get()});
  mindpet::cpu::CommitAll({&dh, &dldl, &dldr, &dbd, &dlul, &dlur, &dbu});
  return {};
}
}  // namespace

MINDPET_AOT_ENTRY(LowRankAdapterForward, lra::kFwdNumInputs + lra::kFwdNumOutputs, RunLowRankAdapterForward)
MINDPET_AOT_ENTRY(LowRankAdapterBackward, lra::kBwdNumInputs + lra::kBwdNumOutputs, RunLowRankAdapterBackward)
