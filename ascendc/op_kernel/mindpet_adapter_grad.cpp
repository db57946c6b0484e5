// MindpetAdapterGrad (ops/CONTRACTS.md 2, backward):
//   a = act(z); dWu = dy^T a; dbu = sum_M dy; dz = (dy Wu) * act'(z); dWd = dz^T h; dbd = sum_M dz;
//   dh = dy + dz Wd.
// Stage 1, per vector core, its block of dh (plan.dh.grid) in row chunks; per chunk
//   gemm[0]  g = dy Wu (all B columns)      -> GM: the row writer's global dz rows, else its
//                                              private dz chunk
//   vector   dz = g * act'(z) in place; the row writer also stores a = act(z) (global a)
//   gemm[1]  dh = dz Wd (block columns)      -> GM
//   vector   dh += dy
// Vector-core barrier (SyncAll), stage 2 over their own core grids:
//   dWu = dy^T a, dWd = dz^T h (WeightGrad); dbu = sum dy, dbd = sum dz (ColumnSum).
// Workspace (plan.dh.workspaceBytes): [dz: M x B][a: M x B][per-core dz chunk: chunkM x B].
// Matmul objects: 4 (the API maximum), one per gemm; C always goes to GM (see the GM-staged row
// passes of mindpet_kernel_common.h). UB: plan.dh.ub[0..3] (g, z and four float32 boxes of
// gemm[0]'s base), ub[6..8] (dh, dy, out boxes of gemm[1]'s base); the plan's row buffers
// ub[4..5] are not used.
// Mirrors ops/cpu/adapter.cc BackwardF32 (per row tile: dz = (dy Wu) * act'(z), then dh = dy + dz Wd;
// weight and bias gradients reduce over all rows). TYPE-CHECKED ONLY (see ascendc/README.md).
#include "mindpet_kernel_common.h"
#include "mindpet_tiling_data.h"

using namespace mindpet_kernel;  // NOLINT

template <typename T>
class AdapterBackward {
 public:
  __aicore__ inline void Run(GM_ADDR dy, GM_ADDR h, GM_ADDR wd, GM_ADDR wu, GM_ADDR z, GM_ADDR dh, GM_ADDR dwd,
                             GM_ADDR dbd, GM_ADDR dwu, GM_ADDR dbu, GM_ADDR ws,
                             const MindpetAdapterGradTilingData& td) {
    const mt::FusedPlan& p = td.plan.dh;
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmG_, &td.mm[0], mmH_, &td.mm[1], mmWu_, &td.mm[2],
                      mmWd_, &td.mm[3]);
    m_ = p.grid.m; d_ = p.grid.n; b_ = p.gemm[0].n; act_ = td.activation;
    dy_.SetGlobalBuffer((__gm__ T*)dy); h_.SetGlobalBuffer((__gm__ T*)h);
    wd_.SetGlobalBuffer((__gm__ T*)wd); wu_.SetGlobalBuffer((__gm__ T*)wu); z_.SetGlobalBuffer((__gm__ T*)z);
    dh_.SetGlobalBuffer((__gm__ T*)dh); dwd_.SetGlobalBuffer((__gm__ T*)dwd); dbd_.SetGlobalBuffer((__gm__ T*)dbd);
    dwu_.SetGlobalBuffer((__gm__ T*)dwu); dbu_.SetGlobalBuffer((__gm__ T*)dbu);
    const uint64_t mb = mt::WsRegion(m_, b_ * sizeof(T));  // 512-byte aligned regions
    dzAll_.SetGlobalBuffer((__gm__ T*)ws);
    aAll_.SetGlobalBuffer((__gm__ T*)(ws + mb));
    const uint32_t core = GetBlockIdx();
    dzMine_.SetGlobalBuffer((__gm__ T*)(ws + PrivateRegion(2 * mb, core, mt::WsRegion(p.chunkM, b_ * sizeof(T)))));

    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      pipe_.InitBuffer(gQ_, 2, p.ub[0].fixedBytes);
      pipe_.InitBuffer(zQ_, 2, p.ub[1].fixedBytes);
      pipe_.InitBuffer(f32a_, 2 * p.ub[2].fixedBytes);
      pipe_.InitBuffer(f32b_, 2 * p.ub[3].fixedBytes);
      pipe_.InitBuffer(cQ_, 2, p.ub[6].fixedBytes);
      pipe_.InitBuffer(rQ_, 2, p.ub[7].fixedBytes);
      pipe_.InitBuffer(oQ_, 2, p.ub[8].fixedBytes);
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
    SyncAll();  // vector cores only: the cube cores keep serving the matmul objects
    WeightGrad(mmWu_, td.plan.dWu, core, dy_, aAll_, dwu_);  // dy^T a   [D, B]
    WeightGrad(mmWd_, td.plan.dWd, core, dzAll_, h_, dwd_);  // dz^T h   [B, D]
    pipe_.Reset();
    ColumnSum(pipe_, td.plan.dbUp, core, dy_, dbu_);         // sum dy   [D]
    pipe_.Reset();
    ColumnSum(pipe_, td.plan.dbDown, core, dzAll_, dbd_);    // sum dz   [B]
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    // g = dy Wu, staged where dz of these rows lives (the row writer's global rows feed stage 2)
    const GlobalTensor<T> dz = writer ? dzAll_[row0 * b_] : dzMine_;
    mmG_.SetTensorA(dy_[row0 * d_], false);
    mmG_.SetTensorB(wu_, false);
    mmG_.SetTail(ch.mLen, b_, d_);
    IterateAllAndEnd(mmG_, dz);
    // dz = g * act'(z) in place; a = act(z) once per row (row writer)
    LocalTensor<float> z32 = f32a_.Get<float>();
    LocalTensor<float> g32 = z32[p.ub[2].fixedBytes / sizeof(float)];
    LocalTensor<float> s0 = f32b_.Get<float>();
    LocalTensor<float> s1 = s0[p.ub[3].fixedBytes / sizeof(float)];
    const mt::Range2D rows = {0, ch.mLen, 0, b_};
    ActGradRows(p.gemm[0], rows, dz, z_[row0 * b_], aAll_[row0 * b_], writer, b_, act_, gQ_, zQ_, z32, g32, s0,
                s1);
    GmWriteFence();
    // dh = dz Wd on the block columns, then dh += dy
    const uint64_t off = row0 * d_ + ch.n0;
    mmH_.SetTensorA(dz, false);
    mmH_.SetTensorB(wd_[ch.n0], false);
    mmH_.SetTail(ch.mLen, ch.nLen, b_);
    IterateAllAndEnd(mmH_, dh_[off]);
    const mt::Range2D cols = {0, ch.mLen, 0, ch.nLen};
    AddResidual(p.gemm[1], cols, dh_[off], dy_[off], d_, cQ_, rQ_, oQ_);
  }

  TPipe pipe_;
  MmToGm<T> mmG_, mmH_, mmWu_, mmWd_;
  InQue gQ_, zQ_, cQ_, rQ_;
  OutQue oQ_;
  TBuf<TPosition::VECCALC> f32a_, f32b_;
  GlobalTensor<T> dy_, h_, wd_, wu_, z_, dh_, dwd_, dbd_, dwu_, dbu_, dzAll_, aAll_, dzMine_;
  uint32_t m_ = 0, d_ = 0, b_ = 0;
  int32_t act_ = 0;
};

extern "C" __global__ __aicore__ void mindpet_adapter_grad(GM_ADDR dy, GM_ADDR h, GM_ADDR wd, GM_ADDR wu, GM_ADDR z,
                                                           GM_ADDR dh, GM_ADDR dwd, GM_ADDR dbd, GM_ADDR dwu,
                                                           GM_ADDR dbu, GM_ADDR workspace, GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MindpetAdapterGradTilingData);
  GET_TILING_DATA(td, tiling);
  GM_ADDR ws = GetUserWorkspace(workspace);
  if constexpr (IsSameType<DTYPE_DY, half>::value) {
    AdapterBackward<half> op;
    op.Run(dy, h, wd, wu, z, dh, dwd, dbd, dwu, dbu, ws, td);
  } else {
    AdapterBackward<float> op;
    op.Run(dy, h, wd, wu, z, dh, dwd, dbd, dwu, dbu, ws, td);
  }
}
