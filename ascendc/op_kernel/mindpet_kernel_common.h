// Building blocks shared by the mindpet Ascend C kernels: matmul object types, GM<->UB row copies,
// float32 activations and their derivatives (activation codes of ops/CONTRACTS.md), column sums,
// and the workspace layout of a fused stage. All index arithmetic comes from mindpet/tiling_types.h.
// Type-checked against the public CANN API headers; never built by the Ascend compiler nor run on an
// NPU (see ascendc/README.md).
#ifndef MINDPET_ASCENDC_KERNEL_COMMON_H
#define MINDPET_ASCENDC_KERNEL_COMMON_H
#include "kernel_operator.h"
#include "lib/matmul_intf.h"
#include "mindpet/tiling_types.h"

namespace mindpet_kernel {
using namespace AscendC;  // NOLINT
namespace mt = mindpet::tiling;

// A, B, bias from GM (transposition chosen at SetTensorA/B time); C to GM. Every kernel uses this
// one type (no C to UB: see the GM-staged row passes below), and op_host builds every TCubeTiling
// with SetCType(GM) (GemmIo.cToUb = false).
template <typename T>
using MmToGm = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T>>;

constexpr uint32_t kBlockBytes = 32;

// Every queue is allocated, enqueued, dequeued and freed before its next allocation: depth 1 (the
// TQue reference recommends 1 unless a queue is enqueued twice in a row). InitBuffer's buffer
// count (2) still double-buffers.
using InQue = TQue<TPosition::VECIN, 1>;
using OutQue = TQue<TPosition::VECOUT, 1>;

// Runs the gemm the object was set up for, C to GM, then ends it: End() must be called when
// switching between Matmul objects (End reference; the multi-object samples call it after each
// IterateAll), and every kernel switches objects inside a chunk.
template <typename T>
__aicore__ inline void IterateAllAndEnd(MmToGm<T>& mm, const GlobalTensor<T>& c, uint8_t enAtomic = 0) {
  mm.IterateAll(c, enAtomic);
  mm.End();
}

template <typename T>
__aicore__ inline uint32_t UbRowElems(uint32_t cols) {
  return mt::AlignUp(cols * sizeof(T), kBlockBytes) / sizeof(T);
}

// rows x cols from UB (row stride ubRow elements, 32-byte aligned) to GM (row stride gmRow).
template <typename T>
__aicore__ inline void RowsToGm(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t rows,
                                uint32_t cols, uint32_t ubRow, uint32_t gmRow) {
  const uint32_t used = mt::AlignUp(cols * sizeof(T), kBlockBytes);
  DataCopyExtParams p{static_cast<uint16_t>(rows), static_cast<uint32_t>(cols * sizeof(T)),
                      static_cast<uint32_t>((ubRow * sizeof(T) - used) / kBlockBytes),
                      static_cast<uint32_t>((gmRow - cols) * sizeof(T)), 0};
  DataCopyPad(dst, src, p);
}

// rows x cols from GM (row stride gmRow) to UB (row stride ubRow elements).
template <typename T>
__aicore__ inline void RowsFromGm(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t rows,
                                  uint32_t cols, uint32_t ubRow, uint32_t gmRow) {
  const uint32_t used = mt::AlignUp(cols * sizeof(T), kBlockBytes);
  DataCopyExtParams p{static_cast<uint16_t>(rows), static_cast<uint32_t>(cols * sizeof(T)),
                      static_cast<uint32_t>((gmRow - cols) * sizeof(T)),
                      static_cast<uint32_t>((ubRow * sizeof(T) - used) / kBlockBytes), 0};
  DataCopyPadExtParams<T> pad{false, 0, 0, static_cast<T>(0)};
  DataCopyPad(dst, src, p, pad);
}

// Make every MTE3 write of this vector core visible before the cube reads it back from GM.
// (SyncAll needs none before it: its implementation starts with PipeBarrier<PIPE_ALL>.)
__aicore__ inline void GmWriteFence() { PipeBarrier<PIPE_ALL>(); }

// Pipe `dst` waits for what pipe `src` has issued (HardEvent src_dst). The id comes from the pipe
// (FetchEventID, for an adjacent set/wait pair), never a literal: a literal id can collide with the
// ids the TQue framework holds (SetFlag/WaitFlag constraints of the Ascend C API reference).
template <HardEvent E>
__aicore__ inline void PipeWait() {
  const TEventID id = GetTPipePtr()->FetchEventID(E);
  SetFlag<E>(id);
  WaitFlag<E>(id);
}

// ---- float32 <-> T ----------------------------------------------------------------------------
template <typename T>
__aicore__ inline void ToFloat(const LocalTensor<float>& dst, const LocalTensor<T>& src, uint32_t n) {
  if constexpr (IsSameType<T, float>::value) {
    Adds(dst, src, 0.0f, n);
  } else {
    Cast(dst, src, RoundMode::CAST_NONE, n);
  }
}

template <typename T>
__aicore__ inline void FromFloat(const LocalTensor<T>& dst, const LocalTensor<float>& src, uint32_t n) {
  if constexpr (IsSameType<T, float>::value) {
    Adds(dst, src, 0.0f, n);
  } else {
    Cast(dst, src, RoundMode::CAST_RINT, n);  // round half to even, as the composed reference
  }
}

// ---- activations (codes of ops/CONTRACTS.md) ---------------------------------------------------
enum Act : int32_t { kIdentity = 0, kRelu = 1, kGelu = 2, kGeluErf = 3, kSigmoid = 4, kTanh = 5, kSilu = 6 };
constexpr float kGeluC = 0.7978845608028654f;   // sqrt(2 / pi)
constexpr float kGeluK = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

// s = sigmoid(a x)
__aicore__ inline void SigmoidOf(const LocalTensor<float>& s, const LocalTensor<float>& x, float a, uint32_t n) {
  Muls(s, x, -a, n);
  Exp(s, s, n);
  Adds(s, s, 1.0f, n);
  Reciprocal(s, s, n);
}

// y = act(z); z is kept, tmp is scratch. y, z and tmp must be three distinct boxes: Erf (GELU erf)
// forbids overlapping source and destination (Erf reference), and it reads tmp while writing y.
__aicore__ inline void ActForward(const LocalTensor<float>& y, const LocalTensor<float>& z,
                                  const LocalTensor<float>& tmp, uint32_t n, int32_t act) {
  switch (act) {
    case kRelu: Relu(y, z, n); break;
    case kGelu:  // z * sigmoid(2c (z + k z^3))
      Mul(tmp, z, z, n); Muls(tmp, tmp, kGeluK, n); Adds(tmp, tmp, 1.0f, n); Mul(tmp, tmp, z, n);
      SigmoidOf(tmp, tmp, 2.0f * kGeluC, n); Mul(y, z, tmp, n); break;
    case kGeluErf:  // 0.5 z (1 + erf(z / sqrt 2))
      Muls(tmp, z, kInvSqrt2, n); Erf(y, tmp, n); Adds(y, y, 1.0f, n); Muls(y, y, 0.5f, n);
      Mul(y, y, z, n); break;
    case kSigmoid: SigmoidOf(y, z, 1.0f, n); break;
    case kTanh: SigmoidOf(y, z, 2.0f, n); Muls(y, y, 2.0f, n); Adds(y, y, -1.0f, n); break;
    case kSilu: SigmoidOf(tmp, z, 1.0f, n); Mul(y, z, tmp, n); break;
    default: Adds(y, z, 0.0f, n); break;
  }
}

// g = g * act'(z); z is kept, t0 and t1 are scratch (g, z, t0, t1 distinct boxes).
__aicore__ inline void ActBackward(const LocalTensor<float>& g, const LocalTensor<float>& z,
                                   const LocalTensor<float>& t0, const LocalTensor<float>& t1,
                                   uint32_t n, int32_t act) {
  switch (act) {
    case kRelu:  // 1 where z > 0, 0 where z <= 0
      Sign(t0, z, n); Relu(t0, t0, n); break;
    case kGelu: {  // 0.5 (1 + th) (1 + c z (1 + 3k z^2) (1 - th)),  th = tanh(c (z + k z^3))
      Mul(t0, z, z, n);
      Muls(t1, t0, kGeluK, n); Adds(t1, t1, 1.0f, n); Mul(t1, t1, z, n);
      SigmoidOf(t1, t1, 2.0f * kGeluC, n); Muls(t1, t1, 2.0f, n); Adds(t1, t1, -1.0f, n);  // th
      Muls(t0, t0, 3.0f * kGeluK, n); Adds(t0, t0, 1.0f, n); Mul(t0, t0, z, n); Muls(t0, t0, kGeluC, n);
      Muls(t1, t1, -1.0f, n); Adds(t1, t1, 1.0f, n);  // 1 - th
      Mul(t0, t0, t1, n); Adds(t0, t0, 1.0f, n);
      Muls(t1, t1, -1.0f, n); Adds(t1, t1, 2.0f, n);  // 1 + th
      Mul(t0, t0, t1, n); Muls(t0, t0, 0.5f, n); break;
    }
    case kGeluErf:  // Phi(z) + z phi(z)
      Muls(t1, z, kInvSqrt2, n); Erf(t0, t1, n); Adds(t0, t0, 1.0f, n); Muls(t0, t0, 0.5f, n);
      Mul(t1, z, z, n); Muls(t1, t1, -0.5f, n); Exp(t1, t1, n); Muls(t1, t1, kInvSqrt2Pi, n);
      Mul(t1, t1, z, n); Add(t0, t0, t1, n); break;
    case kSigmoid:  // s (1 - s)
      SigmoidOf(t0, z, 1.0f, n); Muls(t1, t0, -1.0f, n); Adds(t1, t1, 1.0f, n); Mul(t0, t0, t1, n); break;
    case kTanh:  // 1 - tanh^2
      SigmoidOf(t0, z, 2.0f, n); Muls(t0, t0, 2.0f, n); Adds(t0, t0, -1.0f, n);
      Mul(t0, t0, t0, n); Muls(t0, t0, -1.0f, n); Adds(t0, t0, 1.0f, n); break;
    case kSilu:  // s (1 + z (1 - s))
      SigmoidOf(t0, z, 1.0f, n); Muls(t1, t0, -1.0f, n); Adds(t1, t1, 1.0f, n); Mul(t1, t1, z, n);
      Adds(t1, t1, 1.0f, n); Mul(t0, t0, t1, n); break;
    default: return;  // identity: act' = 1
  }
  Mul(g, g, t0, n);
}

// ---- weight gradients and bias gradients (stage 2 of the backward kernels) ----------------------

// C[block] = A^T B for the block of `core` of a GemmPlan: A stored [k, m] (read transposed),
// B stored [k, n], the reduction runs over all k = M rows. `setOrgShape`: the object serves several
// plans (mindpet::tiling::ShareGemmObject), so this plan's leading dimensions are set first.
template <typename T>
__aicore__ inline void WeightGrad(MmToGm<T>& mm, const mt::GemmPlan& plan, uint32_t core,
                                  const GlobalTensor<T>& aT, const GlobalTensor<T>& b,
                                  const GlobalTensor<T>& c, bool setOrgShape = false) {
  const mt::Range2D blk = mt::GridBlock(plan.grid, core);
  if (blk.mLen == 0) return;
  if (setOrgShape) mm.SetOrgShape(plan.grid.m, plan.grid.n, plan.base.k);
  mm.SetTensorA(aT[blk.m0], true);
  mm.SetTensorB(b[blk.n0], false);
  mm.SetTail(blk.mLen, blk.nLen, plan.base.k);
  IterateAllAndEnd(mm, c[static_cast<uint64_t>(blk.m0) * plan.grid.n + blk.n0]);
}

// out[cols of core] = sum over rows of in[rows, cols] (float32 accumulation). Its UB comes from
// `pipe` (plan.ubBytes is planned against the whole UB): call it on a pipe that holds no other
// buffer (TPipe::Reset() after the fused stage, and between two calls).
template <typename T>
__aicore__ inline void ColumnSum(TPipe& pipe, const mt::ColumnSumPlan& p, uint32_t core,
                                 const GlobalTensor<T>& in, const GlobalTensor<T>& out) {
  const mt::Range2D r = mt::ColumnRange(p, core);
  if (r.nLen == 0) return;
  const uint32_t ubRowT = UbRowElems<T>(p.tileCols), ubRowF = UbRowElems<float>(p.tileCols);
  InQue inQ;
  TBuf<TPosition::VECCALC> accBuf, f32Buf, outBuf;
  pipe.InitBuffer(inQ, 2, p.tileRows * ubRowT * sizeof(T));
  pipe.InitBuffer(accBuf, ubRowF * sizeof(float));
  pipe.InitBuffer(f32Buf, (IsSameType<T, float>::value ? 1 : p.tileRows) * ubRowF * sizeof(float));
  pipe.InitBuffer(outBuf, ubRowT * sizeof(T));
  LocalTensor<float> acc = accBuf.Get<float>();
  LocalTensor<float> f32 = f32Buf.Get<float>();
  LocalTensor<T> o = outBuf.Get<T>();
  for (uint32_t c0 = r.n0; c0 < r.n0 + r.nLen; c0 += p.tileCols) {
    const uint32_t cols = mt::MinU32(p.tileCols, r.n0 + r.nLen - c0);
    Duplicate(acc, 0.0f, ubRowF);
    for (uint32_t r0 = 0; r0 < p.rows; r0 += p.tileRows) {
      const uint32_t rows = mt::MinU32(p.tileRows, p.rows - r0);
      LocalTensor<T> t = inQ.AllocTensor<T>();
      RowsFromGm(t, in[static_cast<uint64_t>(r0) * p.cols + c0], rows, cols, ubRowT, p.cols);
      inQ.EnQue(t);
      t = inQ.DeQue<T>();
      for (uint32_t i = 0; i < rows; ++i) {
        if constexpr (IsSameType<T, float>::value) {
          Add(acc, acc, t[i * ubRowT], cols);
        } else {
          Cast(f32[i * ubRowF], t[i * ubRowT], RoundMode::CAST_NONE, cols);
          Add(acc, acc, f32[i * ubRowF], cols);
        }
      }
      inQ.FreeTensor(t);
    }
    FromFloat(o, acc, ubRowF);
    PipeWait<HardEvent::V_MTE3>();
    RowsToGm(out[c0], o, 1, cols, ubRowT, cols);
    PipeWait<HardEvent::MTE3_V>();
  }
}

// ---- GM-staged row passes (every kernel) ----------------------------------------------------------
// Those kernels let every matmul write C to GM with IterateAll (ND, leading dimension from the org
// shape) and read it back with DataCopyPad: Matmul's GetTensorC to UB with enSequentialWrite packs
// a tail tile with the row stride of its own width (CopyOutNZ2ND uses the tile's baseWidth), which
// the 32-byte-aligned row copies cannot address. The passes below walk an `area` (relative to the
// GlobalTensors they get) in boxes of baseM x baseN of a planned gemm base: the UB buffers of the
// plan are sized for one such box, a box row is padded to baseN elements in UB.

// out[area] += res[area] (leading dimension ld of both). Queues: the plan's residual epilogue.
template <typename T>
__aicore__ inline void AddResidual(const mt::GemmBase& box, const mt::Range2D& area, const GlobalTensor<T>& out,
                                   const GlobalTensor<T>& res, uint32_t ld, InQue& cQ,
                                   InQue& rQ, OutQue& oQ) {
  for (uint32_t t = 0; t < mt::TileCount(box, area); ++t) {
    const mt::Range2D b = mt::TileOf(box, area, t);
    const uint64_t off = static_cast<uint64_t>(b.m0) * ld + b.n0;
    LocalTensor<T> ct = cQ.AllocTensor<T>();
    LocalTensor<T> rt = rQ.AllocTensor<T>();
    RowsFromGm(ct, out[off], b.mLen, b.nLen, box.baseN, ld);
    RowsFromGm(rt, res[off], b.mLen, b.nLen, box.baseN, ld);
    cQ.EnQue(ct);
    rQ.EnQue(rt);
    ct = cQ.DeQue<T>();
    rt = rQ.DeQue<T>();
    LocalTensor<T> ot = oQ.AllocTensor<T>();
    Add(ot, ct, rt, b.mLen * box.baseN);
    oQ.EnQue(ot);
    cQ.FreeTensor(ct);
    rQ.FreeTensor(rt);
    ot = oQ.DeQue<T>();
    RowsToGm(out[off], ot, b.mLen, b.nLen, box.baseN, ld);
    oQ.FreeTensor(ot);
  }
}

// out[area] *= other[area] (leading dimension ld of both): the dropout mask of the lora backward.
// Queues: the plan's three boxes of the gemm that wrote `out`.
template <typename T>
__aicore__ inline void MultiplyRows(const mt::GemmBase& box, const mt::Range2D& area, const GlobalTensor<T>& out,
                                    const GlobalTensor<T>& other, uint32_t ld, InQue& cQ,
                                    InQue& mQ, OutQue& oQ) {
  for (uint32_t t = 0; t < mt::TileCount(box, area); ++t) {
    const mt::Range2D b = mt::TileOf(box, area, t);
    const uint64_t off = static_cast<uint64_t>(b.m0) * ld + b.n0;
    LocalTensor<T> ct = cQ.AllocTensor<T>();
    LocalTensor<T> mt_ = mQ.AllocTensor<T>();
    RowsFromGm(ct, out[off], b.mLen, b.nLen, box.baseN, ld);
    RowsFromGm(mt_, other[off], b.mLen, b.nLen, box.baseN, ld);
    cQ.EnQue(ct);
    mQ.EnQue(mt_);
    ct = cQ.DeQue<T>();
    mt_ = mQ.DeQue<T>();
    LocalTensor<T> ot = oQ.AllocTensor<T>();
    Mul(ot, ct, mt_, b.mLen * box.baseN);
    oQ.EnQue(ot);
    cQ.FreeTensor(ct);
    mQ.FreeTensor(mt_);
    ot = oQ.DeQue<T>();
    RowsToGm(out[off], ot, b.mLen, b.nLen, box.baseN, ld);
    oQ.FreeTensor(ot);
  }
}

// dst[area] = scale * src[area] (leading dimension ld); src and dst may be the same region (each
// box is read before it is written). The lora kernels scale u and g this way (s u, s g operands).
template <typename T>
__aicore__ inline void ScaleRows(const mt::GemmBase& box, const mt::Range2D& area, const GlobalTensor<T>& src,
                                 const GlobalTensor<T>& dst, uint32_t ld, float scale, InQue& q) {
  for (uint32_t t = 0; t < mt::TileCount(box, area); ++t) {
    const mt::Range2D b = mt::TileOf(box, area, t);
    const uint64_t off = static_cast<uint64_t>(b.m0) * ld + b.n0;
    LocalTensor<T> bt = q.AllocTensor<T>();
    RowsFromGm(bt, src[off], b.mLen, b.nLen, box.baseN, ld);
    q.EnQue(bt);
    bt = q.DeQue<T>();
    Muls(bt, bt, static_cast<T>(scale), b.mLen * box.baseN);
    PipeWait<HardEvent::V_MTE3>();
    RowsToGm(dst[off], bt, b.mLen, b.nLen, box.baseN, ld);
    PipeWait<HardEvent::MTE3_MTE2>();  // the box buffer is refilled by MTE2 next
    q.FreeTensor(bt);
  }
}

// dst[0, len) = a[0, len) * b[0, len), flat, in tiles of `tile` elements (the plan's elemTile):
// x_d = x * mask of the lora kernels. Queues: the plan's three element tiles.
template <typename T>
__aicore__ inline void MultiplyFlat(const GlobalTensor<T>& dst, const GlobalTensor<T>& a, const GlobalTensor<T>& b,
                                    uint64_t len, uint32_t tile, InQue& aQ,
                                    InQue& bQ, OutQue& oQ) {
  for (uint64_t i = 0; i < len; i += tile) {
    const uint32_t n = static_cast<uint32_t>(len - i < tile ? len - i : tile);
    LocalTensor<T> at = aQ.AllocTensor<T>();
    LocalTensor<T> bt = bQ.AllocTensor<T>();
    RowsFromGm(at, a[i], 1, n, tile, n);
    RowsFromGm(bt, b[i], 1, n, tile, n);
    aQ.EnQue(at);
    bQ.EnQue(bt);
    at = aQ.DeQue<T>();
    bt = bQ.DeQue<T>();
    LocalTensor<T> ot = oQ.AllocTensor<T>();
    Mul(ot, at, bt, n);
    oQ.EnQue(ot);
    aQ.FreeTensor(at);
    bQ.FreeTensor(bt);
    ot = oQ.DeQue<T>();
    RowsToGm(dst[i], ot, 1, n, tile, n);
    oQ.FreeTensor(ot);
  }
}

// dst[area] = act(src[area]) in float32 (leading dimension ld); src and dst may be the same region
// (each box is read before it is written). z32, tmp, y32: three distinct float32 boxes (ActForward).
template <typename T>
__aicore__ inline void ActivateRows(const mt::GemmBase& box, const mt::Range2D& area, const GlobalTensor<T>& src,
                                    const GlobalTensor<T>& dst, uint32_t ld, int32_t act,
                                    InQue& zQ, const LocalTensor<float>& z32, const LocalTensor<float>& tmp,
                                    const LocalTensor<float>& y32) {
  for (uint32_t t = 0; t < mt::TileCount(box, area); ++t) {
    const mt::Range2D b = mt::TileOf(box, area, t);
    const uint64_t off = static_cast<uint64_t>(b.m0) * ld + b.n0;
    const uint32_t n = b.mLen * box.baseN;
    LocalTensor<T> zt = zQ.AllocTensor<T>();
    RowsFromGm(zt, src[off], b.mLen, b.nLen, box.baseN, ld);
    zQ.EnQue(zt);
    zt = zQ.DeQue<T>();
    ToFloat(z32, zt, n);
    ActForward(y32, z32, tmp, n, act);
    FromFloat(zt, y32, n);
    PipeWait<HardEvent::V_MTE3>();
    RowsToGm(dst[off], zt, b.mLen, b.nLen, box.baseN, ld);
    PipeWait<HardEvent::MTE3_MTE2>();  // the box buffer is refilled by MTE2 next
    zQ.FreeTensor(zt);
  }
}

// The activation backward of the adapters (leading dimension ld), box by box:
//   g[area]: in dL/da, out dz = g * act'(z) (in place);  aOut[area] = act(z) when writeA.
// f32: four float32 boxes (z, g, two scratch). Mirrors the dz loop of ops/cpu adapter.cc /
// low_rank_adapter.cc (Activate / ActivateGrad of ops/cpu/activation.h).
template <typename T>
__aicore__ inline void ActGradRows(const mt::GemmBase& box, const mt::Range2D& area, const GlobalTensor<T>& g,
                                   const GlobalTensor<T>& z, const GlobalTensor<T>& aOut, bool writeA, uint32_t ld,
                                   int32_t act, InQue& gQ, InQue& zQ,
                                   const LocalTensor<float>& z32, const LocalTensor<float>& g32,
                                   const LocalTensor<float>& s0, const LocalTensor<float>& s1) {
  for (uint32_t t = 0; t < mt::TileCount(box, area); ++t) {
    const mt::Range2D b = mt::TileOf(box, area, t);
    const uint64_t off = static_cast<uint64_t>(b.m0) * ld + b.n0;
    const uint32_t n = b.mLen * box.baseN;
    LocalTensor<T> gt = gQ.AllocTensor<T>();
    LocalTensor<T> zt = zQ.AllocTensor<T>();
    RowsFromGm(gt, g[off], b.mLen, b.nLen, box.baseN, ld);
    RowsFromGm(zt, z[off], b.mLen, b.nLen, box.baseN, ld);
    gQ.EnQue(gt);
    zQ.EnQue(zt);
    gt = gQ.DeQue<T>();
    zt = zQ.DeQue<T>();
    ToFloat(z32, zt, n);
    ToFloat(g32, gt, n);
    if (writeA) {
      ActForward(s0, z32, s1, n, act);
      FromFloat(zt, s0, n);
      PipeWait<HardEvent::V_MTE3>();
      RowsToGm(aOut[off], zt, b.mLen, b.nLen, box.baseN, ld);
    }
    ActBackward(g32, z32, s0, s1, n, act);
    FromFloat(gt, g32, n);
    PipeWait<HardEvent::V_MTE3>();
    RowsToGm(g[off], gt, b.mLen, b.nLen, box.baseN, ld);
    PipeWait<HardEvent::MTE3_MTE2>();  // both box buffers are refilled by MTE2 next
    gQ.FreeTensor(gt);
    zQ.FreeTensor(zt);
  }
}

// Byte offset of the private workspace of `core` in a fused stage: after the whole-stage regions
// (globalBytes), perCoreBytes per core. Both are sums of mt::WsRegion (512-byte aligned regions),
// the layout the planner sized plan.workspaceBytes for.
__aicore__ inline uint64_t PrivateRegion(uint64_t globalBytes, uint32_t core, uint64_t perCoreBytes) {
  return globalBytes + static_cast<uint64_t>(core) * perCoreBytes;
}

}  // namespace mindpet_kernel

#endif  // MINDPET_ASCENDC_KERNEL_COMMON_H
