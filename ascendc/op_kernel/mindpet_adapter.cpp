// MindpetAdapter (ops/CONTRACTS.md 2, forward): z = h Wd^T + bd (saved), y = h + act(z) Wu^T + bu.
// Per vector core: its block of y (plan.y.grid) in row chunks; per chunk
//   gemm[0]  z = h Wd^T + bd  [rows, B] -> GM: the row writer's z rows (saved output), else its
//                                         private a chunk
//   vector   a = act(z)                 -> private a chunk (in place for non-writers)
//   gemm[1]  y = a Wu^T + bu  [rows, block columns] -> GM
//   vector   y += h
// Workspace (plan.y.workspaceBytes): per core [a: chunkM x B].
// Matmul objects: 2, C always to GM (GetTensorC to UB packs tail tiles, see the GM-staged row
// passes of mindpet_kernel_common.h). UB: plan.y.ub[0], ub[1] (z box and two float32 boxes of
// gemm[0]'s base), ub[3..5] (y, h, out boxes of gemm[1]'s base), ub[6] (float32 act(z) box:
// Erf may not write over its source); the plan's row buffer ub[2] is not used.
// Workspace regions are 512-byte aligned (mt::WsRegion).
// Mirrors ops/cpu/adapter.cc forward (per row tile: z = h Wd^T + bd, a = act(z), y = h + a Wu^T + bu).
// TYPE-CHECKED ONLY (see ascendc/README.md).
#include "mindpet_kernel_common.h"
#include "mindpet_tiling_data.h"

using namespace mindpet_kernel;  // NOLINT

template <typename T>
class AdapterForward {
 public:
  __aicore__ inline void Run(GM_ADDR h, GM_ADDR wd, GM_ADDR bd, GM_ADDR wu, GM_ADDR bu, GM_ADDR y,
                             GM_ADDR z, GM_ADDR ws, const MindpetAdapterTilingData& td) {
    const mt::FusedPlan& p = td.plan.y;
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmZ_, &td.mm[0], mmY_, &td.mm[1]);
    const uint32_t core = GetBlockIdx();
    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      d_ = p.grid.n; b_ = p.gemm[0].n; act_ = td.activation;
      h_.SetGlobalBuffer((__gm__ T*)h); wd_.SetGlobalBuffer((__gm__ T*)wd); bd_.SetGlobalBuffer((__gm__ T*)bd);
      wu_.SetGlobalBuffer((__gm__ T*)wu); bu_.SetGlobalBuffer((__gm__ T*)bu);
      y_.SetGlobalBuffer((__gm__ T*)y); z_.SetGlobalBuffer((__gm__ T*)z);
      aMine_.SetGlobalBuffer((__gm__ T*)(ws + PrivateRegion(0, core, mt::WsRegion(p.chunkM, b_ * sizeof(T)))));
      pipe_.InitBuffer(zQ_, 2, p.ub[0].fixedBytes);
      pipe_.InitBuffer(f32_, 2 * p.ub[1].fixedBytes);
      pipe_.InitBuffer(cQ_, 2, p.ub[3].fixedBytes);
      pipe_.InitBuffer(rQ_, 2, p.ub[4].fixedBytes);
      pipe_.InitBuffer(oQ_, 2, p.ub[5].fixedBytes);
      pipe_.InitBuffer(y32_, p.ub[6].fixedBytes);
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    // z = h Wd^T + bd (Wd [B, D] read transposed): the row writer into the saved z rows; the
    // others stage z where a will live
    const GlobalTensor<T> z = writer ? z_[row0 * b_] : aMine_;
    mmZ_.SetTensorA(h_[row0 * d_], false);
    mmZ_.SetTensorB(wd_, true);
    mmZ_.SetBias(bd_);
    mmZ_.SetTail(ch.mLen, b_, d_);
    IterateAllAndEnd(mmZ_, z);
    // a = act(z) -> private chunk (operand of gemm[1])
    LocalTensor<float> z32 = f32_.Get<float>();
    LocalTensor<float> tmp = z32[p.ub[1].fixedBytes / sizeof(float)];
    const mt::Range2D rows = {0, ch.mLen, 0, b_};
    ActivateRows(p.gemm[0], rows, z, aMine_, b_, act_, zQ_, z32, tmp, y32_.Get<float>());
    GmWriteFence();
    // y = a Wu^T + bu on the block columns (rows n0.. of Wu [D, B]), then y += h
    const uint64_t off = row0 * d_ + ch.n0;
    mmY_.SetTensorA(aMine_, false);
    mmY_.SetTensorB(wu_[static_cast<uint64_t>(ch.n0) * b_], true);
    mmY_.SetBias(bu_[ch.n0]);
    mmY_.SetTail(ch.mLen, ch.nLen, b_);
    IterateAllAndEnd(mmY_, y_[off]);
    const mt::Range2D cols = {0, ch.mLen, 0, ch.nLen};
    AddResidual(p.gemm[1], cols, y_[off], h_[off], d_, cQ_, rQ_, oQ_);
  }

  TPipe pipe_;
  MmToGm<T> mmZ_, mmY_;
  InQue zQ_, cQ_, rQ_;
  OutQue oQ_;
  TBuf<TPosition::VECCALC> f32_, y32_;
  GlobalTensor<T> h_, wd_, bd_, wu_, bu_, y_, z_, aMine_;
  uint32_t d_ = 0, b_ = 0;
  int32_t act_ = 0;
};

extern "C" __global__ __aicore__ void mindpet_adapter(GM_ADDR h, GM_ADDR wd, GM_ADDR bd, GM_ADDR wu, GM_ADDR bu,
                                                      GM_ADDR y, GM_ADDR z, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MindpetAdapterTilingData);
  GET_TILING_DATA(td, tiling);
  GM_ADDR ws = GetUserWorkspace(workspace);
  if constexpr (IsSameType<DTYPE_H, half>::value) {
    AdapterForward<half> op;
    op.Run(h, wd, bd, wu, bu, y, z, ws, td);
  } else {
    AdapterForward<float> op;
    op.Run(h, wd, bd, wu, bu, y, z, ws, td);
  }
}
