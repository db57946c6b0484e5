// The fused-op contracts of mindpet (see ops/CONTRACTS.md, the human-readable twin of this file).
//
// Pure C++17, no dependencies: included by the CPU kernels (ops/cpu), the Ascend host code and tiling
// (ascendc/, ops/tiling). Tensor positions are the positions of the ops.Custom call: tensors first,
// then the attributes as trailing scalar inputs; outputs follow the inputs in the aot `params` array.
#pragma once
#include <cstdint>

namespace mindpet {
namespace contracts {

// ---------------------------------------------------------------------------------------------
// Activation codes (attribute `activation` of adapter, low_rank_adapter and activation).
// ---------------------------------------------------------------------------------------------
enum class Activation : int64_t {
  kIdentity = 0,  // z
  kRelu = 1,      // max(z, 0); derivative 0 at z = 0
  kGelu = 2,      // 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))  (ops.GeLU, nn.GELU())
  kGeluErf = 3,   // 0.5 z (1 + erf(z / sqrt(2)))                      (nn.GELU(approximate=False))
  kSigmoid = 4,   // 1 / (1 + exp(-z))
  kTanh = 5,      // tanh(z)
  kSilu = 6,      // z sigmoid(z)
};
constexpr int64_t kNumActivations = 7;

// ---------------------------------------------------------------------------------------------
// 1. lora_linear:  y = x W^T + b + s (x_d A^T) B^T,  x_d = x * mask,  s = alpha / rank.
//    M rows, K = in, N = out, R = rank.
// ---------------------------------------------------------------------------------------------
namespace lora_linear {
constexpr const char* kForwardSymbol = "LoraLinearForward";
constexpr const char* kBackwardSymbol = "LoraLinearBackward";

// Forward inputs.
enum FwdIn : int {
  kFwdX = 0,        // [M, K]
  kFwdWeight = 1,   // [N, K]  base W (normally frozen)
  kFwdBias = 2,     // [N] (or [1] when has_bias == 0)
  kFwdLoraA = 3,    // [R, K]
  kFwdLoraB = 4,    // [N, R]
  kFwdMask = 5,     // [M, K] (or [1] when has_mask == 0); values 0 or 1/(1-p); has_mask == 2: the
                    // dropout key int64 [3] (seed, offset, bits of float32 p), the mask generated (lora_mask.h)
  kFwdScale = 6,    // attr float: s
  kFwdHasBias = 7,  // attr int 0/1
  kFwdHasMask = 8,  // attr int 0/1/2 (none, mask, dropout key)
  kFwdNumInputs = 9,
};
// Forward outputs (index into params = kFwdNumInputs + output).
enum FwdOut : int {
  kFwdY = 0,  // [M, N]  x W^T + b + s u B^T
  kFwdU = 1,  // [M, R]  x_d A^T (saved, unscaled)
  kFwdNumOutputs = 2,
};

// Backward inputs.
enum BwdIn : int {
  kBwdDy = 0,       // [M, N]
  kBwdX = 1,        // [M, K]
  kBwdWeight = 2,   // [N, K]
  kBwdLoraA = 3,    // [R, K]
  kBwdLoraB = 4,    // [N, R]
  kBwdU = 5,        // [M, R] saved
  kBwdMask = 6,     // [M, K], [1] or the dropout key [3]
  kBwdScale = 7,    // attr float
  kBwdHasMask = 8,  // attr int 0/1/2
  kBwdNumInputs = 9,
};
// Backward outputs:
//   g = dy B;  dB = s dy^T u;  dA = s g^T x_d;  dx = dy W + s (g A) * mask.
enum BwdOut : int {
  kBwdDx = 0,     // [M, K]
  kBwdDLoraA = 1, // [R, K]
  kBwdDLoraB = 2, // [N, R]
  kBwdNumOutputs = 3,
};

// The backward split in two (CPU): the weight gradients, and the input gradient from g. A GRAPH
// whose loss needs no gradient of x drops the input op (dead code); the pair computes exactly what
// the one-pass backward does.
constexpr const char* kBackwardWeightsSymbol = "LoraLinearBackwardWeights";
constexpr const char* kBackwardInputSymbol = "LoraLinearBackwardInput";

// Weight-gradient inputs.
enum BwdWIn : int {
  kBwdWDy = 0,       // [M, N]
  kBwdWX = 1,        // [M, K]
  kBwdWLoraB = 2,    // [N, R]
  kBwdWU = 3,        // [M, R] saved
  kBwdWMask = 4,     // [M, K], [1] or the dropout key [3]
  kBwdWScale = 5,    // attr float
  kBwdWHasMask = 6,  // attr int 0/1/2
  kBwdWNumInputs = 7,
};
// Weight-gradient outputs:  g = dy B;  dA = s g^T x_d;  dB = s dy^T u.
enum BwdWOut : int {
  kBwdWDLoraA = 0,  // [R, K]
  kBwdWDLoraB = 1,  // [N, R]
  kBwdWG = 2,       // [M, R] float32 whatever T: dy B (unscaled), for the input op
  kBwdWNumOutputs = 3,
};

// Input-gradient inputs.
enum BwdXIn : int {
  kBwdXDy = 0,       // [M, N]
  kBwdXWeight = 1,   // [N, K]
  kBwdXLoraA = 2,    // [R, K]
  kBwdXG = 3,        // [M, R] float32, from the weight-gradient op
  kBwdXMask = 4,     // [M, K], [1] or the dropout key [3]
  kBwdXScale = 5,    // attr float
  kBwdXHasMask = 6,  // attr int 0/1/2
  kBwdXNumInputs = 7,
};
// Input-gradient output:  dx = dy W + s (g A) * mask.
enum BwdXOut : int {
  kBwdXDx = 0,  // [M, K]
  kBwdXNumOutputs = 1,
};
}  // namespace lora_linear

// ---------------------------------------------------------------------------------------------
// 2. adapter:  y = h + act(h Wd^T + bd) Wu^T + bu.   M rows, D = hidden, B = bottleneck.
// ---------------------------------------------------------------------------------------------
namespace adapter {
constexpr const char* kForwardSymbol = "AdapterForward";
constexpr const char* kBackwardSymbol = "AdapterBackward";

enum FwdIn : int {
  kFwdH = 0,           // [M, D]
  kFwdWDown = 1,       // [B, D]
  kFwdBDown = 2,       // [B]
  kFwdWUp = 3,         // [D, B]
  kFwdBUp = 4,         // [D]
  kFwdActivation = 5,  // attr int (Activation)
  kFwdNumInputs = 6,
};
enum FwdOut : int {
  kFwdY = 0,  // [M, D]
  kFwdZ = 1,  // [M, B]  h Wd^T + bd (saved pre-activation)
  kFwdNumOutputs = 2,
};

enum BwdIn : int {
  kBwdDy = 0,          // [M, D]
  kBwdH = 1,           // [M, D]
  kBwdWDown = 2,       // [B, D]
  kBwdWUp = 3,         // [D, B]
  kBwdZ = 4,           // [M, B] saved
  kBwdActivation = 5,  // attr int
  kBwdNumInputs = 6,
};
// a = act(z); dWu = dy^T a; dbu = sum dy; dz = (dy Wu) * act'(z); dWd = dz^T h; dbd = sum dz;
// dh = dy + dz Wd.
enum BwdOut : int {
  kBwdDh = 0,     // [M, D]
  kBwdDWDown = 1, // [B, D]
  kBwdDBDown = 2, // [B]
  kBwdDWUp = 3,   // [D, B]
  kBwdDBUp = 4,   // [D]
  kBwdNumOutputs = 5,
};
}  // namespace adapter

// ---------------------------------------------------------------------------------------------
// 3. low_rank_adapter:  Wdown = Ldl Ldr, Wup = Lul Lur (never materialised),
//    y = h + act(h Ldl Ldr + bd) Lul Lur + bu.   M rows, D = hidden, B = bottleneck, R = rank.
// ---------------------------------------------------------------------------------------------
namespace low_rank_adapter {
constexpr const char* kForwardSymbol = "LowRankAdapterForward";
constexpr const char* kBackwardSymbol = "LowRankAdapterBackward";

enum FwdIn : int {
  kFwdH = 0,           // [M, D]
  kFwdDownLeft = 1,    // [D, R]
  kFwdDownRight = 2,   // [R, B]
  kFwdBDown = 3,       // [B]
  kFwdUpLeft = 4,      // [B, R]
  kFwdUpRight = 5,     // [R, D]
  kFwdBUp = 6,         // [D]
  kFwdActivation = 7,  // attr int
  kFwdNumInputs = 8,
};
enum FwdOut : int {
  kFwdY = 0,  // [M, D]  h + q Lur + bu
  kFwdT = 1,  // [M, R]  h Ldl            (saved)
  kFwdZ = 2,  // [M, B]  t Ldr + bd       (saved)
  kFwdQ = 3,  // [M, R]  act(z) Lul       (saved)
  kFwdNumOutputs = 4,
};

enum BwdIn : int {
  kBwdDy = 0,          // [M, D]
  kBwdH = 1,           // [M, D]
  kBwdDownLeft = 2,    // [D, R]
  kBwdDownRight = 3,   // [R, B]
  kBwdUpLeft = 4,      // [B, R]
  kBwdUpRight = 5,     // [R, D]
  kBwdT = 6,           // [M, R]
  kBwdZ = 7,           // [M, B]
  kBwdQ = 8,           // [M, R]
  kBwdActivation = 9,  // attr int
  kBwdNumInputs = 10,
};
// a = act(z); dbu = sum dy; dLur = q^T dy; dq = dy Lur^T; dLul = a^T dq; dz = (dq Lul^T) * act'(z);
// dbd = sum dz; dLdr = t^T dz; dt = dz Ldr^T; dLdl = h^T dt; dh = dy + dt Ldl^T.
enum BwdOut : int {
  kBwdDh = 0,          // [M, D]
  kBwdDDownLeft = 1,   // [D, R]
  kBwdDDownRight = 2,  // [R, B]
  kBwdDBDown = 3,      // [B]
  kBwdDUpLeft = 4,     // [B, R]
  kBwdDUpRight = 5,    // [R, D]
  kBwdDBUp = 6,        // [D]
  kBwdNumOutputs = 7,
};
}  // namespace low_rank_adapter

// ---------------------------------------------------------------------------------------------
// 4. activation (elementwise):  y = act(x);  dx = dy * act'(x).   x of any shape, N = numel.
//    Composed on GPU and Ascend (no Ascend C kernel).
// ---------------------------------------------------------------------------------------------
namespace activation {
constexpr const char* kForwardSymbol = "ActivationForward";
constexpr const char* kBackwardSymbol = "ActivationBackward";

enum FwdIn : int {
  kFwdX = 0,           // [N] (any shape)
  kFwdActivation = 1,  // attr int (Activation)
  kFwdNumInputs = 2,
};
enum FwdOut : int {
  kFwdY = 0,  // shape of x: act(x)
  kFwdNumOutputs = 1,
};

enum BwdIn : int {
  kBwdDy = 0,          // shape of x
  kBwdX = 1,           // the forward input (act is recomputed from it)
  kBwdActivation = 2,  // attr int
  kBwdNumInputs = 3,
};
enum BwdOut : int {
  kBwdDx = 0,  // dy * act'(x)
  kBwdNumOutputs = 1,
};
}  // namespace activation

// ---------------------------------------------------------------------------------------------
// 5. layer_norm over the last dim, with an optional fused residual add:
//    s = x + r (or x);  mean = sum_D s / D;  var = sum_D (s - mean)^2 / D;  rstd = 1 / sqrt(var + eps);
//    y = (s - mean) * rstd * gamma + beta.   M rows, D = normalized size.
//    mean and rstd are float32 whatever T is. Composed on GPU and Ascend (no Ascend C kernel).
// ---------------------------------------------------------------------------------------------
namespace layer_norm {
constexpr const char* kForwardSymbol = "LayerNormForward";
constexpr const char* kBackwardSymbol = "LayerNormBackward";

enum FwdIn : int {
  kFwdX = 0,            // [M, D]
  kFwdResidual = 1,     // [M, D] (or [1] when has_residual == 0)
  kFwdGamma = 2,        // [D]
  kFwdBeta = 3,         // [D]
  kFwdEpsilon = 4,      // attr float
  kFwdHasResidual = 5,  // attr int 0/1
  kFwdNumInputs = 6,
};
enum FwdOut : int {
  kFwdY = 0,     // [M, D]
  kFwdMean = 1,  // [M] float32 (saved)
  kFwdRstd = 2,  // [M] float32 (saved)
  kFwdNumOutputs = 3,
};

enum BwdIn : int {
  kBwdDy = 0,           // [M, D]
  kBwdX = 1,            // [M, D]
  kBwdResidual = 2,     // [M, D] or [1]
  kBwdGamma = 3,        // [D]
  kBwdMean = 4,         // [M] float32 saved
  kBwdRstd = 5,         // [M] float32 saved
  kBwdHasResidual = 6,  // attr int 0/1
  kBwdNumInputs = 7,
};
// xhat = (s - mean) rstd; g = dy * gamma;
// dx = rstd (g - sum_D g / D - xhat sum_D (g xhat) / D)  (also the gradient of the residual);
// dgamma = sum_M dy xhat; dbeta = sum_M dy.
enum BwdOut : int {
  kBwdDx = 0,      // [M, D]
  kBwdDGamma = 1,  // [D]
  kBwdDBeta = 2,   // [D]
  kBwdNumOutputs = 3,
};
}  // namespace layer_norm

// ---------------------------------------------------------------------------------------------
// 6. quant_lora_linear:  y = x deq(W)^T + b + s (x_d A^T) B^T,  x_d = x * mask,  W [N, K] stored
//    quantised (codes, float16 scales and offsets per group of G consecutive k, a float32 lut for
//    4-bit codes; the layout of ops/CONTRACTS.md section 6). M rows, K = in, N = out, R = rank.
//    The weight gradients are lora_linear's kBackwardWeightsSymbol op (it needs no W); the input
//    gradient is its own op, so GRAPH mode drops it when x needs no gradient.
// ---------------------------------------------------------------------------------------------
namespace quant_lora_linear {
constexpr const char* kForwardSymbol = "QuantLoraLinearForward";
constexpr const char* kBackwardInputSymbol = "QuantLoraLinearBackwardInput";

// Forward inputs.
enum FwdIn : int {
  kFwdX = 0,            // [M, K]  T
  kFwdCodes = 1,        // int8 [N, K] (bits 8) / uint8 [N, K / 2] (bits 4: k even low nibble, k odd high)
  kFwdScales = 2,       // float16 [N, K / G]
  kFwdOffsets = 3,      // float16 [N, K / G] (or [1] when has_offsets == 0)
  kFwdLut = 4,          // float32 [16] (bits 4; [1] when bits == 8)
  kFwdBias = 5,         // [N] T (or [1] when has_bias == 0)
  kFwdLoraA = 6,        // [R, K] T (or [1] when has_lora == 0)
  kFwdLoraB = 7,        // [N, R] T (or [1] when has_lora == 0)
  kFwdMask = 8,         // [M, K] T (or [1] when has_mask == 0; the dropout key int64 [3] when 2)
  kFwdScale = 9,        // attr float: s
  kFwdGroupSize = 10,   // attr int: G (K % G == 0)
  kFwdBits = 11,        // attr int: 4 or 8
  kFwdHasOffsets = 12,  // attr int 0/1
  kFwdHasBias = 13,     // attr int 0/1
  kFwdHasLora = 14,     // attr int 0/1
  kFwdHasMask = 15,     // attr int 0/1/2 (none, mask, dropout key: lora_linear's modes)
  kFwdNumInputs = 16,
};
// Forward outputs (index into params = kFwdNumInputs + output).
enum FwdOut : int {
  kFwdY = 0,  // [M, N]  x deq(W)^T + b + s u B^T
  kFwdU = 1,  // [M, R]  x_d A^T (saved, unscaled); [M, 1] of zeros when has_lora == 0
  kFwdNumOutputs = 2,
};

// Input-gradient inputs.
enum BwdXIn : int {
  kBwdXDy = 0,           // [M, N]  T
  kBwdXX = 1,            // [*, K]  any dtype: its last dim is K (never read; the bprop passes [1, K])
  kBwdXCodes = 2,        // as kFwdCodes
  kBwdXScales = 3,       // as kFwdScales
  kBwdXOffsets = 4,      // as kFwdOffsets
  kBwdXLut = 5,          // as kFwdLut
  kBwdXLoraA = 6,        // [R, K] T (or [1] when has_lora == 0)
  kBwdXG = 7,            // [M, R] float32: dy B from lora_linear's weights op (or [1] when has_lora == 0)
  kBwdXMask = 8,         // [M, K] T (or [1], or the dropout key [3])
  kBwdXScale = 9,        // attr float
  kBwdXGroupSize = 10,   // attr int
  kBwdXBits = 11,        // attr int
  kBwdXHasOffsets = 12,  // attr int 0/1
  kBwdXHasLora = 13,     // attr int 0/1
  kBwdXHasMask = 14,     // attr int 0/1/2
  kBwdXNumInputs = 15,
};
// Input-gradient output:  dx = dy deq(W) + s (g A) * mask.
enum BwdXOut : int {
  kBwdXDx = 0,  // [M, K]
  kBwdXNumOutputs = 1,
};
}  // namespace quant_lora_linear
// 9. attention (the attention core), in the projections' row layout, no transposes:
//    q [B*L, NH*D], k and v [B*L, NKV*D], cos and sin [L, D] (rotary tables; they also give L and D);
//    query head h uses kv head h / (NH / NKV). qr, kr = rot(q), rot(k) (x cos + rotate_half(x) sin, or x
//    when rotary == 0); s = scale qr kr^T (+ causal mask); lse = logsumexp_j s; out = softmax(s) v.
//    lse is float32 whatever T is. Composed on GPU and Ascend (no Ascend C kernel).
// ---------------------------------------------------------------------------------------------
namespace attention {
constexpr const char* kForwardSymbol = "AttentionForward";
constexpr const char* kBackwardSymbol = "AttentionBackward";

enum FwdIn : int {
  kFwdQ = 0,           // [B*L, NH*D]
  kFwdK = 1,           // [B*L, NKV*D]
  kFwdV = 2,           // [B*L, NKV*D]
  kFwdCos = 3,         // [L, D]
  kFwdSin = 4,         // [L, D]
  kFwdNumHeads = 5,    // attr int NH
  kFwdNumKvHeads = 6,  // attr int NKV (divides NH)
  kFwdScale = 7,       // attr float
  kFwdCausal = 8,      // attr int 0/1: key j visible to query i only when j <= i
  kFwdRotary = 9,      // attr int 0/1: 0 -> cos/sin are not read (their shape still gives L and D)
  kFwdNumInputs = 10,
};
enum FwdOut : int {
  kFwdOut = 0,  // [B*L, NH*D]
  kFwdLse = 1,  // [B, NH, L] float32 (saved)
  kFwdNumOutputs = 2,
};

enum BwdIn : int {
  kBwdDout = 0,        // [B*L, NH*D]
  kBwdQ = 1,           // [B*L, NH*D]
  kBwdK = 2,           // [B*L, NKV*D]
  kBwdV = 3,           // [B*L, NKV*D]
  kBwdCos = 4,         // [L, D]
  kBwdSin = 5,         // [L, D]
  kBwdOut = 6,         // [B*L, NH*D] the forward output (saved)
  kBwdLse = 7,         // [B, NH, L] float32 (saved)
  kBwdNumHeads = 8,    // attr int
  kBwdNumKvHeads = 9,  // attr int
  kBwdScale = 10,      // attr float
  kBwdCausal = 11,     // attr int 0/1
  kBwdRotary = 12,     // attr int 0/1
  kBwdNumInputs = 13,
};
// p = exp(scale qr kr^T - lse) (masked: 0); delta = rowsum(dout * out); dv = sum_group p^T dout;
// ds = p (dout v^T - delta); dqr = scale ds kr; dkr = sum_group scale ds^T qr;
// dq = dqr cos + rotate_half^T(dqr sin), rotate_half^T([y1, y2]) = [y2, -y1]; dk likewise.
enum BwdOut : int {
  kBwdDq = 0,  // [B*L, NH*D]
  kBwdDk = 1,  // [B*L, NKV*D]
  kBwdDv = 2,  // [B*L, NKV*D]
  kBwdNumOutputs = 3,
};
}  // namespace attention
// 9b. attention_masked: the attention core of section 9 with a key-padding mask and dropout on the
//    probabilities. key_mask [B, L] int32 (0 = key j of batch row b is not seen by any query); a query
//    row without a visible key gives out = 0, lse = -inf and zero gradients. dropout p in [0, 1): the
//    probability p_ij of (b, h, i, j) is kept as p_ij / (1 - p) when DropoutBits(seed, b, h, i, j) >= p * 2^24
//    (CONTRACTS.md 9b gives the hash), else 0; the backward regenerates the same bits from the seed.
namespace attention_masked {
constexpr const char* kForwardSymbol = "AttentionMaskedForward";
constexpr const char* kBackwardSymbol = "AttentionMaskedBackward";

enum FwdIn : int {
  kFwdQ = 0,            // [B*L, NH*D]
  kFwdK = 1,            // [B*L, NKV*D]
  kFwdV = 2,            // [B*L, NKV*D]
  kFwdCos = 3,          // [L, D]
  kFwdSin = 4,          // [L, D]
  kFwdKeyMask = 5,      // [B, L] int32, 0 = masked key
  kFwdSeed = 6,         // [2] int32 (high, low word of the 64-bit dropout seed)
  kFwdNumHeads = 7,     // attr int NH
  kFwdNumKvHeads = 8,   // attr int NKV (divides NH)
  kFwdScale = 9,        // attr float
  kFwdCausal = 10,      // attr int 0/1
  kFwdRotary = 11,      // attr int 0/1
  kFwdDropout = 12,     // attr float p in [0, 1)
  kFwdNumInputs = 13,
};
enum FwdOut : int {
  kFwdOut = 0,  // [B*L, NH*D]
  kFwdLse = 1,  // [B, NH, L] float32 (saved; -inf for a row without a visible key)
  kFwdNumOutputs = 2,
};

enum BwdIn : int {
  kBwdDout = 0,         // [B*L, NH*D]
  kBwdQ = 1,            // [B*L, NH*D]
  kBwdK = 2,            // [B*L, NKV*D]
  kBwdV = 3,            // [B*L, NKV*D]
  kBwdCos = 4,          // [L, D]
  kBwdSin = 5,          // [L, D]
  kBwdKeyMask = 6,      // [B, L] int32
  kBwdSeed = 7,         // [2] int32
  kBwdOut = 8,          // [B*L, NH*D] the forward output (saved)
  kBwdLse = 9,          // [B, NH, L] float32 (saved)
  kBwdNumHeads = 10,    // attr int
  kBwdNumKvHeads = 11,  // attr int
  kBwdScale = 12,       // attr float
  kBwdCausal = 13,      // attr int 0/1
  kBwdRotary = 14,      // attr int 0/1
  kBwdDropout = 15,     // attr float
  kBwdNumInputs = 16,
};
// p as section 9 (0 for masked keys); pd = p * keep / (1 - p_drop); dv = sum_group pd^T dout;
// ds = pd * (dout v^T) - p * delta, delta = rowsum(dout * out); dq, dk as section 9.
enum BwdOut : int {
  kBwdDq = 0,  // [B*L, NH*D]
  kBwdDk = 1,  // [B*L, NKV*D]
  kBwdDv = 2,  // [B*L, NKV*D]
  kBwdNumOutputs = 3,
};
}  // namespace attention_masked
// 7. rms_norm over the last dim, with an optional fused residual add that also returns the sum:
//    s = x + r (or x);  rstd = 1 / sqrt(sum_D s^2 / D + eps);  y = s * rstd * gamma;  h = s.
//    M rows, D = normalized size. rstd is float32 whatever T is; nothing [M, D] is saved: the
//    backward reads s from h (with a residual) or x. Composed on GPU and Ascend (no Ascend C kernel).
// ---------------------------------------------------------------------------------------------
namespace rms_norm {
constexpr const char* kForwardSymbol = "RmsNormForward";
constexpr const char* kBackwardSymbol = "RmsNormBackward";

enum FwdIn : int {
  kFwdX = 0,            // [M, D]
  kFwdResidual = 1,     // [M, D] (or [1] when has_residual == 0)
  kFwdGamma = 2,        // [D]
  kFwdEpsilon = 3,      // attr float
  kFwdHasResidual = 4,  // attr int 0/1
  kFwdNumInputs = 5,
};
enum FwdOut : int {
  kFwdY = 0,     // [M, D]
  kFwdH = 1,     // shape of residual: s = x + r ([1] stand-in, 0, without a residual)
  kFwdRstd = 2,  // [M] float32 (saved)
  kFwdNumOutputs = 3,
};

enum BwdIn : int {
  kBwdDy = 0,           // [M, D]
  kBwdDh = 1,           // [M, D] gradient of h (or [1] when has_residual == 0)
  kBwdS = 2,            // [M, D] the normalised sum: h with a residual, else x
  kBwdGamma = 3,        // [D]
  kBwdRstd = 4,         // [M] float32 saved
  kBwdHasResidual = 5,  // attr int 0/1
  kBwdNumInputs = 6,
};
// xhat = s rstd; g = dy * gamma; dx = rstd (g - xhat sum_D (g xhat) / D) + dh (also the gradient of
// the residual; no dh without one); dgamma = sum_M dy xhat.
enum BwdOut : int {
  kBwdDx = 0,      // [M, D]
  kBwdDGamma = 1,  // [D]
  kBwdNumOutputs = 2,
};
}  // namespace rms_norm

// ---------------------------------------------------------------------------------------------
// 8. swiglu (elementwise):  y = silu(gate) * up;  dgate = dy up silu'(gate);  dup = dy silu(gate).
//    gate and up of one shape (any), N = numel; nothing saved (silu recomputed from gate).
//    Composed on GPU and Ascend (no Ascend C kernel).
// ---------------------------------------------------------------------------------------------
namespace swiglu {
constexpr const char* kForwardSymbol = "SwiGluForward";
constexpr const char* kBackwardSymbol = "SwiGluBackward";

enum FwdIn : int {
  kFwdGate = 0,  // [N] (any shape)
  kFwdUp = 1,    // shape of gate
  kFwdNumInputs = 2,
};
enum FwdOut : int {
  kFwdY = 0,  // shape of gate: silu(gate) * up
  kFwdNumOutputs = 1,
};

enum BwdIn : int {
  kBwdDy = 0,    // shape of gate
  kBwdGate = 1,  // forward input
  kBwdUp = 2,    // forward input
  kBwdNumInputs = 3,
};
enum BwdOut : int {
  kBwdDGate = 0,  // dy * up * silu'(gate)
  kBwdDUp = 1,    // dy * silu(gate)
  kBwdNumOutputs = 2,
};
}  // namespace swiglu

// ---------------------------------------------------------------------------------------------
// 10. dropout_mask: a dropout mask drawn from a counter hash of (seed, offset + i), as the LoRA layers'
//     mask on the fused CPU backend (MindSpore's generator gives seed and offset). Forward only: the mask
//     has no gradient. CPU kernel only.
//     mask[i] = bits(seed, offset + i) >= floor(p 2^24) ? 1 / (1 - p) : 0,  i < N = numel(x)
// ---------------------------------------------------------------------------------------------
namespace dropout_mask {
constexpr const char* kForwardSymbol = "DropoutMaskForward";

enum FwdIn : int {
  kFwdX = 0,       // [N] (any shape): gives the mask's shape and dtype T; its values are not read
  kFwdSeed = 1,    // int64, 1 element
  kFwdOffset = 2,  // int64, 1 element: the counter of element 0
  kFwdP = 3,       // attr float: dropout probability in [0, 1)
  kFwdNumInputs = 4,
};
enum FwdOut : int {
  kFwdMask = 0,  // shape and dtype of x: 0 or 1 / (1 - p)
  kFwdNumOutputs = 1,
};
}  // namespace dropout_mask

}  // namespace contracts
}  // namespace mindpet
