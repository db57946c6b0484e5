// MindpetLoraLinearGrad (ops/CONTRACTS.md 1, backward):
//   g = dy B; dB = s dy^T u; dA = s g^T x_d; dx = dy W + s (g A) [* mask].
// Stage 1, per vector core, its block of dx (plan.dx.grid) in row chunks:
//   gemm[1] g tiles = dy B -> UB: s g (private operand; row writer also to the global s g)
//   row writer: s u and (mask) x_d of the chunk rows to the global workspace
//   gemm[0] dx = dy W; gemm[2] dx += (s g) A (atomic add, or tile-wise * mask + dx with dropout)
// SyncAll; stage 2: dA = (s g)^T x_d and dB = dy^T (s u) over their own core grids.
// Workspace: [s g: M x R][s u: M x R][x_d: M x K if mask][per-core s g chunks].
// Mirrors ops/cpu lora_linear backward. UNCOMPILED HERE (see ascendc/README.md).
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
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmD_, &td.mm[0], mmG_, &td.mm[1], mmL_, &td.mm[2],
                      mmA_, &td.mm[3], mmB_, &td.mm[4]);
    m_ = p.grid.m; k_ = p.grid.n; n_ = p.gemm[0].k; r_ = p.gemm[1].n;
    scale_ = td.scale;
    mask_on_ = td.hasMask != 0;
    dy_.SetGlobalBuffer((__gm__ T*)dy); x_.SetGlobalBuffer((__gm__ T*)x); w_.SetGlobalBuffer((__gm__ T*)w);
    a_.SetGlobalBuffer((__gm__ T*)a); b_.SetGlobalBuffer((__gm__ T*)b); u_.SetGlobalBuffer((__gm__ T*)u);
    mask_.SetGlobalBuffer((__gm__ T*)mask); dx_.SetGlobalBuffer((__gm__ T*)dx);
    dA_.SetGlobalBuffer((__gm__ T*)dA); dB_.SetGlobalBuffer((__gm__ T*)dB);
    const uint64_t mr = static_cast<uint64_t>(m_) * r_ * sizeof(T);
    sgAll_.SetGlobalBuffer((__gm__ T*)ws);
    suAll_.SetGlobalBuffer((__gm__ T*)(ws + mr));
    xdAll_.SetGlobalBuffer((__gm__ T*)(ws + 2 * mr));
    const uint64_t globalBytes = 2 * mr + (mask_on_ ? static_cast<uint64_t>(m_) * k_ * sizeof(T) : 0);
    const uint32_t core = GetBlockIdx();
    sg_.SetGlobalBuffer((__gm__ T*)(ws + PrivateRegion(p, globalBytes, core, r_ * sizeof(T))));

    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      pipe_.InitBuffer(gQ_, 2, p.ub[0].fixedBytes);
      pipe_.InitBuffer(rowBuf_, p.ub[2].rowBytes * p.chunkM);
      if (mask_on_) {
        pipe_.InitBuffer(lQ_, 2, p.ub[3].fixedBytes);
        pipe_.InitBuffer(mQ_, 2, p.ub[4].fixedBytes);
        pipe_.InitBuffer(dQ_, 2, p.ub[5].fixedBytes);
        pipe_.InitBuffer(exQ_, 2, p.ub[6].fixedBytes);
        pipe_.InitBuffer(emQ_, 2, p.ub[7].fixedBytes);
        pipe_.InitBuffer(eoQ_, 2, p.ub[8].fixedBytes);
      }
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
    SyncAll<false>();  // s g, s u, x_d of every row are in GM
    const GlobalTensor<T>& xd = mask_on_ ? xdAll_ : x_;
    WeightGrad(mmA_, td.plan.dA, core, sgAll_, xd, dA_);
    WeightGrad(mmB_, td.plan.dB, core, dy_, suAll_, dB_);
    mmD_.End(); mmG_.End(); mmL_.End(); mmA_.End(); mmB_.End();
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    // g tiles -> s g (private operand, and the global copy for dA)
    const mt::GemmBase& gg = p.gemm[1];
    const mt::Range2D area = mt::GemmArea(p, 1, ch);
    mmG_.SetTensorA(dy_[row0 * n_], false);
    mmG_.SetTensorB(b_, false);
    mmG_.SetTail(ch.mLen, r_, n_);
    for (uint32_t t = 0; mmG_.template Iterate<true>(); ++t) {
      const mt::Range2D tile = mt::TileOf(gg, area, t);
      LocalTensor<T> gt = gQ_.AllocTensor<T>();
      mmG_.template GetTensorC<true>(gt, false, true);
      gQ_.EnQue(gt);
      gt = gQ_.DeQue<T>();
      Muls(gt, gt, static_cast<T>(scale_), gg.baseM * gg.baseN);
      SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
      WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
      RowsToGm(sg_[static_cast<uint64_t>(tile.m0 - ch.m0) * r_ + tile.n0], gt, tile.mLen, tile.nLen, gg.baseN, r_);
      if (writer) RowsToGm(sgAll_[static_cast<uint64_t>(tile.m0) * r_ + tile.n0], gt, tile.mLen, tile.nLen, gg.baseN, r_);
      gQ_.FreeTensor(gt);
    }
    if (writer) {
      ScaleRows(row0, ch.mLen);
      if (mask_on_) MaskRows(p.elemTile, row0 * k_, static_cast<uint64_t>(ch.mLen) * k_);
    }
    GmWriteFence();
    const uint64_t dxOff = row0 * k_ + ch.n0;
    mmD_.SetTensorA(dy_[row0 * n_], false);
    mmD_.SetTensorB(w_[ch.n0], false);
    mmD_.SetTail(ch.mLen, ch.nLen, n_);
    mmD_.IterateAll(dx_[dxOff]);
    mmL_.SetTensorA(sg_, false);
    mmL_.SetTensorB(a_[ch.n0], false);
    mmL_.SetTail(ch.mLen, ch.nLen, r_);
    if (!mask_on_) {
      mmL_.IterateAll(dx_[dxOff], 1);
      return;
    }
    // dx += ((s g) A) * mask, tile by tile (dy W is already in dx)
    const mt::GemmBase& gl = p.gemm[2];
    for (uint32_t t = 0; mmL_.template Iterate<true>(); ++t) {
      const mt::Range2D tile = mt::TileOf(gl, ch, t);
      const uint64_t off = static_cast<uint64_t>(tile.m0) * k_ + tile.n0;
      LocalTensor<T> lt = lQ_.AllocTensor<T>();
      mmL_.template GetTensorC<true>(lt, false, true);
      LocalTensor<T> mt_ = mQ_.AllocTensor<T>();
      LocalTensor<T> dt = dQ_.AllocTensor<T>();
      RowsFromGm(mt_, mask_[off], tile.mLen, tile.nLen, gl.baseN, k_);
      RowsFromGm(dt, dx_[off], tile.mLen, tile.nLen, gl.baseN, k_);
      lQ_.EnQue(lt); mQ_.EnQue(mt_); dQ_.EnQue(dt);
      lt = lQ_.DeQue<T>(); mt_ = mQ_.DeQue<T>(); dt = dQ_.DeQue<T>();
      Mul(lt, lt, mt_, gl.baseM * gl.baseN);
      Add(dt, dt, lt, gl.baseM * gl.baseN);
      SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
      WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
      RowsToGm(dx_[off], dt, tile.mLen, tile.nLen, gl.baseN, k_);
      lQ_.FreeTensor(lt); mQ_.FreeTensor(mt_); dQ_.FreeTensor(dt);
    }
  }

  // suAll[rows] = s * u[rows]
  __aicore__ inline void ScaleRows(uint64_t row0, uint32_t rows) {
    const uint32_t ubRow = UbRowElems<T>(r_);
    LocalTensor<T> t = rowBuf_.Get<T>();
    RowsFromGm(t, u_[row0 * r_], rows, r_, ubRow, r_);
    SetFlag<HardEvent::MTE2_V>(EVENT_ID0);
    WaitFlag<HardEvent::MTE2_V>(EVENT_ID0);
    Muls(t, t, static_cast<T>(scale_), rows * ubRow);
    SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
    WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
    RowsToGm(suAll_[row0 * r_], t, rows, r_, ubRow, r_);
    SetFlag<HardEvent::MTE3_MTE2>(EVENT_ID0);
    WaitFlag<HardEvent::MTE3_MTE2>(EVENT_ID0);
  }

  // xdAll[off, off + len) = x * mask
  __aicore__ inline void MaskRows(uint32_t tile, uint64_t off, uint64_t len) {
    for (uint64_t i = 0; i < len; i += tile) {
      const uint32_t n = static_cast<uint32_t>(len - i < tile ? len - i : tile);
      LocalTensor<T> xt = exQ_.AllocTensor<T>();
      LocalTensor<T> mt_ = emQ_.AllocTensor<T>();
      RowsFromGm(xt, x_[off + i], 1, n, tile, n);
      RowsFromGm(mt_, mask_[off + i], 1, n, tile, n);
      exQ_.EnQue(xt); emQ_.EnQue(mt_);
      xt = exQ_.DeQue<T>(); mt_ = emQ_.DeQue<T>();
      LocalTensor<T> o = eoQ_.AllocTensor<T>();
      Mul(o, xt, mt_, n);
      eoQ_.EnQue(o);
      exQ_.FreeTensor(xt); emQ_.FreeTensor(mt_);
      o = eoQ_.DeQue<T>();
      RowsToGm(xdAll_[off + i], o, 1, n, tile, n);
      eoQ_.FreeTensor(o);
    }
  }

  TPipe pipe_;
  MmToGm<T> mmD_, mmL_, mmA_, mmB_;
  MmToUb<T> mmG_;
  TQue<TPosition::VECIN, 2> gQ_, lQ_, mQ_, dQ_, exQ_, emQ_;
  TQue<TPosition::VECOUT, 2> eoQ_;
  TBuf<TPosition::VECCALC> rowBuf_;
  GlobalTensor<T> dy_, x_, w_, a_, b_, u_, mask_, dx_, dA_, dB_, sgAll_, suAll_, xdAll_, sg_;
  uint32_t m_ = 0, n_ = 0, k_ = 0, r_ = 0;
  float scale_ = 1.0f;
  bool mask_on_ = false;
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
