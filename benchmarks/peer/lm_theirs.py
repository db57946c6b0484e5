"""Their side of the LM peer benchmark: PyTorch (CPU, eager), ``transformers.LlamaForCausalLM`` built from
the GGUF's hyper-parameters with the same dequantised weights (Q/K un-permuted to the HF layout), LoRA by
PEFT (``LoraConfig(r, lora_alpha, lora_dropout, target_modules=["q_proj", "v_proj"])``),
``torch.optim.Adam`` on the trainable parameters, the same mean next-token cross-entropy.

The usual PyTorch flow: the numpy weights are dropped once copied in; nothing returns freed heap."""
from __future__ import annotations

import gc
from pathlib import Path

import numpy as np

from benchmarks.peer.lm_common import LMSetup, hf_name, lora_weights


class TheirsLM:
    name = "theirs"

    def __init__(self, setup: LMSetup, threads: int | None) -> None:
        self.setup, self.threads = setup, threads
        self.tensors = self.model = self.optimizer = None
        self.batch = np.load(setup.batch_path).astype(np.int64)

    def phase_import(self) -> None:
        import torch
        import transformers  # noqa: F401
        import peft  # noqa: F401

        if self.threads:
            torch.set_num_threads(int(self.threads))
            try:
                torch.set_num_interop_threads(int(self.threads))
            except RuntimeError:
                pass
        torch.manual_seed(self.setup.seed)

    def phase_read(self) -> None:
        from benchmarks.models import gguf_loader

        reader = gguf_loader._reader(self.setup.gguf_path)  # pylint: disable=protected-access
        self.gconfig = gguf_loader.read_config(reader)
        self.tensors = gguf_loader.unpermute_qk(gguf_loader.dequantized_tensors(reader), self.gconfig)
        del reader

    def phase_build(self) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaConfig, LlamaForCausalLM

        g, s = self.gconfig, self.setup
        config = LlamaConfig(vocab_size=g.vocab_size, hidden_size=g.hidden_size,
                             intermediate_size=g.intermediate_size, num_hidden_layers=g.num_layers,
                             num_attention_heads=g.num_heads, num_key_value_heads=g.num_kv_heads,
                             head_dim=g.head_dim, rms_norm_eps=g.rms_eps, max_position_embeddings=g.context_length,
                             rope_theta=g.rope_theta, tie_word_embeddings=g.tie_embeddings, hidden_act="silu",
                             attention_bias=False, mlp_bias=False, bos_token_id=g.bos_token_id,
                             eos_token_id=g.eos_token_id)
        if getattr(config, "rope_parameters", None) is not None:  # transformers 5: the rope settings' home
            config.rope_parameters = {"rope_type": "default", "rope_theta": g.rope_theta}
        model = LlamaForCausalLM(config)
        state = {hf_name(k): torch.from_numpy(v) for k, v in self.tensors.items()}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if k != "lm_head.weight"]
        if missing or result.unexpected_keys:
            raise ValueError(f"loading the GGUF into LlamaForCausalLM: missing {missing}, "
                             f"unexpected {result.unexpected_keys}")
        if g.tie_embeddings:
            model.tie_weights()
        del state
        self.tensors = None
        model = get_peft_model(model, LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.lora_dropout,
                                                 target_modules=[f"{t}_proj" for t in s.targets], bias="none"))
        params = dict(model.named_parameters())
        d = g.head_dim
        with torch.no_grad():
            for (layer, target), (a, b) in lora_weights(g.num_layers, g.hidden_size, g.num_heads * d,
                                                        g.num_kv_heads * d, s).items():
                prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}_proj."
                params[prefix + "lora_A.default.weight"].copy_(torch.from_numpy(a))
                params[prefix + "lora_B.default.weight"].copy_(torch.from_numpy(b))
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in trainable)
        self.optimizer = torch.optim.Adam(trainable, lr=s.lr)
        self.model = model
        self.input_ids = torch.from_numpy(self.batch)
        self.attn_implementation = getattr(model.config, "_attn_implementation", "?")
        gc.collect()

    def _forward(self) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.inference_mode():
            return self.model(input_ids=self.input_ids).logits.numpy()

    def _step(self) -> float:
        import torch

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(input_ids=self.input_ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 self.input_ids[:, 1:].reshape(-1))
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def phase_forward(self) -> None:
        np.save(Path(self.setup.logits_dir) / "theirs.npy", self._forward())

    def phase_first_step(self) -> None:
        self.first_loss = self._step()

    @property
    def cases(self) -> dict:
        return {"step": self._step, "forward": self._forward}

    def info(self) -> dict:
        import peft
        import torch
        import transformers

        return {"framework": f"PyTorch {torch.__version__}, transformers {transformers.__version__}, "
                             f"peft {peft.__version__} (eager, CPU)",
                "attn_implementation": self.attn_implementation,
                "lora_trainable_parameters": self.trainable, "first_step_loss": self.first_loss,
                "torch_threads": torch.get_num_threads()}
