"""freeze_modules and freeze_delta: the matching rules as a table, and every rejected call changes nothing."""
import pytest

from mindpet.graph import FreezeResult, freeze_delta, freeze_modules


def both(suffix):
    return [f"encoder.0.{suffix}", f"encoder.1.{suffix}"]


LORA = both("mindpet_delta_lora_a") + both("mindpet_delta_lora_b")
ADAPTER = both("adapter.mindpet_delta_adapter_down_weight") + both("adapter.mindpet_delta_adapter_up_weight")
LOW_RANK = both("low_rank.mindpet_delta_low_rank_adapter_u") + both("low_rank.mindpet_delta_low_rank_adapter_v")
BIASES = both("dense.bias") + both("norm.beta") + ["head.bias"]
HEAD = ["head.weight", "head.bias"]


def ordered(names, all_names):
    return [n for n in all_names if n in set(names)]


# (include, exclude, names initially frozen, expected frozen, expected unfrozen)
MODULE_CASES = {
    "include only": (["encoder.*.weight"], None, [], both("dense.weight"), []),
    "exclude only": (None, ["head.*"], "all", [], HEAD),
    "exact name": (["head.bias"], None, [], ["head.bias"], []),
    "star crosses dots": (["encoder*bias"], None, [], both("dense.bias"), []),
    "question mark and set": (["encoder.?.norm.gamma", "encoder.[1].dense.weight"], None, [],
                              both("norm.gamma") + ["encoder.1.dense.weight"], []),
    # encoder.0.norm.* is matched by both -> unchanged (gamma stays frozen, beta stays trainable);
    # encoder.1.norm.gamma by exclude only -> unfrozen.
    "include and exclude": (["encoder.0.*"], ["*norm*"], both("norm.gamma"),
                            [n for n in [f"encoder.0.{s}" for s in
                                         ["mindpet_delta_lora_a", "mindpet_delta_lora_b", "dense.weight",
                                          "dense.bias", "adapter.mindpet_delta_adapter_down_weight",
                                          "adapter.mindpet_delta_adapter_up_weight",
                                          "low_rank.mindpet_delta_low_rank_adapter_u",
                                          "low_rank.mindpet_delta_low_rank_adapter_v"]]],
                            ["encoder.1.norm.gamma"]),
    "already in target state": (["head.*"], None, HEAD, [], []),
    # the pattern language of inject: 're:' + a regular expression matched against the full name
    "regular expression": (["re:encoder\\.[01]\\.dense\\.(weight|bias)"], None, [],
                           both("dense.weight") + both("dense.bias"), []),
}


@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_freeze_modules_rules(case, toy_net, all_names, snapshot):
    include, exclude, initially_frozen, frozen, unfrozen = MODULE_CASES[case]
    net = toy_net()
    start = all_names if initially_frozen == "all" else initially_frozen
    for name, param in net.parameters_and_names():
        param.requires_grad = name not in start
    before = snapshot(net)
    result = freeze_modules(net, include=include, exclude=exclude)
    assert isinstance(result, FreezeResult)
    assert result.frozen == ordered(frozen, all_names)
    assert result.unfrozen == ordered(unfrozen, all_names)
    after = snapshot(net)
    expected = dict(before, **{n: False for n in frozen}, **{n: True for n in unfrozen})
    assert after == expected


# (mode, include, exclude, expected trainable afterwards)
DELTA_CASES = {
    "LoRA mixed case": ("LoRA", None, None, LORA),
    "lora keeps head": ("lora", None, ["*head*"], LORA + HEAD),
    "lora, include on top": ("lora", ["encoder.1.*"], None, both("mindpet_delta_lora_a")[:1]
                             + both("mindpet_delta_lora_b")[:1]),
    "adapter is not low_rank_adapter": ("adapter", None, None, ADAPTER),
    "low_rank_adapter": ("low_rank_adapter", None, None, LOW_RANK),
    "bitfit: biases and LayerNorm betas": ("bitfit", None, None, BIASES),
    "bitfit keeps head": ("BitFit", None, ["*head*"], BIASES + ["head.weight"]),
    "prefix alias": ("prefix", None, None, ["mindpet_delta_prefixtuning_key"]),
    "prefixtuning": ("PrefixTuning", None, None, ["mindpet_delta_prefixtuning_key"]),
}


@pytest.mark.parametrize("case", list(DELTA_CASES))
def test_freeze_delta_rules(case, toy_net, all_names, snapshot):
    mode, include, exclude, trainable = DELTA_CASES[case]
    net = toy_net()
    result = freeze_delta(net, mode, include=include, exclude=exclude)
    expected = {n: n in trainable for n in all_names}
    assert snapshot(net) == expected
    assert result.frozen == [n for n in all_names if n not in trainable]
    assert result.unfrozen == []


def test_freeze_delta_unfreezes_delta_frozen_earlier(toy_net, all_names, snapshot):
    net = toy_net()
    freeze_modules(net, include=["*"])
    assert not any(snapshot(net).values())
    result = freeze_delta(net, "lora", exclude=["head.weight"])
    assert result.frozen == []
    assert result.unfrozen == ordered(LORA + ["head.weight"], all_names)
    assert [n for n, t in snapshot(net).items() if t] == result.unfrozen


class _Plain:
    pass


def _bias_free_net():
    from mindspore import nn
    return nn.SequentialCell([nn.Dense(4, 4, has_bias=False), nn.Dense(4, 2, has_bias=False)])


# (call, exception type, words the message must contain)
BAD_CALLS = {
    "model not a Cell": (lambda net: freeze_modules(_Plain(), include=["*"]), TypeError, ["model", "Cell"]),
    "both None": (lambda net: freeze_modules(net), ValueError, ["include", "exclude"]),
    "include a str": (lambda net: freeze_modules(net, include="head.*"), TypeError, ["include", "list"]),
    "empty list": (lambda net: freeze_modules(net, exclude=[]), TypeError, ["exclude", "empty"]),
    "bad list item": (lambda net: freeze_modules(net, include=["head.*"], exclude=["*norm*", 3]), TypeError,
                      ["exclude[1]", "3"]),
    "pattern matches nothing": (lambda net: freeze_modules(net, include=["head.*", "decoder.*"]), ValueError,
                                ["decoder.*"]),
    "exact pattern is not a prefix": (lambda net: freeze_modules(net, include=["head.bia"]), ValueError,
                                      ["head.bia"]),
    "case-sensitive": (lambda net: freeze_modules(net, exclude=["HEAD.*"]), ValueError, ["HEAD.*"]),
    "delta: model not a Cell": (lambda net: freeze_delta(_Plain(), "lora"), TypeError, ["model"]),
    "delta: mode not a str": (lambda net: freeze_delta(net, 1), TypeError, ["mode"]),
    "delta: unknown mode": (lambda net: freeze_delta(net, "loraa"), ValueError,
                            ["loraa", "lora", "prefixtuning", "adapter", "low_rank_adapter", "bitfit",
                             "prompttuning", "ptuning2"]),
    "delta: no parameter of the mode": (lambda net: freeze_delta(net, "prompttuning"), ValueError,
                                        ["mindpet_delta_prompttuning"]),
    "delta: bad exclude item": (lambda net: freeze_delta(net, "lora", exclude=[None]), TypeError, ["exclude[0]"]),
    "delta: exclude matches nothing": (lambda net: freeze_delta(net, "lora", exclude=["*classifier*"]),
                                       ValueError, ["*classifier*"]),
    "delta: include a tuple": (lambda net: freeze_delta(net, "lora", include=("head.*",)), TypeError,
                               ["include"]),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_rejected_calls_change_nothing(case, toy_net, snapshot):
    call, error, words = BAD_CALLS[case]
    net = toy_net()
    net.head.weight.requires_grad = False  # a mixed starting state
    before = snapshot(net)
    with pytest.raises(error) as info:
        call(net)
    for word in words:
        assert word in str(info.value)
    assert snapshot(net) == before


def test_bitfit_without_biases_is_an_error(snapshot):
    net = _bias_free_net()
    before = snapshot(net)
    with pytest.raises(ValueError, match="bias"):
        freeze_delta(net, "bitfit")
    assert snapshot(net) == before
