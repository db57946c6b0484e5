// op_host of adapter (ops/CONTRACTS.md section 2): MindpetAdapter (forward) and MindpetAdapterGrad
// (backward). Tiling arithmetic: mindpet/tiling.h (PlanAdapterForward / PlanAdapterBackward).
#include "../op_kernel/mindpet_tiling_data.h"
#include "mindpet_host_common.h"

namespace optiling {
namespace {
using namespace mindpet_host;  // NOLINT

ge::graphStatus AdapterTiling(gert::TilingContext* ctx) {
  const auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
  const mt::HardwareSpec hw = Hardware(plat);
  const ge::DataType dt = InputDtype(ctx);
  auto* td = TilingData<MindpetAdapterTilingData>(ctx);
  const int64_t* activation = Attr<int64_t>(ctx, 0);
  if (td == nullptr || activation == nullptr) return ge::GRAPH_FAILED;
  td->activation = static_cast<int32_t>(*activation);
  mt::AdapterShape s;
  s.m = Dim(ctx->GetInputShape(0), 0);
  s.d = Dim(ctx->GetInputShape(0), 1);
  s.bottleneck = Dim(ctx->GetInputShape(1), 0);
  s.dtypeBytes = ge::GetSizeByDataType(dt);
  if (mt::PlanAdapterForward(s, hw, &td->plan) != mt::Status::kOk) return ge::GRAPH_FAILED;
  const mt::FusedPlan& p = td->plan.y;
  const mt::GemmBudget b = mt::SharedBudget(hw, 2);
  const uint32_t bn = s.bottleneck;
  const GemmIo io[2] = {
      {false, true, true, false, s.m, bn, s.d, s.d},  // h Wd^T + bd -> z (GM)
      {false, true, true, false, s.m, s.d, bn, bn},   // a Wu^T + bu -> y (GM, then + h)
  };
  for (int i = 0; i < 2; ++i) {
    if (!FillCubeTiling(plat, p.gemm[i], b, dt, io[i], td->mm[i])) return ge::GRAPH_FAILED;
  }
  ctx->SetBlockDim(MixBlockDim(plat, p.grid.usedCores));
  SetWorkspace(ctx, plat, p.workspaceBytes);
  return ge::GRAPH_SUCCESS;
}

ge::graphStatus AdapterGradTiling(gert::TilingContext* ctx) {
  const auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
  const mt::HardwareSpec hw = Hardware(plat);
  const ge::DataType dt = InputDtype(ctx);
  auto* td = TilingData<MindpetAdapterGradTilingData>(ctx);
  const int64_t* activation = Attr<int64_t>(ctx, 0);
  if (td == nullptr || activation == nullptr) return ge::GRAPH_FAILED;
  td->activation = static_cast<int32_t>(*activation);
  mt::AdapterShape s;
  s.m = Dim(ctx->GetInputShape(0), 0);
  s.d = Dim(ctx->GetInputShape(0), 1);
  s.bottleneck = Dim(ctx->GetInputShape(2), 0);
  s.dtypeBytes = ge::GetSizeByDataType(dt);
  if (mt::PlanAdapterBackward(s, hw, &td->plan) != mt::Status::kOk) return ge::GRAPH_FAILED;
  const mt::GemmBudget b = mt::SharedBudget(hw, 4);
  const mt::FusedPlan& p = td->plan.dh;
  const uint32_t bn = s.bottleneck;
  const mt::GemmBase* bases[4] = {&p.gemm[0], &p.gemm[1], &td->plan.dWu.base, &td->plan.dWd.base};
  const GemmIo io[4] = {
      {false, false, false, false, s.m, bn, s.d, s.d},  // g = dy Wu -> GM
      {false, false, false, false, s.m, s.d, bn, bn},   // dz Wd -> dh (GM, then + dy)
      {true, false, false, false, s.d, bn, s.m, s.m},   // dy^T a -> dWu
      {true, false, false, false, bn, s.d, s.m, s.m},   // dz^T h -> dWd
  };
  for (int i = 0; i < 4; ++i) {
    if (!FillCubeTiling(plat, *bases[i], b, dt, io[i], td->mm[i])) return ge::GRAPH_FAILED;
  }
  ctx->SetBlockDim(plat.GetCoreNumAic());  // stage 2 follows a vector-core barrier (SyncAll)
  if (!UseBatchScheduleMode(ctx)) return ge::GRAPH_FAILED;
  SetWorkspace(ctx, plat, p.workspaceBytes);
  return ge::GRAPH_SUCCESS;
}
}  // namespace
}  // namespace optiling

namespace ge {
namespace {
graphStatus AdapterInferShape(gert::InferShapeContext* ctx) {
  const gert::Shape* h = ctx->GetInputShape(0);
  *ctx->GetOutputShape(0) = *h;
  mindpet_host::SetMatrix(ctx->GetOutputShape(1), h->GetDim(0), ctx->GetInputShape(1)->GetDim(0));
  return GRAPH_SUCCESS;
}

graphStatus AdapterGradInferShape(gert::InferShapeContext* ctx) {
  const gert::Shape* wd = ctx->GetInputShape(2);
  const gert::Shape* wu = ctx->GetInputShape(3);
  *ctx->GetOutputShape(0) = *ctx->GetInputShape(1);                // dh like h
  *ctx->GetOutputShape(1) = *wd;                                   // d_w_down
  mindpet_host::SetVector(ctx->GetOutputShape(2), wd->GetDim(0));  // d_b_down [B]
  *ctx->GetOutputShape(3) = *wu;                                   // d_w_up
  mindpet_host::SetVector(ctx->GetOutputShape(4), wu->GetDim(0));  // d_b_up [D]
  return GRAPH_SUCCESS;
}
}  // namespace
}  // namespace ge

namespace ops {
using mindpet_host::FloatParams;

class MindpetAdapter : public OpDef {
 public:
  explicit MindpetAdapter(const char* name) : OpDef(name) {
    FloatParams(this, {"h", "w_down", "b_down", "w_up", "b_up"}, false);
    FloatParams(this, {"y", "z"}, true);
    this->Attr("activation").AttrType(REQUIRED).Int();
    this->SetInferShape(ge::AdapterInferShape).SetInferDataType(mindpet_host::SameDtypeAsFirstInput);
    this->AICore().SetTiling(optiling::AdapterTiling).AddConfig("ascend910b").AddConfig("ascend910_93");
  }
};
OP_ADD(MindpetAdapter);

class MindpetAdapterGrad : public OpDef {
 public:
  explicit MindpetAdapterGrad(const char* name) : OpDef(name) {
    FloatParams(this, {"dy", "h", "w_down", "w_up", "z"}, false);
    FloatParams(this, {"dh", "d_w_down", "d_b_down", "d_w_up", "d_b_up"}, true);
    this->Attr("activation").AttrType(REQUIRED).Int();
    this->SetInferShape(ge::AdapterGradInferShape).SetInferDataType(mindpet_host::SameDtypeAsFirstInput);
    this->AICore().SetTiling(optiling::AdapterGradTiling).AddConfig("ascend910b").AddConfig("ascend910_93");
  }
};
OP_ADD(MindpetAdapterGrad);
}  // namespace ops
