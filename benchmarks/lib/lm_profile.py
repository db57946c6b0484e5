"""What a language-model run is: the methods, the hyper-parameters of a profile, the seeds of each profile."""
from __future__ import annotations

from dataclasses import dataclass

METHODS = ("zero_shot", "prompt", "prefix", "lora")  # the default table
# LoRA (q/v, same hyper-parameters) on a quantised frozen base (issue 16): every projection a QuantizedDense.
# lora_q4: the GGUF's own Q4_1 blocks; lora_q8: each re-encoded to q8_0 (one tensor at a time).
QUANT_METHODS = ("lora_q4", "lora_q8")
ALL_METHODS = METHODS + QUANT_METHODS
# lora_q4's tied embedding (Profile.q4_embedding): q8_0 as the GGUF stores it, or re-encoded. q5_0 (5.5 bits) is
# the default: the only one that brings the frozen base to <= 0.16x float32 within 3 % of the float base's
# perplexity (q4_*/nf4: 0.156x but ~1.06x the perplexity; q5_1: 6 bits, 0.163x). RESULTS.md, issue 16.
Q4_EMBEDDING_FORMATS = ("q5_0", "q8_0", "q5_1", "q4_1", "q4_0", "nf4")
# Built with one compiled decoder-block graph (SharedLlamaBlock) unless Profile.share_block_graph is False:
# the LoRA methods (their dropout masks come from MindSpore's generator; prefix tuning cannot share the graph)
SHARED_BLOCK_METHODS = ("lora",) + QUANT_METHODS


@dataclass(frozen=True)
class Profile:
    seq_len: int = 256
    batch_size: int = 1
    steps: int = 30
    heldout_chunks: int = 8
    prompt_tokens: int = 20
    prefix_tokens: int = 10
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lr_prompt: float = 3e-2
    lr_prefix: float = 1e-2
    lr_lora: float = 2e-3
    warmup_fraction: float = 0.1
    seed: int = 0
    q4_embedding: str = "q5_0"  # lora_q4's tied embedding: "q8_0" (as the GGUF stores it) or a re-encoding
    share_block_graph: bool = True  # SHARED_BLOCK_METHODS with one compiled block graph (--no-share-block-graph)

    def shares_block_graph(self, method: str) -> bool:
        """Whether ``method``'s model is built with one shared decoder-block graph."""
        return self.share_block_graph and method in SHARED_BLOCK_METHODS

    def learning_rate(self, method: str) -> float:
        return {"prompt": self.lr_prompt, "prefix": self.lr_prefix, "lora": self.lr_lora, "lora_q4": self.lr_lora,
                "lora_q8": self.lr_lora}.get(method, 0.0)


PROFILES = {"quick": Profile(), "full": Profile(batch_size=1, steps=200, heldout_chunks=64)}
# Training seeds per profile (data order, LoRA init and dropout). zero_shot has no randomness: one run.
SEEDS = {"quick": (0,), "full": (0, 1, 2)}
