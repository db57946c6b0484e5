"""A real PEFT LoRA adapter for the tests: made by ``peft`` itself on a tiny Hugging Face ``BertModel``.

    python tests/integration/peft_fixture.py      # needs torch, transformers, peft (not installed in CI)

writes ``data/peft_tiny_bert/`` next to this file: ``adapter_config.json`` and ``adapter_model.safetensors``
from ``PeftModel.save_pretrained`` (LoRA r=2, alpha 4 on query, value and every ``output.dense``;
``rank_pattern``/``alpha_pattern`` give ``encoder.layer.1.attention.self.value`` r=3, alpha 9; random
non-zero B), and ``expected.npy``, the adapted model's ``last_hidden_state`` for :func:`input_ids`.
The base weights are not stored: :func:`base_state` makes them with numpy, here and in the test.
Made with torch 2.13.0, transformers 5.24.0, peft 0.21.2.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "peft_tiny_bert")
HIDDEN, LAYERS, HEADS, INTER, VOCAB, POSITIONS = 16, 2, 2, 32, 40, 16


def base_state() -> Dict[str, np.ndarray]:
    """Deterministic float32 weights of the tiny BertModel, by Hugging Face name."""
    shapes = {"embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
              "embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
              "embeddings.token_type_embeddings.weight": (2, HIDDEN),
              "embeddings.LayerNorm.weight": (HIDDEN,), "embeddings.LayerNorm.bias": (HIDDEN,)}
    for layer in range(LAYERS):
        p = f"encoder.layer.{layer}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (HIDDEN, HIDDEN), (HIDDEN,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (INTER, HIDDEN), (INTER,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (HIDDEN, INTER), (HIDDEN,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (HIDDEN,), (HIDDEN,)
    rng = np.random.default_rng(0)
    state = {}
    for name, shape in shapes.items():
        value = rng.standard_normal(shape) * 0.2
        if "LayerNorm.weight" in name:
            value = 1.0 + 0.5 * value
        state[name] = value.astype(np.float32)
    return state


def input_ids() -> np.ndarray:
    return np.random.default_rng(5).integers(0, VOCAB, (2, 6)).astype(np.int64)


def main() -> None:  # pragma: no cover  (needs torch and peft)
    import torch  # pylint: disable=import-outside-toplevel
    from peft import LoraConfig, get_peft_model  # pylint: disable=import-outside-toplevel
    from transformers import BertConfig, BertModel  # pylint: disable=import-outside-toplevel

    config = BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=INTER, hidden_act="gelu", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, max_position_embeddings=POSITIONS, type_vocab_size=2)
    model = BertModel(config, add_pooling_layer=False).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in base_state().items()}, strict=False)
    lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["query", "value", "output.dense"],
                      rank_pattern={"encoder.layer.1.attention.self.value": 3},
                      alpha_pattern={"encoder.layer.1.attention.self.value": 9})
    peft_model = get_peft_model(model, lora)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    peft_model.eval()
    ids = torch.from_numpy(input_ids())
    with torch.no_grad():
        hidden = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.numpy()
    os.makedirs(DATA, exist_ok=True)
    peft_model.save_pretrained(DATA)
    readme = os.path.join(DATA, "README.md")  # a model card template: not part of the format
    if os.path.exists(readme):
        os.remove(readme)
    np.save(os.path.join(DATA, "expected.npy"), hidden.astype(np.float32))


if __name__ == "__main__":
    main()
