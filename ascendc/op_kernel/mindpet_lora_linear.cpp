// MindpetLoraLinear (ops/CONTRACTS.md 1, forward): y = x W^T + b + s (x_d A^T) B^T, u = x_d A^T.
// Per vector core: its block of y (plan.y.grid) in row chunks; per chunk
//   [mask]  x_d = x * mask -> private workspace                     (vector)
//   gemm[1] u tiles = x_d A^T -> UB: u (row writer) and s u (private workspace)
//   gemm[0] y = x W^T (+ b)                                          (cube, to GM)
//   gemm[2] y += (s u) B^T                                           (cube, atomic add)
// Mirrors ops/cpu lora_linear forward. UNCOMPILED HERE (see ascendc/README.md).
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
      x_.SetGlobalBuffer((__gm__ T*)x); w_.SetGlobalBuffer((__gm__ T*)w);
      bias_.SetGlobalBuffer((__gm__ T*)bias); a_.SetGlobalBuffer((__gm__ T*)a);
      b_.SetGlobalBuffer((__gm__ T*)b); mask_.SetGlobalBuffer((__gm__ T*)mask);
      y_.SetGlobalBuffer((__gm__ T*)y); u_.SetGlobalBuffer((__gm__ T*)u);
      const uint64_t perCoreRow = static_cast<uint64_t>(r_ + (td.hasMask ? k_ : 0)) * sizeof(T);
      const uint64_t mine = PrivateRegion(p, 0, core, perCoreRow);
      su_.SetGlobalBuffer((__gm__ T*)(ws + mine));
      xd_.SetGlobalBuffer((__gm__ T*)(ws + mine + static_cast<uint64_t>(p.chunkM) * r_ * sizeof(T)));
      pipe_.InitBuffer(uQ_, 2, p.ub[0].fixedBytes);
      if (td.hasMask) {
        pipe_.InitBuffer(xQ_, 2, p.ub[2].fixedBytes);
        pipe_.InitBuffer(mQ_, 2, p.ub[3].fixedBytes);
        pipe_.InitBuffer(oQ_, 2, p.ub[4].fixedBytes);
      }
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) {
        Chunk(p, td, mt::ChunkOf(p, block, c), mt::WritesRowOutputs(p.grid, core));
      }
    }
    mmY_.End();
    mmU_.End();
    mmL_.End();
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const MindpetLoraLinearTilingData& td,
                               const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    GlobalTensor<T> xin = x_[row0 * k_];
    if (td.hasMask) {
      MaskRows(p.elemTile, row0 * k_, static_cast<uint64_t>(ch.mLen) * k_);
      GmWriteFence();
      xin = xd_;
    }
    // u = x_d A^T, tile by tile through UB
    const mt::GemmBase& gu = p.gemm[1];
    const mt::Range2D area = mt::GemmArea(p, 1, ch);
    mmU_.SetTensorA(xin, false);
    mmU_.SetTensorB(a_, true);
    mmU_.SetTail(ch.mLen, r_, k_);
    for (uint32_t t = 0; mmU_.template Iterate<true>(); ++t) {
      const mt::Range2D tile = mt::TileOf(gu, area, t);
      LocalTensor<T> ut = uQ_.AllocTensor<T>();
      mmU_.template GetTensorC<true>(ut, false, true);
      uQ_.EnQue(ut);
      ut = uQ_.DeQue<T>();
      if (writer) {
        RowsToGm(u_[static_cast<uint64_t>(tile.m0) * r_ + tile.n0], ut, tile.mLen, tile.nLen, gu.baseN, r_);
        SetFlag<HardEvent::MTE3_V>(EVENT_ID0);
        WaitFlag<HardEvent::MTE3_V>(EVENT_ID0);
      }
      Muls(ut, ut, static_cast<T>(td.scale), gu.baseM * gu.baseN);
      SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
      WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
      RowsToGm(su_[static_cast<uint64_t>(tile.m0 - ch.m0) * r_ + tile.n0], ut, tile.mLen, tile.nLen, gu.baseN, r_);
      uQ_.FreeTensor(ut);
    }
    GmWriteFence();
    // y = x W^T (+ b), then y += (s u) B^T
    const uint64_t yOff = row0 * n_ + ch.n0;
    mmY_.SetTensorA(x_[row0 * k_], false);
    mmY_.SetTensorB(w_[static_cast<uint64_t>(ch.n0) * k_], true);
    if (td.hasBias) mmY_.SetBias(bias_[ch.n0]);
    mmY_.SetTail(ch.mLen, ch.nLen, k_);
    mmY_.IterateAll(y_[yOff]);
    mmL_.SetTensorA(su_, false);
    mmL_.SetTensorB(b_[static_cast<uint64_t>(ch.n0) * r_], true);
    mmL_.SetTail(ch.mLen, ch.nLen, r_);
    mmL_.IterateAll(y_[yOff], 1);
  }

  // xd_[0, len) = x[off, off + len) * mask[off, off + len)
  __aicore__ inline void MaskRows(uint32_t tile, uint64_t off, uint64_t len) {
    for (uint64_t i = 0; i < len; i += tile) {
      const uint32_t n = static_cast<uint32_t>(len - i < tile ? len - i : tile);
      LocalTensor<T> xt = xQ_.AllocTensor<T>();
      LocalTensor<T> mt_ = mQ_.AllocTensor<T>();
      RowsFromGm(xt, x_[off + i], 1, n, tile, n);
      RowsFromGm(mt_, mask_[off + i], 1, n, tile, n);
      xQ_.EnQue(xt);
      mQ_.EnQue(mt_);
      xt = xQ_.DeQue<T>();
      mt_ = mQ_.DeQue<T>();
      LocalTensor<T> o = oQ_.AllocTensor<T>();
      Mul(o, xt, mt_, n);
      oQ_.EnQue(o);
      xQ_.FreeTensor(xt);
      mQ_.FreeTensor(mt_);
      o = oQ_.DeQue<T>();
      RowsToGm(xd_[i], o, 1, n, tile, n);
      oQ_.FreeTensor(o);
    }
  }

  TPipe pipe_;
  MmToGm<T> mmY_, mmL_;
  MmToUb<T> mmU_;
  TQue<TPosition::VECIN, 2> uQ_, xQ_, mQ_;
  TQue<TPosition::VECOUT, 2> oQ_;
  GlobalTensor<T> x_, w_, bias_, a_, b_, mask_, y_, u_, su_, xd_;
  uint32_t m_ = 0, n_ = 0, k_ = 0, r_ = 0;
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
