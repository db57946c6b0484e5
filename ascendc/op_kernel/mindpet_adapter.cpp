// MindpetAdapter (ops/CONTRACTS.md 2, forward): z = h Wd^T + bd (saved), y = h + act(z) Wu^T + bu.
// Per vector core: its block of y in row chunks; per chunk
//   gemm[0] z tiles -> UB: z (row writer), a = act(z) -> private workspace (operand of gemm[1])
//   gemm[1] tiles of a Wu^T + bu -> UB: + h -> y.
// Mirrors ops/cpu adapter forward. UNCOMPILED HERE (see ascendc/README.md).
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
      a_.SetGlobalBuffer((__gm__ T*)(ws + PrivateRegion(p, 0, core, b_ * sizeof(T))));
      pipe_.InitBuffer(zQ_, 2, p.ub[0].fixedBytes);
      pipe_.InitBuffer(f32_, 2 * p.ub[1].fixedBytes);
      pipe_.InitBuffer(cQ_, 2, p.ub[3].fixedBytes);
      pipe_.InitBuffer(rQ_, 2, p.ub[4].fixedBytes);
      pipe_.InitBuffer(oQ_, 2, p.ub[5].fixedBytes);
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
    mmZ_.End();
    mmY_.End();
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const mt::GemmBase& gz = p.gemm[0];
    const uint32_t n = gz.baseM * gz.baseN;
    const mt::Range2D area = mt::GemmArea(p, 0, ch);
    mmZ_.SetTensorA(h_[static_cast<uint64_t>(ch.m0) * d_], false);
    mmZ_.SetTensorB(wd_, true);
    mmZ_.SetBias(bd_);
    mmZ_.SetTail(ch.mLen, b_, d_);
    LocalTensor<float> z32 = f32_.Get<float>();
    LocalTensor<float> tmp = z32[p.ub[1].fixedBytes / sizeof(float)];
    for (uint32_t t = 0; mmZ_.template Iterate<true>(); ++t) {
      const mt::Range2D tile = mt::TileOf(gz, area, t);
      LocalTensor<T> zt = zQ_.AllocTensor<T>();
      mmZ_.template GetTensorC<true>(zt, false, true);
      zQ_.EnQue(zt);
      zt = zQ_.DeQue<T>();
      if (writer) {
        RowsToGm(z_[static_cast<uint64_t>(tile.m0) * b_ + tile.n0], zt, tile.mLen, tile.nLen, gz.baseN, b_);
        SetFlag<HardEvent::MTE3_V>(EVENT_ID0);
        WaitFlag<HardEvent::MTE3_V>(EVENT_ID0);
      }
      ToFloat(z32, zt, n);
      ActForward(z32, z32, tmp, n, act_);
      FromFloat(zt, z32, n);
      SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
      WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
      RowsToGm(a_[static_cast<uint64_t>(tile.m0 - ch.m0) * b_ + tile.n0], zt, tile.mLen, tile.nLen, gz.baseN, b_);
      zQ_.FreeTensor(zt);
    }
    GmWriteFence();
    // y tiles = h + a Wu^T + bu
    const mt::GemmBase& gy = p.gemm[1];
    mmY_.SetTensorA(a_, false);
    mmY_.SetTensorB(wu_[static_cast<uint64_t>(ch.n0) * b_], true);
    mmY_.SetBias(bu_[ch.n0]);
    mmY_.SetTail(ch.mLen, ch.nLen, b_);
    for (uint32_t t = 0; mmY_.template Iterate<true>(); ++t) {
      const mt::Range2D tile = mt::TileOf(gy, ch, t);
      const uint64_t off = static_cast<uint64_t>(tile.m0) * d_ + tile.n0;
      LocalTensor<T> ct = cQ_.AllocTensor<T>();
      mmY_.template GetTensorC<true>(ct, false, true);
      LocalTensor<T> rt = rQ_.AllocTensor<T>();
      RowsFromGm(rt, h_[off], tile.mLen, tile.nLen, gy.baseN, d_);
      cQ_.EnQue(ct); rQ_.EnQue(rt);
      ct = cQ_.DeQue<T>(); rt = rQ_.DeQue<T>();
      LocalTensor<T> ot = oQ_.AllocTensor<T>();
      Add(ot, ct, rt, gy.baseM * gy.baseN);
      oQ_.EnQue(ot);
      cQ_.FreeTensor(ct); rQ_.FreeTensor(rt);
      ot = oQ_.DeQue<T>();
      RowsToGm(y_[off], ot, tile.mLen, tile.nLen, gy.baseN, d_);
      oQ_.FreeTensor(ot);
    }
  }

  TPipe pipe_;
  MmToUb<T> mmZ_, mmY_;
  TQue<TPosition::VECIN, 2> zQ_, cQ_, rQ_;
  TQue<TPosition::VECOUT, 2> oQ_;
  TBuf<TPosition::VECCALC> f32_;
  GlobalTensor<T> h_, wd_, bd_, wu_, bu_, y_, z_, a_;
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
