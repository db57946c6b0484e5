// pybind11 bindings of the pure C++ tiling (mindpet/tiling.h), included by native_module.cc.
// Plans are exposed read-only; enumeration methods run the same index helpers the kernels use.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "mindpet/tiling.h"

namespace mindpet {
namespace pybind_tiling {

namespace py = pybind11;
using namespace mindpet::tiling;  // NOLINT
using Rect = std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>;

inline Rect ToRect(const Range2D& r) { return {r.m0, r.mLen, r.n0, r.nLen}; }

inline void Check(Status s) {
  if (s != Status::kOk) throw std::invalid_argument(StatusMessage(s));
}

// Base tiles of gemm `g` over every chunk of the block of `core` (kernel order).
inline std::vector<Rect> FusedTiles(const FusedPlan& p, uint32_t core, uint32_t g) {
  if (g >= p.numGemms) throw std::out_of_range("gemm index");
  std::vector<Rect> out;
  const Range2D block = GridBlock(p.grid, core);
  for (uint32_t c = 0; c < ChunkCount(p, block); ++c) {
    const Range2D area = GemmArea(p, g, ChunkOf(p, block, c));
    for (uint32_t t = 0; t < TileCount(p.gemm[g], area); ++t) out.push_back(ToRect(TileOf(p.gemm[g], area, t)));
  }
  return out;
}

inline std::vector<Rect> FusedChunks(const FusedPlan& p, uint32_t core) {
  std::vector<Rect> out;
  const Range2D block = GridBlock(p.grid, core);
  for (uint32_t c = 0; c < ChunkCount(p, block); ++c) out.push_back(ToRect(ChunkOf(p, block, c)));
  return out;
}

inline std::vector<Rect> GemmTiles(const GemmPlan& p, uint32_t core) {
  std::vector<Rect> out;
  const Range2D block = GridBlock(p.grid, core);
  if (block.mLen == 0) return out;
  for (uint32_t t = 0; t < TileCount(p.base, block); ++t) out.push_back(ToRect(TileOf(p.base, block, t)));
  return out;
}

inline py::list UbList(const FusedPlan& p) {
  py::list l;
  for (uint32_t i = 0; i < p.numUb; ++i) {
    l.append(py::make_tuple(p.ub[i].rowBytes, p.ub[i].fixedBytes, p.ub[i].count));
  }
  return l;
}

inline void Bind(py::module_& m) {
  py::class_<HardwareSpec>(m, "HardwareSpec", "On-chip budgets of one AI core (bytes)")
      .def(py::init([]() { return DefaultHardware(); }))
      .def_readwrite("cores", &HardwareSpec::cores)
      .def_readwrite("aiv_per_aic", &HardwareSpec::aivPerAic)
      .def_readwrite("ub_bytes", &HardwareSpec::ubBytes)
      .def_readwrite("ub_reserve_bytes", &HardwareSpec::ubReserveBytes)
      .def_readwrite("l1_bytes", &HardwareSpec::l1Bytes)
      .def_readwrite("l0a_bytes", &HardwareSpec::l0aBytes)
      .def_readwrite("l0b_bytes", &HardwareSpec::l0bBytes)
      .def_readwrite("l0c_bytes", &HardwareSpec::l0cBytes);

  py::class_<GemmBudget>(m, "GemmBudget")
      .def_readonly("l1", &GemmBudget::l1).def_readonly("l0a", &GemmBudget::l0a)
      .def_readonly("l0b", &GemmBudget::l0b).def_readonly("l0c", &GemmBudget::l0c);
  m.def("shared_budget", &SharedBudget, py::arg("hw"), py::arg("objects"));

  py::class_<GemmBase>(m, "GemmBase")
      .def_readonly("m", &GemmBase::m).def_readonly("n", &GemmBase::n).def_readonly("k", &GemmBase::k)
      .def_readonly("base_m", &GemmBase::baseM).def_readonly("base_n", &GemmBase::baseN)
      .def_readonly("base_k", &GemmBase::baseK)
      .def_readonly("depth_a1", &GemmBase::depthA1).def_readonly("depth_b1", &GemmBase::depthB1)
      .def_readonly("in_bytes", &GemmBase::inBytes).def_readonly("out_bytes", &GemmBase::outBytes)
      .def_readonly("l1_bytes", &GemmBase::l1Bytes).def_readonly("l0a_bytes", &GemmBase::l0aBytes)
      .def_readonly("l0b_bytes", &GemmBase::l0bBytes).def_readonly("l0c_bytes", &GemmBase::l0cBytes);

  py::class_<BlockGrid>(m, "BlockGrid")
      .def_readonly("m", &BlockGrid::m).def_readonly("n", &BlockGrid::n)
      .def_readonly("block_m", &BlockGrid::blockM).def_readonly("block_n", &BlockGrid::blockN)
      .def_readonly("m_blocks", &BlockGrid::mBlocks).def_readonly("n_blocks", &BlockGrid::nBlocks)
      .def_readonly("used_cores", &BlockGrid::usedCores)
      .def("block", [](const BlockGrid& g, uint32_t core) { return ToRect(GridBlock(g, core)); })
      .def("writes_row_outputs", [](const BlockGrid& g, uint32_t core) { return WritesRowOutputs(g, core); });

  py::class_<GemmPlan>(m, "GemmPlan")
      .def_readonly("grid", &GemmPlan::grid).def_readonly("base", &GemmPlan::base)
      .def("tiles", &GemmTiles, py::arg("core"));

  py::class_<FusedPlan>(m, "FusedPlan")
      .def_readonly("grid", &FusedPlan::grid)
      .def_readonly("chunk_m", &FusedPlan::chunkM)
      .def_readonly("epilogue_gemm", &FusedPlan::epilogueGemm)
      .def_readonly("elem_tile", &FusedPlan::elemTile)
      .def_readonly("ub_bytes", &FusedPlan::ubBytes)
      .def_readonly("workspace_bytes", &FusedPlan::workspaceBytes)
      .def_property_readonly("gemms", [](const FusedPlan& p) {
        return std::vector<GemmBase>(p.gemm, p.gemm + p.numGemms);
      })
      .def_property_readonly("n_is_block", [](const FusedPlan& p) {
        return std::vector<bool>(p.nIsBlock, p.nIsBlock + p.numGemms);
      })
      .def_property_readonly("ub_buffers", &UbList, "(row_bytes, fixed_bytes, count) per buffer")
      .def("chunks", &FusedChunks, py::arg("core"))
      .def("tiles", &FusedTiles, py::arg("core"), py::arg("gemm"));

  py::class_<ColumnSumPlan>(m, "ColumnSumPlan")
      .def_readonly("rows", &ColumnSumPlan::rows).def_readonly("cols", &ColumnSumPlan::cols)
      .def_readonly("cols_per_core", &ColumnSumPlan::colsPerCore)
      .def_readonly("used_cores", &ColumnSumPlan::usedCores)
      .def_readonly("tile_rows", &ColumnSumPlan::tileRows).def_readonly("tile_cols", &ColumnSumPlan::tileCols)
      .def_readonly("in_bytes", &ColumnSumPlan::inBytes).def_readonly("ub_bytes", &ColumnSumPlan::ubBytes)
      .def("range", [](const ColumnSumPlan& p, uint32_t core) { return ToRect(ColumnRange(p, core)); });

  m.def("plan_gemm", [](uint32_t mm, uint32_t n, uint32_t k, uint32_t dt, const HardwareSpec& hw, uint32_t objects) {
    GemmPlan p;
    Check(PlanGemmShared(mm, n, k, dt, dt, hw, objects, &p));
    return p;
  }, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("dtype_bytes"), py::arg("hw"), py::arg("objects") = 1);
  m.def("plan_column_sum", [](uint32_t rows, uint32_t cols, uint32_t dt, const HardwareSpec& hw) {
    ColumnSumPlan p;
    Check(PlanColumnSum(rows, cols, dt, hw, &p));
    return p;
  }, py::arg("rows"), py::arg("cols"), py::arg("dtype_bytes"), py::arg("hw"));

  m.def("plan_lora_linear", [](uint32_t mm, uint32_t k, uint32_t n, uint32_t rank, uint32_t dt, bool bias,
                               bool dropout, const HardwareSpec& hw) {
    const LoraLinearShape s = {mm, k, n, rank, dt, bias ? 1u : 0u, dropout ? 1u : 0u};
    LoraLinearForwardTiling f;
    LoraLinearBackwardTiling b;
    Check(PlanLoraLinearForward(s, hw, &f));
    Check(PlanLoraLinearBackward(s, hw, &b));
    py::dict d;
    d["forward"] = f.y;
    d["dx"] = b.dx;
    d["d_lora_a"] = b.dA;
    d["d_lora_b"] = b.dB;
    return d;
  }, py::arg("m"), py::arg("k"), py::arg("n"), py::arg("rank"), py::arg("dtype_bytes"), py::arg("has_bias"),
     py::arg("dropout"), py::arg("hw"), "Forward and backward plans of lora_linear.");

  m.def("plan_adapter", [](uint32_t mm, uint32_t d, uint32_t b, uint32_t dt, const HardwareSpec& hw) {
    const AdapterShape s = {mm, d, b, dt};
    AdapterForwardTiling f;
    AdapterBackwardTiling g;
    Check(PlanAdapterForward(s, hw, &f));
    Check(PlanAdapterBackward(s, hw, &g));
    py::dict r;
    r["forward"] = f.y;
    r["dh"] = g.dh;
    r["d_w_up"] = g.dWu;
    r["d_w_down"] = g.dWd;
    r["d_b_up"] = g.dbUp;
    r["d_b_down"] = g.dbDown;
    return r;
  }, py::arg("m"), py::arg("d"), py::arg("bottleneck"), py::arg("dtype_bytes"), py::arg("hw"),
     "Forward and backward plans of adapter.");

  m.def("plan_low_rank_adapter", [](uint32_t mm, uint32_t d, uint32_t b, uint32_t rank, uint32_t dt,
                                    const HardwareSpec& hw) {
    const LowRankAdapterShape s = {mm, d, b, rank, dt};
    LowRankAdapterForwardTiling f;
    LowRankAdapterBackwardTiling g;
    Check(PlanLowRankAdapterForward(s, hw, &f));
    Check(PlanLowRankAdapterBackward(s, hw, &g));
    py::dict r;
    r["forward"] = f.y;
    r["dh"] = g.dh;
    r["d_down_left"] = g.dDownLeft;
    r["d_down_right"] = g.dDownRight;
    r["d_up_left"] = g.dUpLeft;
    r["d_up_right"] = g.dUpRight;
    r["d_b_up"] = g.dbUp;
    r["d_b_down"] = g.dbDown;
    return r;
  }, py::arg("m"), py::arg("d"), py::arg("bottleneck"), py::arg("rank"), py::arg("dtype_bytes"),
     py::arg("hw"), "Forward and backward plans of low_rank_adapter.");

  m.attr("UB_ALIGN") = kUbAlign;
  m.attr("L0AB_ALIGN") = kL0abAlign;
  m.attr("L0C_ALIGN") = kL0cAlign;
  m.attr("CUBE_BLOCK") = kCubeBlock;
}

}  // namespace pybind_tiling
}  // namespace mindpet
