// MindpetLowRankAdapterGrad (ops/CONTRACTS.md 3, backward), never forming a D x B matrix:
//   a = act(z); dbu = sum_M dy; dLur = q^T dy; dq = dy Lur^T; dLul = a^T dq;
//   dz = (dq Lul^T) * act'(z); dbd = sum_M dz; dLdr = t^T dz; dt = dz Ldr^T; dLdl = h^T dt;
//   dh = dy + dt Ldl^T.
// Stage 1, per vector core, its block of dh (plan.dh.grid) in row chunks; per chunk
//   gemm[0]  dq = dy Lur^T       [rows, R] -> GM: row writer's global dq rows, else private chunk
//   gemm[1]  g = dq Lul^T        [rows, B] -> GM: row writer's global dz rows, else private chunk
//   vector   dz = g * act'(z) in place; the row writer also stores a = act(z) (global a)
//   gemm[2]  dt = dz Ldr^T       [rows, R] -> GM: row writer's global dt rows, else private chunk
//   gemm[3]  dh = dt Ldl^T       [rows, block columns] -> GM
//   vector   dh += dy
// Vector-core barrier (SyncAll), stage 2 over their own core grids:
//   dLdl = h^T dt, dLul = a^T dq, dLdr = t^T dz, dLur = q^T dy (WeightGrad); dbu, dbd (ColumnSum).
// Workspace (plan.dh.workspaceBytes): [dq: M x R][dt: M x R][dz: M x B][a: M x B], then per core
// [dq: chunkM x R][dz: chunkM x B][dt: chunkM x R]; each region 512-byte aligned (mt::WsRegion).
// Matmul objects: 4 (the API maximum) for 8 gemms, C always to GM. Each object is registered with
// the TCubeTiling of the largest gemm it serves and given the org shape of each use:
//   mmRank_  dq (k = D) and dt (k = B): same rows and columns (R), tiling of the larger k;
//   mmWide_  dq Lul^T (n = B) and dt Ldl^T (n = block columns): same rows and k (R), larger n;
//   mmGradN_ dLdl [D, R] and dLul [B, R]; mmGradM_ dLdr [R, B] and dLur [R, D]: one base per pair,
//            planned for the envelope of both grids (mindpet::tiling::ShareGemmObject).
// UB: plan.dh.ub[2..5] (g, z and four float32 boxes of gemm[1]'s base), ub[9..11] (dh, dy, out
// boxes of gemm[3]'s base); the plan's dq/dt tile and row buffers are not used.
// Mirrors ops/cpu/low_rank_adapter.cc BackwardF32 (same chain per row tile; weight and bias
// gradients reduce over all rows). TYPE-CHECKED ONLY (see ascendc/README.md).
#include "mindpet_kernel_common.h"
#include "mindpet_tiling_data.h"

using namespace mindpet_kernel;  // NOLINT

template <typename T>
class LowRankAdapterBackward {
 public:
  __aicore__ inline void Run(GM_ADDR dy, GM_ADDR h, GM_ADDR ldl, GM_ADDR ldr, GM_ADDR lul, GM_ADDR lur, GM_ADDR t,
                             GM_ADDR z, GM_ADDR q, GM_ADDR dh, GM_ADDR dldl, GM_ADDR dldr, GM_ADDR dbd,
                             GM_ADDR dlul, GM_ADDR dlur, GM_ADDR dbu, GM_ADDR ws,
                             const MindpetLowRankAdapterGradTilingData& td) {
    const mt::FusedPlan& p = td.plan.dh;
    m_ = p.grid.m; d_ = p.grid.n; r_ = p.gemm[0].n; b_ = p.gemm[1].n; act_ = td.activation;
    // Single-core shapes: gemm[0] (M' = chunkM, R, D), gemm[2] (chunkM, R, B); gemm[1] (chunkM, B, R),
    // gemm[3] (chunkM, blockN, R). The registered tiling is the larger one of each pair.
    const AscendC::tiling::TCubeTiling* rankTiling = p.gemm[0].k >= p.gemm[2].k ? &td.mm[0] : &td.mm[2];
    const AscendC::tiling::TCubeTiling* wideTiling = p.gemm[1].n >= p.gemm[3].n ? &td.mm[1] : &td.mm[3];
    REGIST_MATMUL_OBJ(&pipe_, GetSysWorkSpacePtr(), mmRank_, rankTiling, mmWide_, wideTiling, mmGradN_, &td.mm[4],
                      mmGradM_, &td.mm[5]);
    dy_.SetGlobalBuffer((__gm__ T*)dy); h_.SetGlobalBuffer((__gm__ T*)h); ldl_.SetGlobalBuffer((__gm__ T*)ldl);
    ldr_.SetGlobalBuffer((__gm__ T*)ldr); lul_.SetGlobalBuffer((__gm__ T*)lul); lur_.SetGlobalBuffer((__gm__ T*)lur);
    t_.SetGlobalBuffer((__gm__ T*)t); z_.SetGlobalBuffer((__gm__ T*)z); q_.SetGlobalBuffer((__gm__ T*)q);
    dh_.SetGlobalBuffer((__gm__ T*)dh); dldl_.SetGlobalBuffer((__gm__ T*)dldl); dldr_.SetGlobalBuffer((__gm__ T*)dldr);
    dbd_.SetGlobalBuffer((__gm__ T*)dbd); dlul_.SetGlobalBuffer((__gm__ T*)dlul);
    dlur_.SetGlobalBuffer((__gm__ T*)dlur); dbu_.SetGlobalBuffer((__gm__ T*)dbu);
    const uint64_t mr = mt::WsRegion(m_, r_ * sizeof(T));  // 512-byte aligned regions
    const uint64_t mb = mt::WsRegion(m_, b_ * sizeof(T));
    dqAll_.SetGlobalBuffer((__gm__ T*)ws);
    dtAll_.SetGlobalBuffer((__gm__ T*)(ws + mr));
    dzAll_.SetGlobalBuffer((__gm__ T*)(ws + 2 * mr));
    aAll_.SetGlobalBuffer((__gm__ T*)(ws + 2 * mr + mb));
    const uint32_t core = GetBlockIdx();
    const uint64_t chunkR = mt::WsRegion(p.chunkM, r_ * sizeof(T));
    const uint64_t chunkB = mt::WsRegion(p.chunkM, b_ * sizeof(T));
    const uint64_t mine = PrivateRegion(2 * mr + 2 * mb, core, 2 * chunkR + chunkB);
    dqMine_.SetGlobalBuffer((__gm__ T*)(ws + mine));
    dzMine_.SetGlobalBuffer((__gm__ T*)(ws + mine + chunkR));
    dtMine_.SetGlobalBuffer((__gm__ T*)(ws + mine + chunkR + chunkB));

    const mt::Range2D block = mt::GridBlock(p.grid, core);
    if (block.mLen != 0) {
      pipe_.InitBuffer(gQ_, 2, p.ub[2].fixedBytes);
      pipe_.InitBuffer(zQ_, 2, p.ub[3].fixedBytes);
      pipe_.InitBuffer(f32a_, 2 * p.ub[4].fixedBytes);
      pipe_.InitBuffer(f32b_, 2 * p.ub[5].fixedBytes);
      pipe_.InitBuffer(cQ_, 2, p.ub[9].fixedBytes);
      pipe_.InitBuffer(rQ_, 2, p.ub[10].fixedBytes);
      pipe_.InitBuffer(oQ_, 2, p.ub[11].fixedBytes);
      const bool writer = mt::WritesRowOutputs(p.grid, core);
      for (uint32_t c = 0; c < mt::ChunkCount(p, block); ++c) Chunk(p, mt::ChunkOf(p, block, c), writer);
    }
    SyncAll();  // vector cores only: the cube cores keep serving the matmul objects
    WeightGrad(mmGradN_, td.plan.dDownLeft, core, h_, dtAll_, dldl_, true);    // h^T dt  [D, R]
    WeightGrad(mmGradN_, td.plan.dUpLeft, core, aAll_, dqAll_, dlul_, true);   // a^T dq  [B, R]
    WeightGrad(mmGradM_, td.plan.dDownRight, core, t_, dzAll_, dldr_, true);   // t^T dz  [R, B]
    WeightGrad(mmGradM_, td.plan.dUpRight, core, q_, dy_, dlur_, true);        // q^T dy  [R, D]
    pipe_.Reset();
    ColumnSum(pipe_, td.plan.dbUp, core, dy_, dbu_);                           // sum dy  [D]
    pipe_.Reset();
    ColumnSum(pipe_, td.plan.dbDown, core, dzAll_, dbd_);                      // sum dz  [B]
  }

 private:
  __aicore__ inline void Chunk(const mt::FusedPlan& p, const mt::Range2D& ch, bool writer) {
    const uint64_t row0 = ch.m0;
    const GlobalTensor<T> dq = writer ? dqAll_[row0 * r_] : dqMine_;
    const GlobalTensor<T> dz = writer ? dzAll_[row0 * b_] : dzMine_;
    const GlobalTensor<T> dt = writer ? dtAll_[row0 * r_] : dtMine_;
    // dq = dy Lur^T   (Lur [R, D] read transposed)
    mmRank_.SetOrgShape(m_, r_, d_, d_);
    mmRank_.SetTensorA(dy_[row0 * d_], false);
    mmRank_.SetTensorB(lur_, true);
    mmRank_.SetTail(ch.mLen, r_, d_);
    IterateAllAndEnd(mmRank_, dq);
    // g = dq Lul^T   (Lul [B, R]), staged where dz lives
    mmWide_.SetOrgShape(m_, b_, r_, r_);
    mmWide_.SetTensorA(dq, false);
    mmWide_.SetTensorB(lul_, true);
    mmWide_.SetTail(ch.mLen, b_, r_);
    IterateAllAndEnd(mmWide_, dz);
    // dz = g * act'(z) in place; a = act(z) once per row (row writer)
    LocalTensor<float> z32 = f32a_.Get<float>();
    LocalTensor<float> g32 = z32[p.ub[4].fixedBytes / sizeof(float)];
    LocalTensor<float> s0 = f32b_.Get<float>();
    LocalTensor<float> s1 = s0[p.ub[5].fixedBytes / sizeof(float)];
    const mt::Range2D rows = {0, ch.mLen, 0, b_};
    ActGradRows(p.gemm[1], rows, dz, z_[row0 * b_], aAll_[row0 * b_], writer, b_, act_, gQ_, zQ_, z32, g32, s0,
                s1);
    GmWriteFence();
    // dt = dz Ldr^T   (Ldr [R, B])
    mmRank_.SetOrgShape(m_, r_, b_, b_);
    mmRank_.SetTensorA(dz, false);
    mmRank_.SetTensorB(ldr_, true);
    mmRank_.SetTail(ch.mLen, r_, b_);
    IterateAllAndEnd(mmRank_, dt);
    // dh = dt Ldl^T on the block columns (rows n0.. of Ldl [D, R]), then dh += dy
    const uint64_t off = row0 * d_ + ch.n0;
    mmWide_.SetOrgShape(m_, d_, r_, r_);
    mmWide_.SetTensorA(dt, false);
    mmWide_.SetTensorB(ldl_[static_cast<uint64_t>(ch.n0) * r_], true);
    mmWide_.SetTail(ch.mLen, ch.nLen, r_);
    IterateAllAndEnd(mmWide_, dh_[off]);
    const mt::Range2D cols = {0, ch.mLen, 0, ch.nLen};
    AddResidual(p.gemm[3], cols, dh_[off], dy_[off], d_, cQ_, rQ_, oQ_);
  }

  TPipe pipe_;
  MmToGm<T> mmRank_, mmWide_, mmGradN_, mmGradM_;
  InQue gQ_, zQ_, cQ_, rQ_;
  OutQue oQ_;
  TBuf<TPosition::VECCALC> f32a_, f32b_;
  GlobalTensor<T> dy_, h_, ldl_, ldr_, lul_, lur_, t_, z_, q_, dh_, dldl_, dldr_, dbd_, dlul_, dlur_, dbu_;
  GlobalTensor<T> dqAll_, dtAll_, dzAll_, aAll_, dqMine_, dzMine_, dtMine_;
  uint32_t m_ = 0, d_ = 0, r_ = 0, b_ = 0;
  int32_t act_ = 0;
};

extern "C" __global__ __aicore__ void mindpet_low_rank_adapter_grad(
    GM_ADDR dy, GM_ADDR h, GM_ADDR ldl, GM_ADDR ldr, GM_ADDR lul, GM_ADDR lur, GM_ADDR t, GM_ADDR z, GM_ADDR q,
    GM_ADDR dh, GM_ADDR dldl, GM_ADDR dldr, GM_ADDR dbd, GM_ADDR dlul, GM_ADDR dlur, GM_ADDR dbu, GM_ADDR workspace,
    GM_ADDR tiling) {
  KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
  REGISTER_TILING_DEFAULT(MindpetLowRankAdapterGradTilingData);
  GET_TILING_DATA(td, tiling);
  GM_ADDR ws = GetUserWorkspace(workspace);
  if constexpr (IsSameType<DTYPE_DY, half>::value) {
    LowRankAdapterBackward<half> op;
    op.Run(dy, h, ldl, ldr, lul, lur, t, z, q, dh, dldl, dldr, dbd, dlul, dlur, dbu, ws, td);
  } else {
    LowRankAdapterBackward<float> op;
    op.Run(dy, h, ldl, ldr, lul, lur, t, z, q, dh, dldl, dldr, dbd, dlul, dlur, dbu, ws, td);
  }
}
