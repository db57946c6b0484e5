"""Each MindSpore internal behind ``mindpet._mindspore`` still exists and behaves as mindpet relies on.

A MindSpore upgrade that moves or changes one of them fails here, by name, first.
"""
import ctypes
import re
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet import _mindspore


@pytest.mark.parametrize("symbol", sorted(_mindspore._LOCATIONS))  # pylint: disable=protected-access
def test_every_internal_symbol_is_found(symbol):
    assert _mindspore._internal(symbol) is not None  # pylint: disable=protected-access


def test_missing_internal_names_the_symbol_and_version(monkeypatch):
    monkeypatch.setitem(_mindspore._LOCATIONS, "get_mode",  # pylint: disable=protected-access
                        (("mindspore.context", "_no_such_symbol"),))
    with pytest.raises(_mindspore.MindSporeInternalsError, match=r"'get_mode'.*_no_such_symbol.*MindSpore 2\."):
        _mindspore.is_pynative()


def test_graph_seeds_follow_the_global_seed():
    ms.set_seed(7)
    first = [_mindspore.graph_seeds("dropout") for _ in range(2)]
    ms.set_seed(7)
    again = [_mindspore.graph_seeds("dropout") for _ in range(2)]
    assert first == again
    assert all(isinstance(s, int) for pair in first for s in pair)
    # two Dropout primitives seeded from consecutive pairs draw different masks
    assert first[0] != first[1]


class _Flagged(nn.Cell):
    def __init__(self):
        super().__init__()
        self.flag = False

    def construct(self, x):
        if self.flag:
            return x * 2.0
        return x


def test_invalidate_compiled_graphs_makes_graph_mode_reread_attributes():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    net = _Flagged()
    x = Tensor(np.ones((2,), np.float32))
    assert net(x).asnumpy().tolist() == [1.0, 1.0]
    net.flag = True
    assert net(x).asnumpy().tolist() == [1.0, 1.0]  # the cached graph still runs: the reason for the accessor
    _mindspore.invalidate_compiled_graphs()
    assert net(x).asnumpy().tolist() == [2.0, 2.0]


def test_is_pynative_follows_the_context():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        assert _mindspore.is_pynative() is True
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert _mindspore.is_pynative() is False


def test_clear_pynative_grad_state_lets_training_continue_after_an_error():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    try:
        dense = nn.Dense(3, 2)

        def forward(x, fail):
            y = dense(x).sum()
            if fail:
                raise ValueError("boom")
            return y

        grad = ms.value_and_grad(forward, None, dense.trainable_params())
        x = Tensor(np.ones((4, 3), np.float32))
        with pytest.raises(ValueError):
            grad(x, True)
        _mindspore.clear_pynative_grad_state()
        loss, grads = grad(x, False)
        assert np.isfinite(loss.asnumpy())
        np.testing.assert_allclose(grads[0].asnumpy(), np.full((2, 3), 4.0), rtol=1e-6)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_compiling_is_true_only_inside_a_compiled_graph():
    assert _mindspore.compiling() is False

    @ms.jit
    def inside(x):
        if _mindspore.compiling():
            return x + 1.0
        return x

    assert inside(Tensor(np.zeros((1,), np.float32))).asnumpy().tolist() == [1.0]


def test_initializer_names_are_accepted_by_initializer():
    names = _mindspore.initializer_names()
    assert {"normal", "zeros", "ones", "xavier_uniform", "heuniform"} <= names
    for name in ("normal", "zeros", "xavier_uniform"):
        assert ms.common.initializer.initializer(name, (2, 2), ms.float32).init_data().shape == (2, 2)


def test_cell_internals_list_own_parameters_children_and_primitives():
    seq = nn.SequentialCell([nn.Dense(3, 2), nn.ReLU()])
    dense = seq[0]
    assert set(_mindspore.own_parameters(dense)) == {"weight", "bias"}
    assert _mindspore.own_parameters(dense)["weight"] is dense.weight
    assert _mindspore.own_parameters(seq) == {}
    assert list(_mindspore.child_cells(seq)) == ["0", "1"]
    assert _mindspore.child_cells(seq)["0"] is dense
    prims = _mindspore.cell_primitives(nn.ReLU())
    assert len(prims) == 1 and isinstance(prims[0], ops.ReLU)


def test_library_dir_holds_onednn_with_its_gemm():
    path = _mindspore.onednn_library()
    assert path is not None and path.parent == _mindspore.library_dir()
    assert ctypes.CDLL(str(path)).dnnl_sgemm  # the symbol the CPU kernels resolve


def test_onednn_library_is_none_without_a_known_name(monkeypatch):
    monkeypatch.setattr(_mindspore, "_ONEDNN_NAMES", ("libdnnl.so.0-no-such",))
    assert _mindspore.onednn_library() is None


def test_activation_names_are_accepted_by_get_activation():
    names = _mindspore.activation_names()
    assert names == sorted(names)
    assert {"relu", "gelu", "tanh", "sigmoid", "softmax", "logsoftmax"} <= set(names)
    for name in ("relu", "gelu", "tanh"):
        assert isinstance(nn.get_activation(name), nn.Cell)


@pytest.mark.parametrize("version, ok", [("2.9.0", True), ("2.10.0", True), ("2.10.1rc1", True), ("2.8.0", False),
                                         ("2.7.1.post1", False), ("2.11.0", False), ("3.0.0", False)])
def test_supported_releases_follow_the_requirement(version, ok):
    assert _mindspore.supported(version) is ok


def test_the_installed_mindspore_is_supported_and_others_warn():
    from mindpet._version import MINDSPORE_REQUIREMENT  # pylint: disable=import-outside-toplevel
    assert _mindspore.supported(), f"MindSpore {ms.__version__} is outside {MINDSPORE_REQUIREMENT}"
    expected = f"tested with {re.escape(MINDSPORE_REQUIREMENT)}, but MindSpore 2\\.7\\.0 is installed"
    with pytest.warns(UserWarning, match=expected):
        _mindspore.warn_if_unsupported("2.7.0")


def test_compat_subset_names_existing_tests():
    """``make test-compat`` runs tests/compat_subset.txt on the other MindSpore release: every entry exists."""
    root = Path(__file__).resolve().parent.parent
    lines = [line.split("#")[0].strip() for line in (root / "tests" / "compat_subset.txt").read_text().splitlines()]
    entries = [line for line in lines if line]
    assert len(entries) >= 10
    for entry in entries:
        path, _, test = entry.partition("::")
        source = (root / path).read_text(encoding="utf-8")
        assert not test or re.search(rf"^def {re.escape(test)}\(", source, re.M), entry


class _TwoDraws(nn.Cell):
    def __init__(self):
        super().__init__()
        self.generator = _mindspore.default_generator()

    def construct(self, count):
        return _mindspore.generator_offset(self.generator, count), _mindspore.generator_offset(self.generator, count)


@pytest.mark.parametrize("mode", [ms.GRAPH_MODE, ms.PYNATIVE_MODE], ids=["graph", "pynative"])
def test_generator_offset_gives_each_call_site_its_own_offset(mode):
    from mindpet.kernels import generator_state  # pylint: disable=import-outside-toplevel
    ms.set_context(mode=mode, device_target="CPU")
    try:
        start = generator_state()[1]
        first, second = _TwoDraws()(Tensor(5, ms.int64))
        assert (first.asnumpy().item(), second.asnumpy().item()) == (start, start + 5)
        assert generator_state()[1] == start + 10
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
