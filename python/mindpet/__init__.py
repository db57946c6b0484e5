"""mindpet: parameter-efficient fine-tuning (delta tuning) for MindSpore, with fused kernels.

Sub-packages:
    mindpet.delta   the delta layers (LoRA, Prefix-Tuning, Adapter, Low-Rank Adapter, R-Drop, Prompt-Tuning)
    mindpet.graph   freezing by delta mode or wildcard, trainable-only checkpoints, evaluation loading

Top-level functions:
    inject                          replace Linear-like cells selected by path patterns with delta layers
    register_linear, LinearAdapter  make another Linear-like Cell class targetable by inject
    merge_lora, unmerge_lora,
    merge_and_unload                fold LoRA into the weights for inference (and back), or drop it
    save_delta, load_delta          the delta parameters as safetensors + a versioned JSON config
    export_peft, import_peft        LoRA in Hugging Face PEFT's adapter format
"""
from mindpet._version import __version__
from mindpet.inject import inject
from mindpet.merge import merge_and_unload, merge_lora, unmerge_lora
from mindpet.delta_io import DeltaLoadReport, load_delta, save_delta
from mindpet.peft_io import PeftImportReport, export_peft, import_peft
from mindpet.linear_adapters import LinearAdapter, register_linear

__all__ = ["__version__", "inject", "merge_lora", "unmerge_lora", "merge_and_unload", "save_delta",
           "load_delta", "DeltaLoadReport", "export_peft", "import_peft", "PeftImportReport",
           "register_linear", "LinearAdapter"]
