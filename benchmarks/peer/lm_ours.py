"""Our side of the LM peer benchmark: :class:`benchmarks.models.llama.LlamaLM` in GRAPH mode on CPU, LoRA by
mindpet's ``LoRADense`` on q and v, ``freeze_delta(net, 'lora')``, ``nn.TrainOneStepCell`` with Adam.

The flow a user should follow (README, "Memory"): the dequantised weights are dropped once loaded, and
``mindpet.utils.memory.release_free_heap()`` returns the freed heap after loading, after compiling each graph
(``Cell.compile`` first, then the trim, then the first run: a compile frees hundreds of MiB of heap that glibc
keeps, and the run's memory would come on top of it) and after the first step.
The forward (eval) is the network itself in inference mode (one compiled graph), the step the training
graph (a second one), as in the LM suite; when the job switches from one to the other it returns the free
heap only: ``release_graph_memory()`` (``mindspore.ms_memory_recycle()``) there made the next run of each
graph set itself up again (26 CPU s for the first forward after training, 48 for the next step) and raised
the job's RSS by ~200 MiB instead of lowering it (issue 15, RESULTS.md)."""
from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import numpy as np

from benchmarks.lib.lm_training import mean_loss_cell
from benchmarks.peer.lm_common import LMSetup, lora_weights


class OursLM:
    name = "ours"

    def __init__(self, setup: LMSetup, threads: int | None) -> None:
        self.setup, self.threads = setup, threads
        self.tensors = self.net = self.step_cell = self._graph = None
        self.batch = np.load(setup.batch_path).astype(np.int32)

    def phase_import(self) -> None:
        import mindspore as ms
        import mindpet  # noqa: F401  (the package's import cost belongs to this phase)
        from benchmarks.peer.ms_side import configure_threads

        ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
        configure_threads(self.threads)
        ms.set_seed(self.setup.seed)

    def phase_read(self) -> None:
        from benchmarks.models import gguf_loader

        reader = gguf_loader._reader(self.setup.gguf_path)  # pylint: disable=protected-access
        self.gconfig = gguf_loader.read_config(reader)
        self.tensors = gguf_loader.dequantized_tensors(reader)
        del reader

    def phase_build(self) -> None:
        import mindspore as ms
        from mindspore import Tensor, nn
        from mindpet.delta import LoRADense
        from mindpet.graph import freeze_delta
        from mindpet.utils.memory import release_free_heap
        from benchmarks.models.llama import LlamaConfig, LlamaLM, default_dense, load_gguf_weights

        s = self.setup
        config = dataclasses.replace(LlamaConfig.from_gguf(self.gconfig, max_positions=self.batch.shape[1]),
                                     attention_backend=s.attention_backend)

        def factory(*, role, layer, in_channels, out_channels):
            if role not in s.targets:
                return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
            return LoRADense(in_channels, out_channels, lora_rank=s.rank, lora_alpha=s.alpha,
                             lora_dropout=s.lora_dropout, has_bias=False, param_init_type=ms.float32,
                             compute_dtype=ms.float32)

        net = LlamaLM(config, factory, share_block_graph=s.share_block_graph, norm_backend=s.norm_backend,
                      mlp_backend=s.mlp_backend)
        load_gguf_weights(net, self.tensors, hf_layout=False)
        self.tensors = None  # the float32 weights now live in the network only
        params = {p.name: p for p in net.get_parameters()}
        d = config.head_dim
        for (layer, target), (a, b) in lora_weights(config.num_layers, config.hidden_size, config.num_heads * d,
                                                    config.num_kv_heads * d, s).items():
            prefix = f"layers.{layer}.attention.{target}_proj."
            params[prefix + "mindpet_delta_lora_a"].set_data(Tensor(a))
            params[prefix + "mindpet_delta_lora_b"].set_data(Tensor(b))
        freeze_delta(net, "lora")
        self.trainable = sum(int(np.prod(p.shape)) for p in net.trainable_params())
        self.net = net
        self.step_cell = nn.TrainOneStepCell(mean_loss_cell()(net),
                                             nn.Adam(net.trainable_params(), learning_rate=s.lr))
        gc.collect()
        if s.release_heap:
            release_free_heap()

    def _switch(self, graph: str) -> None:
        """Return the free heap when the job switches between its two graphs (both stay set up)."""
        from mindpet.utils.memory import release_free_heap

        if self.setup.release_heap and self._graph not in (None, graph):
            release_free_heap()
        self._graph = graph

    def _forward(self, compile_first: bool = False) -> np.ndarray:
        import mindspore as ms

        self._switch("forward")
        self.net.set_train(False)
        x = ms.Tensor(self.batch)
        if compile_first:
            self._compile(self.net, x)
        return self.net(x).asnumpy()

    def _step(self, compile_first: bool = False) -> float:
        import mindspore as ms

        self._switch("step")
        self.net.set_train(True)
        self.step_cell.set_train(True)
        x = ms.Tensor(self.batch)
        if compile_first:
            self._compile(self.step_cell, x)
        return float(self.step_cell(x).asnumpy())

    def _compile(self, cell, x) -> None:
        """Compile ``cell``'s graph for ``x`` (the call after it reuses it), then return the heap the compile
        freed before the first run allocates its runtime memory (issue 15: -200 to -380 MiB of RSS)."""
        from mindpet.utils.memory import release_free_heap

        cell.compile(x)
        if self.setup.release_heap:
            release_free_heap()

    def phase_forward(self) -> None:
        np.save(Path(self.setup.logits_dir) / "ours.npy", self._forward(compile_first=True))

    def phase_first_step(self) -> None:
        from mindpet.utils.memory import release_free_heap

        self.first_loss = self._step(compile_first=True)
        if self.setup.release_heap:
            release_free_heap()

    @property
    def cases(self) -> dict:
        return {"step": self._step, "forward": self._forward}

    def info(self) -> dict:
        import mindspore as ms

        return {"framework": f"MindSpore {ms.__version__} (GRAPH, CPU) + mindpet",
                "lora_trainable_parameters": self.trainable, "first_step_loss": self.first_loss}
