"""The command-line tools of ``benchmarks``: one registry, from which come the table that opens
``benchmarks/README.md`` (:func:`markdown_table`) and the list ``python -m benchmarks`` prints (:func:`listing`).
``tests/benchmarks/test_entry_points.py`` checks that the README holds this table and that every tool module
is registered."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Tool:
    """A tool: ``python -m benchmarks.<module> <usage>``, and what it does in one line."""

    module: str
    usage: str
    summary: str

    @property
    def command(self) -> str:
        return f"python -m benchmarks.{self.module}" + (f" {self.usage}" if self.usage else "")


TOOLS: Tuple[Tool, ...] = (
    Tool("suite", "--quick | --full",
         "the classification table: all-MiniLM-L6-v2 fine-tuned on BBC News headlines, one row per method; "
         "`--quick` is the main job (`make bench`)"),
    Tool("lm_suite", "--quick | --full [--jobs 2] [--resume]",
         "the language-model table: SmolLM2-135M, held-out perplexity of zero-shot, prompt, prefix and LoRA on "
         "BBC article text"),
    Tool("quick_lora", "",
         "one LoRA run of MiniLM that also saves the delta checkpoint and checks its reload in a fresh process"),
    Tool("peer", "[--quick]",
         "our LoRA step and forward against PyTorch + Hugging Face PEFT on the same model and batch (needs the "
         "`peer` extra: `make bench-peer`)"),
    Tool("kernel_bench", "[--quick] [--ops norm_act]",
         "the fused kernels against their composed references and `nn.Dense`, forward and train step"),
    Tool("quant_bench", "[--quick] [--m 1,16,256,4096] [--shapes 1024x1024,576x1536]",
         "LoRA on a quantised base (q4_0, nf4, q8_0, q5_0): fused `QuantLoraLinear` forward and train step against the "
         "float32 fused LoRA and the composed dequantise + matmul"),
    Tool("quant_embedding", "[--formats q8_0,q5_0,q5_1,q4_1,q4_0,nf4]",
         "SmolLM2's tied token table re-encoded: bits, the LM row's frozen-base static bytes, error and zero-shot "
         "perplexity with only the table replaced"),
    Tool("merge_bench", "[--quick]",
         "forward time of merged and unmerged `LoRADense` relative to `nn.Dense` (layer and MiniLM-sized model)"),
    Tool("norm_act_step", "",
         "MiniLM train step with its LayerNorms and exact GELU fused vs composed"),
    Tool("step_probe", "[label] | --ab N",
         "the OpenMP wait-policy probe: forward and step times of the plain and LoRA MiniLM under each policy"),
    Tool("peer.lm", "[--reps 3] [--core C] [--output-dir results]",
         "the LM job (SmolLM2-135M LoRA q,v r=8, batch 1 x 256, Adam) against PyTorch + PEFT: peak RSS per phase "
         "and step/forward CPU time side by side (needs the `peer` extra)"),
    Tool("lm_memory_probe", "[--share-block-graph] [--no-release-heap] [--attention-backend composed] "
                            "[--norm-backend composed] [--mlp-backend composed] [--steps 2]",
         "our side of the LM job alone, phase by phase: RSS and peak per phase, to measure one memory lever at a time"),
    Tool("ms_memory_repro", "[--cases transpose,cast,blocks,lazy_inline,shared_dropout,index_tables,embedding_init,compile_heap,recycle]",
         "plain-MindSpore reproductions (no mindpet) of the training-graph memory costs that are MindSpore's own"),
    Tool("attention_step", "[--layers 4] [--reps 5]",
         "LLaMA LoRA train step with the attention core fused vs composed, interleaved"),
    Tool("lm_block_memory", "[--levers composed,rms_norm,swiglu,both] [--blocks 4,8]",
         "peak RSS per frozen LLaMA decoder block at a training step's first call, with the fused RMSNorm / SwiGLU "
         "on or off (one process per case)"),
)


def markdown_table() -> str:
    """The table of :data:`TOOLS` (Markdown, one row a tool, ``|`` escaped inside cells, trailing newline)."""
    rows = ["| command | what it does |", "|---|---|"]
    rows += ["| `" + tool.command.replace("|", "\\|") + f"` | {tool.summary} |" for tool in TOOLS]
    return "\n".join(rows) + "\n"


def listing() -> str:
    """:data:`TOOLS` as plain text for a terminal: each command, then what it does, indented."""
    return "".join(f"{tool.command}\n    {tool.summary.replace('`', '')}\n" for tool in TOOLS)
