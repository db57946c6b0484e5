"""Their side of the peer benchmark: PyTorch (CPU, eager), a transformers ``BertModel`` built from the same
``config.json`` (no hub access: ``HF_HUB_OFFLINE=1``) with the same ``model.safetensors``, the same mean
pooling, dropout and linear head as our classifier, LoRA by PEFT (``LoraConfig(r, lora_alpha,
lora_dropout, target_modules=[query, value], modules_to_save=[head])``), ``torch.optim.Adam``.

Four models, as on our side: plain and LoRA in ``eval()`` under ``torch.inference_mode()`` for the forward,
and one of each in ``train()`` for the steps (``zero_grad``, forward, cross-entropy, backward, ``step``)."""
from __future__ import annotations

import numpy as np

from benchmarks.peer.common import ModelSetup, extra_weights, load_batch

HF_IGNORED_PREFIXES = ("pooler.", "embeddings.position_ids")


def configure_threads(threads: int | None) -> None:
    """PyTorch's intra- and inter-op thread counts (None keeps the defaults)."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
        try:
            torch.set_num_interop_threads(int(threads))
        except RuntimeError:  # already set, or inter-op work already started
            pass


def _classifier_class():
    import torch

    class TorchBertClassifier(torch.nn.Module):
        """``BertModel`` (no pooler) -> mean over real tokens -> dropout -> ``head``: our BertClassifier."""

        def __init__(self, config, num_classes: int) -> None:
            super().__init__()
            from transformers import BertModel

            self.bert = BertModel(config, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(config.hidden_dropout_prob)
            self.head = torch.nn.Linear(config.hidden_size, num_classes)

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return self.head(self.dropout(pooled))

    return TorchBertClassifier


class TheirsSide:
    name = "theirs"

    def __init__(self, setup: ModelSetup) -> None:
        import torch
        import transformers
        from peft import LoraConfig, get_peft_model
        from safetensors.torch import load_file

        torch.manual_seed(setup.seed)
        self.setup = setup
        config_dict = setup.config()
        config = transformers.BertConfig(**{k: v for k, v in config_dict.items() if not k.startswith("_")})
        state = {k: v for k, v in load_file(f"{setup.model_dir}/model.safetensors").items()
                 if not k.startswith(HF_IGNORED_PREFIXES)}
        state = {k[len("bert."):] if k.startswith("bert.") else k: v for k, v in state.items()}
        extra = extra_weights(config_dict, setup)
        classifier_cls = _classifier_class()

        def plain():
            net = classifier_cls(config, setup.num_classes)
            result = net.bert.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(f"loading {setup.model_dir} into BertModel: missing {result.missing_keys}, "
                                 f"unexpected {result.unexpected_keys}")
            with torch.no_grad():
                net.head.weight.copy_(torch.from_numpy(extra["head_weight"]))
                net.head.bias.copy_(torch.from_numpy(extra["head_bias"]))
            return net

        def with_lora():
            net = get_peft_model(plain(), LoraConfig(
                r=setup.rank, lora_alpha=setup.alpha, lora_dropout=setup.lora_dropout,
                target_modules=list(setup.targets), modules_to_save=["head"], bias="none"))
            params = dict(net.named_parameters())
            with torch.no_grad():
                for (layer, target), (a, b) in extra["lora"].items():
                    prefix = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{target}."
                    params[prefix + "lora_A.default.weight"].copy_(torch.from_numpy(a))
                    params[prefix + "lora_B.default.weight"].copy_(torch.from_numpy(b))
            return net

        self.plain_eval = plain().eval()
        self.lora_eval = with_lora().eval()
        self.full_net = plain().train()
        self.full_opt = torch.optim.Adam(self.full_net.parameters(), lr=setup.lr_full)
        self.lora_net = with_lora().train()
        trainable = [p for p in self.lora_net.parameters() if p.requires_grad]
        self.lora_trainable = sum(p.numel() for p in trainable)
        self.lora_opt = torch.optim.Adam(trainable, lr=setup.lr_lora)
        self.attn_implementation = getattr(self.plain_eval.bert.config, "_attn_implementation", "?")

        batch = load_batch(setup.batch_path)
        self.inputs = {k: torch.from_numpy(batch[k].astype(np.int64))
                       for k in ("input_ids", "attention_mask", "token_type_ids")}
        self.labels = torch.from_numpy(batch["labels"].astype(np.int64))
        self.loss = torch.nn.CrossEntropyLoss()

        def forward(net):
            with torch.inference_mode():
                return net(**self.inputs).numpy()

        def step(net, opt):
            opt.zero_grad(set_to_none=True)
            loss = self.loss(net(**self.inputs), self.labels)
            loss.backward()
            opt.step()
            return loss.item()

        self.cases = {
            "forward": lambda: forward(self.plain_eval),
            "lora_forward": lambda: forward(self.lora_eval),
            "full_step": lambda: step(self.full_net, self.full_opt),
            "lora_step": lambda: step(self.lora_net, self.lora_opt),
        }

    def logits(self) -> dict:
        return {"forward": self.cases["forward"]().astype(np.float64),
                "lora_forward": self.cases["lora_forward"]().astype(np.float64)}

    def info(self) -> dict:
        import peft
        import torch
        import transformers

        return {"framework": f"PyTorch {torch.__version__}, transformers {transformers.__version__}, "
                             f"peft {peft.__version__}",
                "mode": "eager", "attn_implementation": self.attn_implementation,
                "lora_trainable_parameters": self.lora_trainable,
                "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
