// MindpetLoraLinear (ops/CONTRACTS.md 1, forward): y = x W^T + b + s (x_d A^T) B^T, u = x_d A^T.
// Per vector core: its block of y (plan.y.grid) in row chunks; per chunk
//   [mask]   x_d = x * mask -> private x_d chunk                       (vector, flat element tiles)
//   gemm[1]  u = x_d A^T  [rows, R] -> GM: the row writer's u rows (saved output), else its
//                                      private s u chunk
//   vector   s u = s * u            -> private s u chunk (in place for non-writers)
//   gemm[0]  y = x W^T (+ b)        [rows, block columns] -> GM
//   gemm[2]  y += (s u) B^T         -> GM (atomic add)
// Workspace (plan.y.workspaceBytes): per core [s u: chunkM x R][x_d: chunkM x K, with mask], each
// region 512-byte aligned (mt::WsRegion).
// Matmul objects: 3, C always to GM (GetTensorC to UB packs tail tiles, see the GM-staged row
// passes of mindpet_kernel_common.h). UB: plan.y.ub[0] (boxes of gemm[1]'s base, for s u),
// ub[2..4] (x, mask, x_d element tiles, with mask); the plan's row buffer ub[1] is not used.
// Mirrors ops/cpu/lora_linear.cc forward (u = x_d A^T per row tile, then y = x W^T + b + s u B^T).
// TYPE-CHECKED ONLY (see ascendc/README.md).
#include "mindpet_kernel_common.h"
#include "mindpet_tiling_data.h"

using namespace mindpet_kernel;  // NOLINT

template <typename T>
class LoraLinearForward {
 public:
  __aicore__ inline void Run(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR a, GM_ADDR b, GM_ADDR mask,
                             GM_ADDR y, GM_ADDR u, GM_ADDR ws, const MindpetLoraLinearTilingData& td) {
    const mt::FusedPlan& p = td.plan.y;
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmY_, &td.mm[0], mmU_, &td.mm[1], mmL_, &td.mm[2]);
    const uint32_t core = GetBlockIdx();
    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      m_ = p.grid.m; n_ = p.grid.n; k_ = p.gemm[0].k; r_ = p.gemm[1].n;
      scale_ = td.scale; hasBias_ = td.hasBias != 0; hasMask_ = td.hasMask != 0;
      x_.SetGlobalBuffer((__gm__ T*)x); w_.SetGlobalBuffer((__gm__ T*)w);
      bias_.SetGlobalBuffer((__gm__ T*)bias); a_.SetGlobalBuffer((__gm__ T*)a);
      b_.SetGlobalBuffer((__gm__ T*)b); mask_.SetGlobalBuffer((__gm__ T*)mask);
      y_.SetGlobalBuffer((__gm__ T*)y); u_.SetGlobalBuffer((__gm__ T*)u);
      const uint64_t suBytes = mt::WsRegion(p.chunkM, r_ * sizeof(T));
      const uint64_t xdBytes = hasMask_ ? mt::WsRegion(p.chunkM, k_ * sizeof(T)) : 0;
      const uint64_t mine = PrivateRegion(0, core, suBytes + xdBytes);
      suMine_.SetGlobalBuffer((__gm__ T*)(ws + mine));
      xdMine_.SetGlobalBuffer((__gm__ T*)(ws + mine + suBytes));
      pipe_.InitBuffer(uQ_, 2, p.ub[0].fixedBytes);
      if (hasMask_) {
        pipe_.InitBuffer(xQ_, 2, p.ub[2].fixedBytes);
        pipe_.InitBuffer(mQ_, 2, p.ub[3].fixedBytes);
        pipe_.InitBuffer(oQ_, 2, p.ub[4].fixedBytes);
      }
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    GlobalTensor<T> xin = x_[row0 * k_];
    if (hasMask_) {
      MultiplyFlat(xdMine_, x_[row0 * k_], mask_[row0 * k_], static_cast<uint64_t>(ch.mLen) * k_, p.elemTile,
                   xQ_, mQ_, oQ_);
      GmWriteFence();
      xin = xdMine_;
    }
    // u = x_d A^T (A [R, K] read transposed): the row writer into the saved u rows
    const GlobalTensor<T> uDst = writer ? u_[row0 * r_] : suMine_;
    mmU_.SetTensorA(xin, false);
    mmU_.SetTensorB(a_, true);
    mmU_.SetTail(ch.mLen, r_, k_);
    IterateAllAndEnd(mmU_, uDst);
    // s u -> private chunk (operand of gemm[2])
    const mt::Range2D rows = {0, ch.mLen, 0, r_};
    ScaleRows(p.gemm[1], rows, uDst, suMine_, r_, scale_, uQ_);
    GmWriteFence();
    // y = x W^T (+ b) on the block columns (rows n0.. of W [N, K]), then y += (s u) B^T
    const uint64_t yOff = row0 * n_ + ch.n0;
    mmY_.SetTensorA(x_[row0 * k_], false);
    mmY_.SetTensorB(w_[static_cast<uint64_t>(ch.n0) * k_], true);
    if (hasBias_) mmY_.SetBias(bias_[ch.n0]);
    mmY_.SetTail(ch.mLen, ch.nLen, k_);
    IterateAllAndEnd(mmY_, y_[yOff]);
    mmL_.SetTensorA(suMine_, false);
    mmL_.SetTensorB(b_[static_cast<uint64_t>(ch.n0) * r_], true);
    mmL_.SetTail(ch.mLen, ch.nLen, r_);
    IterateAllAndEnd(mmL_, y_[yOff], 1);
  }

  TPipe pipe_;
  MmToGm<T> mmY_, mmU_, mmL_;
  InQue uQ_, xQ_, mQ_;
  OutQue oQ_;
  GlobalTensor<T> x_, w_, bias_, a_, b_, mask_, y_, u_, suMine_, xdMine_;
  uint32_t m_ = 0, n_ = 0, k_ = 0, r_ = 0;
  float scale_ = 1.0f;
  bool hasBias_ = false, hasMask_ = false;
};

extern "C" __global__ __aicore__ void mindpet_lora_linear(GM_ADDR x, GM_ADDR w, GM_ADDR bias, GM_ADDR a,
                                                          GM_ADDR b, GM_ADDR mask, GM_ADDR y, GM_ADDR u,
                                                          GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MindpetLoraLinearTilingData);
  GET_TILING_DATA(td, tiling);
  GM_ADDR ws = GetUserWorkspace(workspace);
  if constexpr (IsSameType<DTYPE_X, half>::value) {
    LoraLinearForward<half> op;
    op.Run(x, w, bias, a, b, mask, y, u, ws, td);
  } else {
    LoraLinearForward<float> op;
    op.Run(x, w, bias, a, b, mask, y, u, ws, td);
  }
}
