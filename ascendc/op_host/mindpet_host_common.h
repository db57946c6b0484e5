// Helpers shared by the op_host files: platform budgets -> HardwareSpec, and the TCubeTiling of a
// matmul object from a GemmBase planned by the pure-C++ tiling (mindpet/tiling.h).
#ifndef MINDPET_ASCENDC_HOST_COMMON_H
#define MINDPET_ASCENDC_HOST_COMMON_H
#include <cstdint>
#include <initializer_list>

#include "graph/utils/type_utils.h"
#include "mindpet/tiling.h"
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "tiling/tiling_api.h"

namespace mindpet_host {

namespace mt = mindpet::tiling;

// The on-chip budgets of this device, from the platform query.
inline mt::HardwareSpec Hardware(const platform_ascendc::PlatformAscendC& plat) {
  mt::HardwareSpec hw = mt::DefaultHardware();
  uint64_t v = 0;
  hw.cores = plat.GetCoreNumAiv();
  const uint32_t aic = plat.GetCoreNumAic();
  hw.aivPerAic = aic == 0 ? 1 : (hw.cores + aic - 1) / aic;
  plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, v);  hw.ubBytes = v;
  plat.GetCoreMemSize(platform_ascendc::CoreMemType::L1, v);  hw.l1Bytes = v;
  plat.GetCoreMemSize(platform_ascendc::CoreMemType::L0_A, v); hw.l0aBytes = v;
  plat.GetCoreMemSize(platform_ascendc::CoreMemType::L0_B, v); hw.l0bBytes = v;
  plat.GetCoreMemSize(platform_ascendc::CoreMemType::L0_C, v); hw.l0cBytes = v;
  return hw;
}

inline matmul_tiling::DataType MatmulType(ge::DataType dt) {
  return dt == ge::DT_FLOAT16 ? matmul_tiling::DataType::DT_FLOAT16 : matmul_tiling::DataType::DT_FLOAT;
}

// Where a matmul object reads / writes (must match the MatmulType of the kernel object).
struct GemmIo {
  bool transA, transB;
  bool bias;
  bool cToUb;              // C delivered tile by tile to the vector core (VECIN). No kernel does
                           // this any more (MmToGm everywhere: GetTensorC to UB packs tail
                           // tiles): every GemmIo sets false, matching the kernels' C position.
  uint32_t orgM, orgN, orgKa, orgKb;  // leading dimensions of the whole GM tensors
};

// TCubeTiling for one matmul object: single-core shape and base tiles exactly as planned, buffer
// space limited to the planned budget of the object. Every setter of MatmulApiTiling returns -1 on
// a value it rejects (SetFixSplit: a base not aligned to its granule; SetBufferSpace: a budget
// larger than the platform's): a rejected value would be silently replaced by the API's own
// choice, so any -1 fails the tiling instead.
inline bool FillCubeTiling(const platform_ascendc::PlatformAscendC& plat, const mt::GemmBase& g,
                           const mt::GemmBudget& budget, ge::DataType dt, const GemmIo& io,
                           AscendC::tiling::TCubeTiling& out) {
  matmul_tiling::MatmulApiTiling t(plat);
  const matmul_tiling::DataType mdt = MatmulType(dt);
  const matmul_tiling::TPosition gm = matmul_tiling::TPosition::GM;
  const matmul_tiling::CubeFormat nd = matmul_tiling::CubeFormat::ND;
  bool ok = t.SetAType(gm, nd, mdt, io.transA) == 0;
  ok = ok && t.SetBType(gm, nd, mdt, io.transB) == 0;
  ok = ok && t.SetCType(io.cToUb ? matmul_tiling::TPosition::VECIN : gm, nd, mdt) == 0;
  if (io.bias) ok = ok && t.SetBiasType(gm, nd, mdt) == 0;
  ok = ok && t.EnableBias(io.bias) == 0;
  ok = ok && t.SetOrgShape(io.orgM, io.orgN, io.orgKa, io.orgKb) == 0;
  ok = ok && t.SetShape(g.m, g.n, g.k) == 0;
  ok = ok && t.SetFixSplit(g.baseM, g.baseN, g.baseK) == 0;
  ok = ok && t.SetBufferSpace(static_cast<int32_t>(budget.l1), static_cast<int32_t>(budget.l0c), -1) == 0;
  return ok && t.GetTiling(out) != -1;
}

// The tiling data of the call, or nullptr when the context has none or too little room for T
// (TilingContext::GetTilingData returns nullptr then).
template <typename T>
inline T* TilingData(gert::TilingContext* ctx) {
  return ctx == nullptr ? nullptr : ctx->GetTilingData<T>();
}

// Attribute i of the call as T, or nullptr when the context has no attributes or no such one.
template <typename T>
inline const T* Attr(gert::TilingContext* ctx, size_t i) {
  const gert::RuntimeAttrs* attrs = ctx->GetAttrs();
  return attrs == nullptr ? nullptr : attrs->GetAttrPointer<T>(i);
}

// A kernel with a SyncAll barrier: batch schedule mode (the op holds all its cores at once). The
// SyncAll reference recommends it: without it, concurrent streams whose barrier ops together need
// more cores than exist can each hold part of the cores and wait for the rest forever.
inline bool UseBatchScheduleMode(gert::TilingContext* ctx) {
  constexpr uint32_t kBatchMode = 1;
  return ctx->SetScheduleMode(kBatchMode) == ge::GRAPH_SUCCESS;
}

// Block dim of a MIX (1 AIC : 2 AIV) kernel that splits work over `usedAiv` vector cores. Stages
// with a full-core barrier launch every core (SyncAll needs all of them).
inline uint32_t MixBlockDim(const platform_ascendc::PlatformAscendC& plat, uint32_t usedAiv) {
  return plat.CalcTschBlockDim(usedAiv, plat.GetCoreNumAic(), plat.GetCoreNumAiv());
}

inline void SetWorkspace(gert::TilingContext* ctx, const platform_ascendc::PlatformAscendC& plat,
                         uint64_t userBytes) {
  size_t* ws = ctx->GetWorkspaceSizes(1);
  ws[0] = static_cast<size_t>(plat.GetLibApiWorkSpaceSize() + userBytes);
}

// Dimension i of an input (0 when the shape is missing: every planner rejects a zero dimension).
inline uint32_t Dim(const gert::StorageShape* s, size_t i) {
  return s == nullptr ? 0 : static_cast<uint32_t>(s->GetStorageShape().GetDim(i));
}

// Dtype of input 0 (DT_UNDEFINED when missing: its size is not 2 or 4, so the planner rejects it).
inline ge::DataType InputDtype(gert::TilingContext* ctx) {
  const gert::CompileTimeTensorDesc* d = ctx->GetInputDesc(0);
  return d == nullptr ? ge::DT_UNDEFINED : d->GetDataType();
}

// Every output has the dtype T of the call (ops/CONTRACTS.md, "Dtype").
inline ge::graphStatus SameDtypeAsFirstInput(gert::InferDataTypeContext* ctx) {
  const ge::DataType dt = ctx->GetInputDataType(0);
  for (size_t i = 0; i < ctx->GetComputeNodeOutputNum(); ++i) ctx->SetOutputDataType(i, dt);
  return ge::GRAPH_SUCCESS;
}

// [rows, cols] output shape.
inline void SetMatrix(gert::Shape* s, int64_t rows, int64_t cols) {
  s->SetDimNum(2);
  s->SetDim(0, rows);
  s->SetDim(1, cols);
}

inline void SetVector(gert::Shape* s, int64_t n) {
  s->SetDimNum(1);
  s->SetDim(0, n);
}

// Required float16/float32 ND tensors (one dtype per call), inputs or outputs.
inline void FloatParams(ops::OpDef* op, std::initializer_list<const char*> names, bool output) {
  for (const char* n : names) {
    ops::OpParamDef& p = output ? op->Output(n) : op->Input(n);
    p.ParamType(ops::REQUIRED).DataType({ge::DT_FLOAT16, ge::DT_FLOAT})
        .Format({ge::FORMAT_ND, ge::FORMAT_ND});
  }
}

}  // namespace mindpet_host

#endif  // MINDPET_ASCENDC_HOST_COMMON_H
