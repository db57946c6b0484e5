// MindpetLowRankAdapter (ops/CONTRACTS.md 3, forward): Wdown = Ldl Ldr, Wup = Lul Lur, never formed:
//   t = h Ldl; z = t Ldr + bd; q = act(z) Lul; y = h + q Lur + bu   (t, z, q saved).
// Per vector core: its block of y (plan.y.grid) in row chunks; per chunk (all on the chunk rows)
//   gemm[0]  t = h Ldl          [rows, R] -> GM: the row writer's t rows, else its private t chunk
//   gemm[1]  z = t Ldr + bd     [rows, B] -> GM: the row writer's z rows, else its private a chunk
//   vector   a = act(z)                   -> private a chunk (in place for non-writers)
//   gemm[2]  q = a Lul          [rows, R] -> GM: the row writer's q rows, else its private q chunk
//   gemm[3]  y = q Lur + bu     [rows, block columns] -> GM
//   vector   y += h
// Only rank-R products: no D x B matrix exists anywhere. Non-writer cores of a block row recompute
// t, z, q (cheap: R and B are small) instead of waiting for the writer.
// Workspace (plan.y.workspaceBytes): per core [t: chunkM x R][a: chunkM x B][q: chunkM x R], each
// region 512-byte aligned (mt::WsRegion).
// Matmul objects: 4 (the API maximum), one per gemm, C to GM (see the GM-staged row passes of
// mindpet_kernel_common.h). UB: plan.y.ub[2], ub[3] (z box and two float32 boxes of gemm[1]'s
// base), ub[7..9] (y, h, out boxes of gemm[3]'s base), ub[10] (float32 act(z) box: Erf may not
// write over its source); the plan's t/q tile and row buffers
// (ub[0], ub[1], ub[4], ub[5], ub[6]) are not used: t and q go from the cube to GM directly.
// Mirrors ops/cpu/low_rank_adapter.cc ForwardF32 (same chain per row tile). TYPE-CHECKED ONLY
// (see ascendc/README.md).
#include "mindpet_kernel_common.h"
#include "mindpet_tiling_data.h"

using namespace mindpet_kernel;  // NOLINT

template <typename T>
class LowRankAdapterForward {
 public:
  __aicore__ inline void Run(GM_ADDR h, GM_ADDR ldl, GM_ADDR ldr, GM_ADDR bd, GM_ADDR lul, GM_ADDR lur, GM_ADDR bu,
                             GM_ADDR y, GM_ADDR t, GM_ADDR z, GM_ADDR q, GM_ADDR ws,
                             const MindpetLowRankAdapterTilingData& td) {
    const mt::FusedPlan& p = td.plan.y;
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmT_, &td.mm[0], mmZ_, &td.mm[1], mmQ_, &td.mm[2], mmY_,
                      &td.mm[3]);
    const uint32_t core = GetBlockIdx();
    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      d_ = p.grid.n; r_ = p.gemm[0].n; b_ = p.gemm[1].n; act_ = td.activation;
      h_.SetGlobalBuffer((__gm__ T*)h); ldl_.SetGlobalBuffer((__gm__ T*)ldl); ldr_.SetGlobalBuffer((__gm__ T*)ldr);
      bd_.SetGlobalBuffer((__gm__ T*)bd); lul_.SetGlobalBuffer((__gm__ T*)lul); lur_.SetGlobalBuffer((__gm__ T*)lur);
      bu_.SetGlobalBuffer((__gm__ T*)bu); y_.SetGlobalBuffer((__gm__ T*)y); t_.SetGlobalBuffer((__gm__ T*)t);
      z_.SetGlobalBuffer((__gm__ T*)z); q_.SetGlobalBuffer((__gm__ T*)q);
      const uint64_t chunkR = mt::WsRegion(p.chunkM, r_ * sizeof(T));  // 512-byte aligned regions
      const uint64_t chunkB = mt::WsRegion(p.chunkM, b_ * sizeof(T));
      const uint64_t mine = PrivateRegion(0, core, 2 * chunkR + chunkB);
      tMine_.SetGlobalBuffer((__gm__ T*)(ws + mine));
      aMine_.SetGlobalBuffer((__gm__ T*)(ws + mine + chunkR));
      qMine_.SetGlobalBuffer((__gm__ T*)(ws + mine + chunkR + chunkB));
      pipe_.InitBuffer(zQ_, 2, p.ub[2].fixedBytes);
      pipe_.InitBuffer(f32_, 2 * p.ub[3].fixedBytes);
      pipe_.InitBuffer(cQ_, 2, p.ub[7].fixedBytes);
      pipe_.InitBuffer(rQ_, 2, p.ub[8].fixedBytes);
      pipe_.InitBuffer(oQ_, 2, p.ub[9].fixedBytes);
      pipe_.InitBuffer(y32_, p.ub[10].fixedBytes);
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    // The row writer computes straight into the saved outputs (and reads them back as operands);
    // the other cores of its block row use their private chunks. z is staged where a will live.
    const GlobalTensor<T> t = writer ? t_[row0 * r_] : tMine_;
    const GlobalTensor<T> z = writer ? z_[row0 * b_] : aMine_;
    const GlobalTensor<T> q = writer ? q_[row0 * r_] : qMine_;
    // t = h Ldl
    mmT_.SetTensorA(h_[row0 * d_], false);
    mmT_.SetTensorB(ldl_, false);
    mmT_.SetTail(ch.mLen, r_, d_);
    IterateAllAndEnd(mmT_, t);
    // z = t Ldr + bd
    mmZ_.SetTensorA(t, false);
    mmZ_.SetTensorB(ldr_, false);
    mmZ_.SetBias(bd_);
    mmZ_.SetTail(ch.mLen, b_, r_);
    IterateAllAndEnd(mmZ_, z);
    // a = act(z) -> private chunk (operand of q)
    LocalTensor<float> z32 = f32_.Get<float>();
    LocalTensor<float> tmp = z32[p.ub[3].fixedBytes / sizeof(float)];
    const mt::Range2D rows = {0, ch.mLen, 0, b_};
    ActivateRows(p.gemm[1], rows, z, aMine_, b_, act_, zQ_, z32, tmp, y32_.Get<float>());
    GmWriteFence();
    // q = a Lul
    mmQ_.SetTensorA(aMine_, false);
    mmQ_.SetTensorB(lul_, false);
    mmQ_.SetTail(ch.mLen, r_, b_);
    IterateAllAndEnd(mmQ_, q);
    // y = q Lur + bu on the block columns, then y += h
    const uint64_t off = row0 * d_ + ch.n0;
    mmY_.SetTensorA(q, false);
    mmY_.SetTensorB(lur_[ch.n0], false);
    mmY_.SetBias(bu_[ch.n0]);
    mmY_.SetTail(ch.mLen, ch.nLen, r_);
    IterateAllAndEnd(mmY_, y_[off]);
    const mt::Range2D cols = {0, ch.mLen, 0, ch.nLen};
    AddResidual(p.gemm[3], cols, y_[off], h_[off], d_, cQ_, rQ_, oQ_);
  }

  TPipe pipe_;
  MmToGm<T> mmT_, mmZ_, mmQ_, mmY_;
  InQue zQ_, cQ_, rQ_;
  OutQue oQ_;
  TBuf<TPosition::VECCALC> f32_, y32_;
  GlobalTensor<T> h_, ldl_, ldr_, bd_, lul_, lur_, bu_, y_, t_, z_, q_, tMine_, aMine_, qMine_;
  uint32_t d_ = 0, r_ = 0, b_ = 0;
  int32_t act_ = 0;
};

extern "C" __global__ __aicore__ void mindpet_low_rank_adapter(GM_ADDR h, GM_ADDR ldl, GM_ADDR ldr, GM_ADDR bd,
                                                               GM_ADDR lul, GM_ADDR lur, GM_ADDR bu, GM_ADDR y,
                                                               GM_ADDR t, GM_ADDR z, GM_ADDR q, GM_ADDR workspace,
                                                               GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MindpetLowRankAdapterTilingData);
  GET_TILING_DATA(td, tiling);
  GM_ADDR ws = GetUserWorkspace(workspace);
  if constexpr (IsSameType<DTYPE_H, half>::value) {
    LowRankAdapterForward<half> op;
    op.Run(h, ldl, ldr, bd, lul, lur, bu, y, t, z, q, ws, td);
  } else {
    LowRankAdapterForward<float> op;
    op.Run(h, ldl, ldr, bd, lul, lur, bu, y, t, z, q, ws, td);
  }
}
