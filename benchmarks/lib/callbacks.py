"""Training callbacks of the benchmark jobs: per-step loss and time, with an optional tqdm bar."""
from __future__ import annotations

import time

import numpy as np
from mindspore.train import Callback
from tqdm import tqdm


class StepRecorder(Callback):
    """Records the loss and wall time of every step; shows them on a tqdm bar when ``progress``."""

    def __init__(self, total_steps: int, progress: bool = True, description: str = "train") -> None:
        super().__init__()
        self.total_steps = total_steps
        self.progress = progress
        self.description = description
        self.losses: list[float] = []
        self.step_seconds: list[float] = []
        self.step_cpu_seconds: list[float] = []
        """Process CPU time (all threads) per step: less sensitive than wall time to other load."""
        self._last_cpu = 0.0
        self._bar: tqdm | None = None
        self._last = 0.0

    def on_train_begin(self, run_context) -> None:
        self._bar = tqdm(total=self.total_steps, desc=self.description, disable=not self.progress,
                         unit="step", dynamic_ncols=True)
        self._last = time.perf_counter()
        self._last_cpu = time.process_time()

    def on_train_step_end(self, run_context) -> None:
        now = time.perf_counter()
        self.step_seconds.append(now - self._last)
        self._last = now
        cpu = time.process_time()
        self.step_cpu_seconds.append(cpu - self._last_cpu)
        self._last_cpu = cpu
        outputs = run_context.original_args().net_outputs
        loss = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        self.losses.append(float(np.asarray(loss.asnumpy()).reshape(-1)[0]))
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{self.losses[-1]:.4f}", refresh=False)
            self._bar.update(1)

    def on_train_end(self, run_context) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def steady_step_seconds(self) -> float:
        """Median step time without the first step (which includes graph compilation)."""
        times = self.step_seconds[1:] or self.step_seconds
        return float(np.median(times)) if times else float("nan")
