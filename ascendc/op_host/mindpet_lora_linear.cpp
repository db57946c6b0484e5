// op_host of lora_linear (ops/CONTRACTS.md section 1): OpDef, shape/dtype inference and tiling of
// MindpetLoraLinear (forward) and MindpetLoraLinearGrad (backward). The tiling arithmetic is the
// pure-C++ plan of mindpet/tiling.h; this file only moves shapes and platform numbers in and out.
#include "../op_kernel/mindpet_tiling_data.h"
#include "mindpet_host_common.h"

namespace optiling {
namespace {
using namespace mindpet_host;  // NOLINT

ge::graphStatus LoraLinearTiling(gert::TilingContext* ctx) {
  const auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
  const mt::HardwareSpec hw = Hardware(plat);
  const ge::DataType dt = InputDtype(ctx);
  auto* td = TilingData<MindpetLoraLinearTilingData>(ctx);
  const float* scale = Attr<float>(ctx, 0);
  const int64_t* hasBias = Attr<int64_t>(ctx, 1);
  const int64_t* hasMask = Attr<int64_t>(ctx, 2);
  if (td == nullptr || scale == nullptr || hasBias == nullptr || hasMask == nullptr) return ge::GRAPH_FAILED;
  td->scale = *scale;
  td->hasBias = *hasBias != 0;
  td->hasMask = *hasMask != 0;
  mt::LoraLinearShape s;
  s.m = Dim(ctx->GetInputShape(0), 0);
  s.k = Dim(ctx->GetInputShape(0), 1);
  s.n = Dim(ctx->GetInputShape(1), 0);
  s.rank = Dim(ctx->GetInputShape(3), 0);
  s.dtypeBytes = ge::GetSizeByDataType(dt);
  s.hasBias = td->hasBias;
  s.dropout = td->hasMask;
  if (mt::PlanLoraLinearForward(s, hw, &td->plan) != mt::Status::kOk) return ge::GRAPH_FAILED;
  const mt::FusedPlan& p = td->plan.y;
  const mt::GemmBudget b = mt::SharedBudget(hw, 3);
  const GemmIo io[3] = {
      {false, true, s.hasBias != 0, false, s.m, s.n, s.k, s.k},  // x W^T (+b) -> y
      {false, true, false, false, s.m, s.rank, s.k, s.k},        // x_d A^T -> u (GM)
      {false, true, false, false, s.m, s.n, s.rank, s.rank},     // (s u) B^T -> y (atomic)
  };
  for (int i = 0; i < 3; ++i) {
    if (!FillCubeTiling(plat, p.gemm[i], b, dt, io[i], td->mm[i])) return ge::GRAPH_FAILED;
  }
  ctx->SetBlockDim(MixBlockDim(plat, p.grid.usedCores));
  SetWorkspace(ctx, plat, p.workspaceBytes);
  return ge::GRAPH_SUCCESS;
}

ge::graphStatus LoraLinearGradTiling(gert::TilingContext* ctx) {
  const auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
  const mt::HardwareSpec hw = Hardware(plat);
  const ge::DataType dt = InputDtype(ctx);
  auto* td = TilingData<MindpetLoraLinearGradTilingData>(ctx);
  const float* scale = Attr<float>(ctx, 0);
  const int64_t* hasMask = Attr<int64_t>(ctx, 1);
  if (td == nullptr || scale == nullptr || hasMask == nullptr) return ge::GRAPH_FAILED;
  td->scale = *scale;
  td->hasMask = *hasMask != 0;
  mt::LoraLinearShape s;
  s.m = Dim(ctx->GetInputShape(0), 0);
  s.n = Dim(ctx->GetInputShape(0), 1);
  s.k = Dim(ctx->GetInputShape(1), 1);
  s.rank = Dim(ctx->GetInputShape(3), 0);
  s.dtypeBytes = ge::GetSizeByDataType(dt);
  s.hasBias = 0;
  s.dropout = td->hasMask;
  if (mt::PlanLoraLinearBackward(s, hw, &td->plan) != mt::Status::kOk) return ge::GRAPH_FAILED;
  // 4 Matmul objects (the API maximum), as planned: dA and dB share mm[3] (identical bases; the
  // kernel sets each one's org shape before use).
  const mt::GemmBudget b = mt::SharedBudget(hw, 4);
  const mt::FusedPlan& p = td->plan.dx;
  const mt::GemmBase* bases[4] = {&p.gemm[0], &p.gemm[1], &p.gemm[2], &td->plan.dA.base};
  const GemmIo io[4] = {
      {false, false, false, false, s.m, s.k, s.n, s.n},        // dy W -> dx (atomic add)
      {false, false, false, false, s.m, s.rank, s.n, s.n},     // g = dy B -> GM
      {false, false, false, false, s.m, s.k, s.rank, s.rank},  // (s g) A -> dx
      {true, false, false, false, s.rank, s.k, s.m, s.m},      // (s g)^T x_d -> dA; dy^T (s u) -> dB
  };
  for (int i = 0; i < 4; ++i) {
    if (!FillCubeTiling(plat, *bases[i], b, dt, io[i], td->mm[i])) return ge::GRAPH_FAILED;
  }
  // Stage 2 follows a vector-core barrier (SyncAll): launch every core, in batch schedule mode.
  ctx->SetBlockDim(plat.GetCoreNumAic());
  if (!UseBatchScheduleMode(ctx)) return ge::GRAPH_FAILED;
  SetWorkspace(ctx, plat, p.workspaceBytes);
  return ge::GRAPH_SUCCESS;
}
}  // namespace
}  // namespace optiling

namespace ge {
namespace {
graphStatus LoraLinearInferShape(gert::InferShapeContext* ctx) {
  const gert::Shape* x = ctx->GetInputShape(0);
  const gert::Shape* w = ctx->GetInputShape(1);
  const gert::Shape* a = ctx->GetInputShape(3);
  gert::Shape* y = ctx->GetOutputShape(0);
  gert::Shape* u = ctx->GetOutputShape(1);
  mindpet_host::SetMatrix(y, x->GetDim(0), w->GetDim(0));
  mindpet_host::SetMatrix(u, x->GetDim(0), a->GetDim(0));
  return GRAPH_SUCCESS;
}

graphStatus LoraLinearGradInferShape(gert::InferShapeContext* ctx) {
  *ctx->GetOutputShape(0) = *ctx->GetInputShape(1);  // dx like x
  *ctx->GetOutputShape(1) = *ctx->GetInputShape(3);  // dA like A
  *ctx->GetOutputShape(2) = *ctx->GetInputShape(4);  // dB like B
  return GRAPH_SUCCESS;
}
}  // namespace
}  // namespace ge

namespace ops {
class MindpetLoraLinear : public OpDef {
 public:
  explicit MindpetLoraLinear(const char* name) : OpDef(name) {
    mindpet_host::FloatParams(this, {"x", "weight", "bias", "lora_a", "lora_b", "mask"}, false);
    mindpet_host::FloatParams(this, {"y", "u"}, true);
    this->Attr("scale").AttrType(REQUIRED).Float();
    this->Attr("has_bias").AttrType(REQUIRED).Int();
    this->Attr("has_mask").AttrType(REQUIRED).Int();
    this->SetInferShape(ge::LoraLinearInferShape).SetInferDataType(mindpet_host::SameDtypeAsFirstInput);
    this->AICore().SetTiling(optiling::LoraLinearTiling).AddConfig("ascend910b").AddConfig("ascend910_93");
  }
};
OP_ADD(MindpetLoraLinear);

class MindpetLoraLinearGrad : public OpDef {
 public:
  explicit MindpetLoraLinearGrad(const char* name) : OpDef(name) {
    mindpet_host::FloatParams(this, {"dy", "x", "weight", "lora_a", "lora_b", "u", "mask"}, false);
    mindpet_host::FloatParams(this, {"dx", "d_lora_a", "d_lora_b"}, true);
    this->Attr("scale").AttrType(REQUIRED).Float();
    this->Attr("has_mask").AttrType(REQUIRED).Int();
    this->SetInferShape(ge::LoraLinearGradInferShape).SetInferDataType(mindpet_host::SameDtypeAsFirstInput);
    this->AICore().SetTiling(optiling::LoraLinearGradTiling).AddConfig("ascend910b").AddConfig("ascend910_93");
  }
};
OP_ADD(MindpetLoraLinearGrad);
}  // namespace ops
