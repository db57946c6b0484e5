"""Our side of the peer benchmark: the MindSpore BERT port (:mod:`benchmarks.models.bert`) in GRAPH mode on
CPU, LoRA through mindpet's ``LoRADense`` (the global kernel backend choice, ``auto`` by default: the fused
CPU kernels when the library is built), ``freeze_delta(.., 'lora', exclude=['*head*'])``, Adam.

Four models, each compiled once: the plain classifier and the LoRA classifier in inference mode (forward
timings and the logit check), and one of each wrapped in ``nn.TrainOneStepCell(ClassifierLoss(net), Adam)``
(the cell ``mindspore.train.Model`` builds, without its dataset and callback machinery)."""
from __future__ import annotations

import numpy as np

from benchmarks.peer.common import ModelSetup, extra_weights, load_batch


def configure_threads(threads: int | None) -> None:
    """MindSpore's CPU kernel thread count (once per process; None keeps the default)."""
    if threads:
        import mindspore.device_context as dc

        dc.cpu.op_tuning.threads_num(int(threads))


class OursSide:
    name = "ours"

    def __init__(self, setup: ModelSetup) -> None:
        import mindspore as ms
        from mindspore import nn

        from benchmarks.lib.finetune import PretrainedBert, apply_freeze, build_classifier
        from benchmarks.lib.methods import FullSettings, LoraSettings
        from benchmarks.lib.training import ClassifierLoss

        ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
        ms.set_seed(setup.seed)
        self.setup = setup
        config = setup.config()
        pretrained = PretrainedBert.from_dir(setup.model_dir)
        extra = extra_weights(config, setup)
        lora = LoraSettings(rank=setup.rank, alpha=setup.alpha, dropout=setup.lora_dropout,
                            targets=tuple(setup.targets))

        def make(method):
            net = build_classifier(pretrained, setup.num_classes, method)
            self._set_extra(net, extra)
            return net

        self.plain_eval = make(FullSettings())
        self.plain_eval.set_train(False)
        self.lora_eval = make(lora)
        self.lora_eval.set_train(False)

        full_net = make(FullSettings())
        self.full_step_cell = nn.TrainOneStepCell(
            ClassifierLoss(full_net), nn.Adam(full_net.trainable_params(), learning_rate=setup.lr_full))
        self.full_step_cell.set_train(True)

        lora_net = make(lora)
        apply_freeze(lora_net, lora)
        self.lora_trainable = sum(int(np.prod(p.shape)) for p in lora_net.trainable_params())
        self.lora_step_cell = nn.TrainOneStepCell(
            ClassifierLoss(lora_net), nn.Adam(lora_net.trainable_params(), learning_rate=setup.lr_lora))
        self.lora_step_cell.set_train(True)
        self.lora_backend = getattr(getattr(lora_net.bert.layers[0].attention, setup.targets[0]), "backend", "?")

        batch = load_batch(setup.batch_path)
        self.inputs = tuple(ms.Tensor(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
        self.labels = ms.Tensor(batch["labels"])
        self.cases = {
            "forward": lambda: self.plain_eval(*self.inputs).asnumpy(),
            "lora_forward": lambda: self.lora_eval(*self.inputs).asnumpy(),
            "full_step": lambda: self.full_step_cell(*self.inputs, self.labels).asnumpy(),
            "lora_step": lambda: self.lora_step_cell(*self.inputs, self.labels).asnumpy(),
        }

    @staticmethod
    def _set_extra(net, extra: dict) -> None:
        import mindspore as ms

        params = dict(net.parameters_and_names())
        values = {"head.weight": extra["head_weight"], "head.bias": extra["head_bias"]}
        for (layer, target), (a, b) in extra["lora"].items():
            prefix = f"bert.layers.{layer}.attention.{target}."
            values[prefix + "mindpet_delta_lora_a"] = a
            values[prefix + "mindpet_delta_lora_b"] = b
        for name, value in values.items():
            if name in params:
                params[name].set_data(ms.Tensor(value))
            elif "mindpet_delta_" not in name:
                raise KeyError(f"no parameter {name!r} in the MindSpore classifier")

    def logits(self) -> dict:
        return {"forward": self.cases["forward"]().astype(np.float64),
                "lora_forward": self.cases["lora_forward"]().astype(np.float64)}

    def info(self) -> dict:
        import mindspore as ms

        return {"framework": f"MindSpore {ms.__version__}", "mode": "GRAPH",
                "lora_backend": self.lora_backend, "lora_trainable_parameters": self.lora_trainable}
