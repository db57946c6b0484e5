// MindpetLoraLinearGrad (ops/CONTRACTS.md 1, backward):
//   g = dy B; dB = s dy^T u; dA = s g^T x_d; dx = dy W + s (g A) [* mask].
// Stage 1, per vector core, its block of dx (plan.dx.grid) in row chunks; per chunk
//   gemm[1]  g = dy B  [rows, R] -> GM: the row writer's global s g rows, else its private chunk
//   vector   s g = s * g in place
//   row writer: s u = s * u (global s u rows) and, with mask, x_d = x * mask (global x_d rows)
//   gemm[2]  dx = (s g) A   [rows, block columns] -> GM
//   vector   [mask] dx *= mask
//   gemm[0]  dx += dy W     -> GM (atomic add)
// Vector-core barrier (SyncAll), stage 2 over their own core grids, on ONE Matmul object whose base
// the planner made identical for both (mindpet::tiling::ShareGemmObject, k = M):
//   dA = (s g)^T x_d [R, K], dB = dy^T (s u) [N, R] (WeightGrad, org shape set per use).
// Workspace (plan.dx.workspaceBytes): [s g: M x R][s u: M x R][x_d: M x K, with mask], then per
// core [s g: chunkM x R]; each region 512-byte aligned (mt::WsRegion).
// Matmul objects: 4 (the API maximum), C always to GM (see the GM-staged row passes of
// mindpet_kernel_common.h). UB: plan.dx.ub[0] (boxes of gemm[1]'s base: s g, s u), with mask
// ub[3..5] (dx, mask, out boxes of gemm[2]'s base) and ub[6..8] (x, mask, x_d element tiles); the
// plan's row buffers ub[1..2] are not used.
// Mirrors ops/cpu/lora_linear.cc BackwardF32 (per row tile: g = dy B, dx = s (g A) [* mask], then
// dx += dy W; dA and dB reduce over all rows). TYPE-CHECKED ONLY (see ascendc/README.md).
#include "mindpet_kernel_common.h"
#include "mindpet_tiling_data.h"

using namespace mindpet_kernel;  // NOLINT

template <typename T>
class LoraLinearBackward {
 public:
  __aicore__ inline void Run(GM_ADDR dy, GM_ADDR x, GM_ADDR w, GM_ADDR a, GM_ADDR b, GM_ADDR u,
                             GM_ADDR mask, GM_ADDR dx, GM_ADDR dA, GM_ADDR dB, GM_ADDR ws,
                             const MindpetLoraLinearGradTilingData& td) {
    const mt::FusedPlan& p = td.plan.dx;
    // mm[3] is the TCubeTiling of the shared weight-gradient object (dA's io; dB has the same base).
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmD_, &td.mm[0], mmG_, &td.mm[1], mmL_, &td.mm[2],
                      mmW_, &td.mm[3]);
    m_ = p.grid.m; k_ = p.grid.n; n_ = p.gemm[0].k; r_ = p.gemm[1].n;
    scale_ = td.scale;
    maskOn_ = td.hasMask != 0;
    dy_.SetGlobalBuffer((__gm__ T*)dy); x_.SetGlobalBuffer((__gm__ T*)x); w_.SetGlobalBuffer((__gm__ T*)w);
    a_.SetGlobalBuffer((__gm__ T*)a); b_.SetGlobalBuffer((__gm__ T*)b); u_.SetGlobalBuffer((__gm__ T*)u);
    mask_.SetGlobalBuffer((__gm__ T*)mask); dx_.SetGlobalBuffer((__gm__ T*)dx);
    dA_.SetGlobalBuffer((__gm__ T*)dA); dB_.SetGlobalBuffer((__gm__ T*)dB);
    const uint64_t mr = mt::WsRegion(m_, r_ * sizeof(T));  // 512-byte aligned regions
    sgAll_.SetGlobalBuffer((__gm__ T*)ws);
    suAll_.SetGlobalBuffer((__gm__ T*)(ws + mr));
    xdAll_.SetGlobalBuffer((__gm__ T*)(ws + 2 * mr));
    const uint64_t globalBytes = 2 * mr + (maskOn_ ? mt::WsRegion(m_, k_ * sizeof(T)) : 0);
    const uint32_t core = GetBlockIdx();
    sgMine_.SetGlobalBuffer((__gm__ T*)(ws + PrivateRegion(globalBytes, core, mt::WsRegion(p.chunkM, r_ * sizeof(T)))));

    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      pipe_.InitBuffer(gQ_, 2, p.ub[0].fixedBytes);
      if (maskOn_) {
        pipe_.InitBuffer(cQ_, 2, p.ub[3].fixedBytes);
        pipe_.InitBuffer(mQ_, 2, p.ub[4].fixedBytes);
        pipe_.InitBuffer(oQ_, 2, p.ub[5].fixedBytes);
        pipe_.InitBuffer(exQ_, 2, p.ub[6].fixedBytes);
        pipe_.InitBuffer(emQ_, 2, p.ub[7].fixedBytes);
        pipe_.InitBuffer(eoQ_, 2, p.ub[8].fixedBytes);
      }
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
    SyncAll();  // vector cores only: the cube cores keep serving the matmul objects
    const GlobalTensor<T>& xd = maskOn_ ? xdAll_ : x_;
    WeightGrad(mmW_, td.plan.dA, core, sgAll_, xd, dA_, true);   // (s g)^T x_d  [R, K]
    WeightGrad(mmW_, td.plan.dB, core, dy_, suAll_, dB_, true);  // dy^T (s u)   [N, R]
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    // g = dy B (B [N, R]), then s g in place: the row writer's rows are dA's global operand
    const GlobalTensor<T> sg = writer ? sgAll_[row0 * r_] : sgMine_;
    mmG_.SetTensorA(dy_[row0 * n_], false);
    mmG_.SetTensorB(b_, false);
    mmG_.SetTail(ch.mLen, r_, n_);
    IterateAllAndEnd(mmG_, sg);
    const mt::Range2D rows = {0, ch.mLen, 0, r_};
    ScaleRows(p.gemm[1], rows, sg, sg, r_, scale_, gQ_);
    if (writer) {
      ScaleRows(p.gemm[1], rows, u_[row0 * r_], suAll_[row0 * r_], r_, scale_, gQ_);  // dB's operand
      if (maskOn_) {
        MultiplyFlat(xdAll_[row0 * k_], x_[row0 * k_], mask_[row0 * k_], static_cast<uint64_t>(ch.mLen) * k_,
                     p.elemTile, exQ_, emQ_, eoQ_);  // dA's operand
      }
    }
    GmWriteFence();
    // dx = (s g) A on the block columns (columns n0.. of A [R, K]) [* mask], then dx += dy W
    const uint64_t dxOff = row0 * k_ + ch.n0;
    mmL_.SetTensorA(sg, false);
    mmL_.SetTensorB(a_[ch.n0], false);
    mmL_.SetTail(ch.mLen, ch.nLen, r_);
    IterateAllAndEnd(mmL_, dx_[dxOff]);
    if (maskOn_) {
      const mt::Range2D cols = {0, ch.mLen, 0, ch.nLen};
      MultiplyRows(p.gemm[2], cols, dx_[dxOff], mask_[dxOff], k_, cQ_, mQ_, oQ_);
      GmWriteFence();  // the masked dx is in GM before the cube adds dy W to it
    }
    mmD_.SetTensorA(dy_[row0 * n_], false);
    mmD_.SetTensorB(w_[ch.n0], false);
    mmD_.SetTail(ch.mLen, ch.nLen, n_);
    IterateAllAndEnd(mmD_, dx_[dxOff], 1);
  }

  TPipe pipe_;
  MmToGm<T> mmD_, mmG_, mmL_, mmW_;
  InQue gQ_, cQ_, mQ_, exQ_, emQ_;
  OutQue oQ_, eoQ_;
  GlobalTensor<T> dy_, x_, w_, a_, b_, u_, mask_, dx_, dA_, dB_, sgAll_, suAll_, xdAll_, sgMine_;
  uint32_t m_ = 0, n_ = 0, k_ = 0, r_ = 0;
  float scale_ = 1.0f;
  bool maskOn_ = false;
};

extern "C" __global__ __aicore__ void mindpet_lora_linear_grad(
    GM_ADDR dy, GM_ADDR x, GM_ADDR w, GM_ADDR a, GM_ADDR b, GM_ADDR u, GM_ADDR mask, GM_ADDR dx,
    GM_ADDR dA, GM_ADDR dB, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MindpetLoraLinearGradTilingData);
  GET_TILING_DATA(td, tiling);
  GM_ADDR ws = GetUserWorkspace(workspace);
  if constexpr (IsSameType<DTYPE_DY, half>::value) {
    LoraLinearBackward<half> op;
    op.Run(dy, x, w, a, b, u, mask, dx, dA, dB, ws, td);
  } else {
    LoraLinearBackward<float> op;
    op.Run(dy, x, w, a, b, u, mask, dx, dA, dB, ws, td);
  }
}
