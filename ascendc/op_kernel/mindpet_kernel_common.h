// Building blocks shared by the mindpet Ascend C kernels: matmul object types, GM<->UB row copies,
// float32 activations and their derivatives (activation codes of ops/CONTRACTS.md), column sums,
// and the workspace layout of a fused stage. All index arithmetic comes from mindpet/tiling_types.h.
// UNCOMPILED HERE: written against the public Ascend C API documentation (see ascendc/README.md).
#ifndef MINDPET_ASCENDC_KERNEL_COMMON_H
#define MINDPET_ASCENDC_KERNEL_COMMON_H
#include "kernel_operator.h"
#include "lib/matmul_intf.h"
#include "mindpet/tiling_types.h"

namespace mindpet_kernel {
using namespace AscendC;  // NOLINT
namespace mt = mindpet::tiling;

// A, B, bias from GM (transposition chosen at SetTensorA/B time); C to GM or to the vector core.
template <typename T>
using MmToGm = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T>>;
template <typename T>
using MmToUb = Matmul<MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T, true>,
                      MatmulType<TPosition::VECIN, CubeFormat::ND, T>,
                      MatmulType<TPosition::GM, CubeFormat::ND, T>>;

constexpr uint32_t kBlockBytes = 32;

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
__aicore__ inline void GmWriteFence() { PipeBarrier<PIPE_ALL>(); }

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
    Cast(dst, src, RoundMode::CAST_ROUND, n);
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

// y = act(z); z is kept, tmp is scratch.
__aicore__ inline void ActForward(const LocalTensor<float>& y, const LocalTensor<float>& z,
                                  const LocalTensor<float>& tmp, uint32_t n, int32_t act) {
  switch (act) {
    case kRelu: Relu(y, z, n); break;
    case kGelu:  // z * sigmoid(2c (z + k z^3))
      Mul(tmp, z, z, n); Muls(tmp, tmp, kGeluK, n); Adds(tmp, tmp, 1.0f, n); Mul(tmp, tmp, z, n);
      SigmoidOf(tmp, tmp, 2.0f * kGeluC, n); Mul(y, z, tmp, n); break;
    case kGeluErf:  // 0.5 z (1 + erf(z / sqrt 2))
      Muls(tmp, z, kInvSqrt2, n); Erf(tmp, tmp, n); Adds(tmp, tmp, 1.0f, n); Muls(tmp, tmp, 0.5f, n);
      Mul(y, z, tmp, n); break;
    case kSigmoid: SigmoidOf(y, z, 1.0f, n); break;
    case kTanh: SigmoidOf(y, z, 2.0f, n); Muls(y, y, 2.0f, n); Adds(y, y, -1.0f, n); break;
    case kSilu: SigmoidOf(tmp, z, 1.0f, n); Mul(y, z, tmp, n); break;
    default: Adds(y, z, 0.0f, n); break;
  }
}

// g = g * act'(z); z is kept, t0 and t1 are scratch.
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
      Muls(t0, z, kInvSqrt2, n); Erf(t0, t0, n); Adds(t0, t0, 1.0f, n); Muls(t0, t0, 0.5f, n);
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
// B stored [k, n], the reduction runs over all k = M rows.
template <typename T>
__aicore__ inline void WeightGrad(MmToGm<T>& mm, const mt::GemmPlan& plan, uint32_t core,
                                  const GlobalTensor<T>& aT, const GlobalTensor<T>& b,
                                  const GlobalTensor<T>& c) {
  const mt::Range2D blk = mt::GridBlock(plan.grid, core);
  if (blk.mLen == 0) return;
  mm.SetTensorA(aT[blk.m0], true);
  mm.SetTensorB(b[blk.n0], false);
  mm.SetTail(blk.mLen, blk.nLen, plan.base.k);
  mm.IterateAll(c[static_cast<uint64_t>(blk.m0) * plan.grid.n + blk.n0]);
}

// out[cols of core] = sum over rows of in[rows, cols] (float32 accumulation).
template <typename T>
__aicore__ inline void ColumnSum(TPipe& pipe, const mt::ColumnSumPlan& p, uint32_t core,
                                 const GlobalTensor<T>& in, const GlobalTensor<T>& out) {
  const mt::Range2D r = mt::ColumnRange(p, core);
  if (r.nLen == 0) return;
  const uint32_t ubRowT = UbRowElems<T>(p.tileCols), ubRowF = UbRowElems<float>(p.tileCols);
  TQue<TPosition::VECIN, 2> inQ;
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
    SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
    WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
    RowsToGm(out[c0], o, 1, cols, ubRowT, cols);
    SetFlag<HardEvent::MTE3_V>(EVENT_ID0);
    WaitFlag<HardEvent::MTE3_V>(EVENT_ID0);
  }
}

// Byte offset of the private workspace region of `core` in a fused stage.
__aicore__ inline uint64_t PrivateRegion(const mt::FusedPlan& p, uint64_t globalBytes, uint32_t core,
                                         uint64_t perCoreRowBytes) {
  return globalBytes + static_cast<uint64_t>(core) * p.chunkM * perCoreRowBytes;
}

}  // namespace mindpet_kernel

#endif  // MINDPET_ASCENDC_KERNEL_COMMON_H
