// op_host of low_rank_adapter (ops/CONTRACTS.md section 3): MindpetLowRankAdapter (forward) and
// MindpetLowRankAdapterGrad (backward). Tiling arithmetic: mindpet/tiling.h.
#include "../op_kernel/mindpet_tiling_data.h"
#include "mindpet_host_common.h"

namespace optiling {
namespace {
using namespace mindpet_host;  // NOLINT

ge::graphStatus LowRankAdapterTiling(gert::TilingContext* ctx) {
  const auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
  const mt::HardwareSpec hw = Hardware(plat);
  const ge::DataType dt = InputDtype(ctx);
  auto* td = TilingData<MindpetLowRankAdapterTilingData>(ctx);
  const int64_t* activation = Attr<int64_t>(ctx, 0);
  if (td == nullptr || activation == nullptr) return ge::GRAPH_FAILED;
  td->activation = static_cast<int32_t>(*activation);
  mt::LowRankAdapterShape s;
  s.m = Dim(ctx->GetInputShape(0), 0);
  s.d = Dim(ctx->GetInputShape(0), 1);
  s.rank = Dim(ctx->GetInputShape(1), 1);
  s.bottleneck = Dim(ctx->GetInputShape(2), 1);
  s.dtypeBytes = ge::GetSizeByDataType(dt);
  if (mt::PlanLowRankAdapterForward(s, hw, &td->plan) != mt::Status::kOk) return ge::GRAPH_FAILED;
  const mt::FusedPlan& p = td->plan.y;
  const mt::GemmBudget b = mt::SharedBudget(hw, 4);
  const uint32_t r = s.rank, bn = s.bottleneck;
  const GemmIo io[4] = {
      {false, false, false, false, s.m, r, s.d, s.d},  // t = h Ldl
      {false, false, true, false, s.m, bn, r, r},      // z = t Ldr + bd
      {false, false, false, false, s.m, r, bn, bn},    // q = a Lul
      {false, false, true, false, s.m, s.d, r, r},     // q Lur + bu (then + h)
  };
  for (int i = 0; i < 4; ++i) {
    if (!FillCubeTiling(plat, p.gemm[i], b, dt, io[i], td->mm[i])) return ge::GRAPH_FAILED;
  }
  ctx->SetBlockDim(MixBlockDim(plat, p.grid.usedCores));
  SetWorkspace(ctx, plat, p.workspaceBytes);
  return ge::GRAPH_SUCCESS;
}

ge::graphStatus LowRankAdapterGradTiling(gert::TilingContext* ctx) {
  const auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
  const mt::HardwareSpec hw = Hardware(plat);
  const ge::DataType dt = InputDtype(ctx);
  auto* td = TilingData<MindpetLowRankAdapterGradTilingData>(ctx);
  const int64_t* activation = Attr<int64_t>(ctx, 0);
  if (td == nullptr || activation == nullptr) return ge::GRAPH_FAILED;
  td->activation = static_cast<int32_t>(*activation);
  mt::LowRankAdapterShape s;
  s.m = Dim(ctx->GetInputShape(0), 0);
  s.d = Dim(ctx->GetInputShape(0), 1);
  s.rank = Dim(ctx->GetInputShape(2), 1);
  s.bottleneck = Dim(ctx->GetInputShape(3), 1);
  s.dtypeBytes = ge::GetSizeByDataType(dt);
  if (mt::PlanLowRankAdapterBackward(s, hw, &td->plan) != mt::Status::kOk) return ge::GRAPH_FAILED;
  const mt::GemmBudget b = mt::SharedBudget(hw, 8);
  const mt::FusedPlan& p = td->plan.dh;
  const uint32_t r = s.rank, bn = s.bottleneck;
  const mt::GemmBase* bases[8] = {&p.gemm[0], &p.gemm[1], &p.gemm[2], &p.gemm[3],
                                  &td->plan.dDownLeft.base, &td->plan.dDownRight.base,
                                  &td->plan.dUpLeft.base, &td->plan.dUpRight.base};
  const GemmIo io[8] = {
      {false, true, false, false, s.m, r, s.d, s.d},  // dq = dy Lur^T
      {false, true, false, false, s.m, bn, r, r},     // dq Lul^T
      {false, true, false, false, s.m, r, bn, bn},    // dt = dz Ldr^T
      {false, true, false, false, s.m, s.d, r, r},    // dt Ldl^T (then + dy)
      {true, false, false, false, s.d, r, s.m, s.m},  // h^T dt  -> dLdl
      {true, false, false, false, r, bn, s.m, s.m},   // t^T dz  -> dLdr
      {true, false, false, false, bn, r, s.m, s.m},   // a^T dq  -> dLul
      {true, false, false, false, r, s.d, s.m, s.m},  // q^T dy  -> dLur
  };
  for (int i = 0; i < 8; ++i) {
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
graphStatus LowRankAdapterInferShape(gert::InferShapeContext* ctx) {
  const gert::Shape* h = ctx->GetInputShape(0);
  const int64_t m = h->GetDim(0);
  *ctx->GetOutputShape(0) = *h;                                                        // y
  mindpet_host::SetMatrix(ctx->GetOutputShape(1), m, ctx->GetInputShape(1)->GetDim(1));  // t
  mindpet_host::SetMatrix(ctx->GetOutputShape(2), m, ctx->GetInputShape(2)->GetDim(1));  // z
  mindpet_host::SetMatrix(ctx->GetOutputShape(3), m, ctx->GetInputShape(4)->GetDim(1));  // q
  return GRAPH_SUCCESS;
}

graphStatus LowRankAdapterGradInferShape(gert::InferShapeContext* ctx) {
  *ctx->GetOutputShape(0) = *ctx->GetInputShape(1);  // dh like h
  for (size_t i = 0; i < 2; ++i) *ctx->GetOutputShape(1 + i) = *ctx->GetInputShape(2 + i);
  mindpet_host::SetVector(ctx->GetOutputShape(3), ctx->GetInputShape(3)->GetDim(1));  // dbd [B]
  for (size_t i = 0; i < 2; ++i) *ctx->GetOutputShape(4 + i) = *ctx->GetInputShape(4 + i);
  mindpet_host::SetVector(ctx->GetOutputShape(6), ctx->GetInputShape(5)->GetDim(1));  // dbu [D]
  return GRAPH_SUCCESS;
}
}  // namespace
}  // namespace ge

namespace ops {
class MindpetLowRankAdapter : public OpDef {
 public:
  explicit MindpetLowRankAdapter(const char* name) : OpDef(name) {
    mindpet_host::FloatParams(
        this, {"h", "down_left", "down_right", "b_down", "up_left", "up_right", "b_up"}, false);
    mindpet_host::FloatParams(this, {"y", "t", "z", "q"}, true);
    this->Attr("activation").AttrType(REQUIRED).Int();
    this->SetInferShape(ge::LowRankAdapterInferShape)
        .SetInferDataType(mindpet_host::SameDtypeAsFirstInput);
    this->AICore().SetTiling(optiling::LowRankAdapterTiling).AddConfig("ascend910b").AddConfig("ascend910_93");
  }
};
OP_ADD(MindpetLowRankAdapter);

class MindpetLowRankAdapterGrad : public OpDef {
 public:
  explicit MindpetLowRankAdapterGrad(const char* name) : OpDef(name) {
    mindpet_host::FloatParams(this, {"dy", "h", "down_left", "down_right", "up_left", "up_right",
                                     "t", "z", "q"}, false);
    mindpet_host::FloatParams(this, {"dh", "d_down_left", "d_down_right", "d_b_down", "d_up_left",
                                     "d_up_right", "d_b_up"}, true);
    this->Attr("activation").AttrType(REQUIRED).Int();
    this->SetInferShape(ge::LowRankAdapterGradInferShape)
        .SetInferDataType(mindpet_host::SameDtypeAsFirstInput);
    this->AICore().SetTiling(optiling::LowRankAdapterGradTiling).AddConfig("ascend910b").AddConfig("ascend910_93");
  }
};
OP_ADD(MindpetLowRankAdapterGrad);
}  // namespace ops
