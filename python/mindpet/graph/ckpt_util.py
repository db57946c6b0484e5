"""``TrainableParamsCheckPoint``: a training callback that saves only the trainable parameters."""
from __future__ import annotations

import os
import re
import time
import warnings
from typing import Dict, List, Optional, Tuple, Union

from mindspore import Parameter, nn, save_checkpoint
from mindspore.train import Callback, CheckpointConfig

from mindpet.atomic import atomic_write

_CLS = "TrainableParamsCheckPoint"


def _check_directory(directory) -> str:
    if directory is None:
        raise ValueError(f"For '{_CLS}', 'directory' must be a directory path, but got None.")
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"For '{_CLS}', 'directory' must be a str or os.PathLike, "
                        f"but got {type(directory).__name__}.")
    path = os.fspath(directory)
    if not path.strip():
        raise ValueError(f"For '{_CLS}', 'directory' must be a non-empty path, but got {path!r}.")
    if os.path.islink(os.path.normpath(path)):  # normpath: 'link/' must count as the link too
        raise ValueError(f"For '{_CLS}', 'directory' {path!r} is a symbolic link; pass the real directory.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"For '{_CLS}', 'directory' {path!r} exists and is not a directory.")
    return os.path.abspath(path)


def _check_prefix(prefix) -> str:
    if not isinstance(prefix, str):  # a ValueError, as in ModelCheckpoint
        raise ValueError(f"For '{_CLS}', 'prefix' must be a str, but got {type(prefix).__name__}.")
    if not prefix or "/" in prefix or os.sep in prefix:
        raise ValueError(f"For '{_CLS}', 'prefix' must be a non-empty file-name prefix without path "
                         f"separators, but got {prefix!r}.")
    return prefix


def _unique_prefix(directory: str, prefix: str) -> str:
    """``prefix``, or ``prefix_N`` if checkpoints of that prefix already exist (as ModelCheckpoint does)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(?:_(\d+))?-\d+_\d+\.(?:ckpt|safetensors)$")
    highest = -1
    for name in os.listdir(directory):
        match = pattern.match(name)
        if match:
            highest = max(highest, int(match.group(1) or 0))
    return prefix if highest < 0 else f"{prefix}_{highest + 1}"


def _unique(params) -> List[Parameter]:
    seen, out = set(), []
    for param in params:
        if id(param) not in seen:
            seen.add(id(param))
            out.append(param)
    return out


def network_weights(network: nn.Cell) -> List[Parameter]:
    """The model weights inside ``network``: training wrappers and optimizer state removed.

    ``nn.TrainOneStepCell`` wrappers (and subclasses, e.g. the loss-scale cell) are stripped through
    their public ``network`` attribute; inside the rest, the state of any ``nn.Optimizer`` sub-cell
    (moments, ``global_step``, ``learning_rate``, beta powers, ...) is excluded. Loss wrappers such
    as ``nn.WithLossCell`` do not rename parameters, so names are those of the user's network.
    """
    while isinstance(network, nn.TrainOneStepCell):
        network = network.network
    state_ids = set()
    for _, cell in network.cells_and_names():
        if isinstance(cell, nn.Optimizer):
            trained = {id(p) for p in cell.parameters}
            state_ids.update(id(p) for p in cell.get_parameters() if id(p) not in trained)
    return [p for p in _unique(network.get_parameters()) if id(p) not in state_ids]


class TrainableParamsCheckPoint(Callback):
    """Save only the trainable (``requires_grad=True``) weights while training with ``Model.train``.

    A drop-in replacement for ``ModelCheckpoint``: files are ``{prefix}-{epoch}_{step}.{format}``
    (``step`` counted within the epoch) in ``directory``, keyed by parameter name exactly as
    ``ModelCheckpoint`` would key them, so they load back with ``load_param_into_net`` or
    :func:`mindpet.graph.load_pretrained_and_delta`. ``config`` is honoured for
    ``save_checkpoint_steps`` / ``save_checkpoint_seconds``, ``keep_checkpoint_max`` /
    ``keep_checkpoint_per_n_minutes`` (oldest files of this callback deleted first),
    ``format`` (``'ckpt'`` or ``'safetensors'``), ``saved_network``, ``append_info``, ``enc_key`` /
    ``enc_mode``, ``crc_check`` and ``integrated_save``. ``async_save`` is ignored with a warning
    (saves are synchronous so that each one is atomic); ``exception_save``, ``remove_redundancy``
    and incremental map-parameter saving are not supported and ignored. A last checkpoint is written at the end of training
    if the last step was not saved. If ``directory`` already holds checkpoints of ``prefix``, the
    prefix becomes ``prefix_N`` (as in ``ModelCheckpoint``); see :attr:`prefix`.

    Each write goes to a scratch file in the same directory, is fsynced and renamed over the
    final name, so a crash mid-save never leaves a truncated file under the final name.

    Args:
        directory: where to write; created if missing. Must not be a symbolic link.
        prefix: file-name prefix.
        config: a ``mindspore.train.CheckpointConfig``; default ``CheckpointConfig()``.
        save_optimizer_state: if True, also save every parameter of the training cell that is not a
            network weight (optimizer moments, ``global_step``, ``learning_rate``, beta powers, loss
            scale), for resuming. Default False: the delta weights only.

    Raises:
        ValueError: ``directory`` None, empty, a symbolic link or an existing non-directory;
            ``prefix`` not a str, empty or holding a path separator.
        TypeError: ``config`` not a ``CheckpointConfig``; ``save_optimizer_state`` not a bool.
    """

    def __init__(self, directory: Union[str, os.PathLike], prefix: str = "DELTA_CKP",
                 config: Optional[CheckpointConfig] = None, save_optimizer_state: bool = False):
        super().__init__()
        path = _check_directory(directory)
        prefix = _check_prefix(prefix)
        if config is None:
            config = CheckpointConfig()
        elif not isinstance(config, CheckpointConfig):
            raise TypeError(f"For '{_CLS}', 'config' must be a mindspore.train.CheckpointConfig or None, "
                            f"but got {type(config).__name__}.")
        if not isinstance(save_optimizer_state, bool):
            raise TypeError(f"For '{_CLS}', 'save_optimizer_state' must be a bool, "
                            f"but got {type(save_optimizer_state).__name__}.")
        if config.format not in ("ckpt", "safetensors"):
            raise ValueError(f"For '{_CLS}', config.format must be 'ckpt' or 'safetensors', "
                             f"but got {config.format!r}.")
        if config.async_save:
            warnings.warn(f"{_CLS} ignores CheckpointConfig(async_save=...): it saves synchronously so that "
                          f"every checkpoint is written atomically.", stacklevel=2)
        os.makedirs(path, exist_ok=True)
        self._directory = path
        self._prefix = _unique_prefix(path, prefix)
        self._config = config
        self._save_optimizer_state = save_optimizer_state
        self._files: List[Tuple[str, float]] = []
        self._last_step = 0
        self._last_time = time.time()
        self._latest: Optional[str] = None

    @property
    def directory(self) -> str:
        """Absolute path of the checkpoint directory."""
        return self._directory

    @property
    def prefix(self) -> str:
        """The file-name prefix actually used (``prefix_N`` if ``prefix`` was taken)."""
        return self._prefix

    @property
    def latest_ckpt_file_name(self) -> Optional[str]:
        """Path of the last checkpoint written, or None."""
        return self._latest

    @property
    def saved_files(self) -> List[str]:
        """Checkpoints written by this callback and still kept, oldest first."""
        return [path for path, _ in self._files]

    def on_train_begin(self, run_context) -> None:
        cb_params = run_context.original_args()
        self._last_step = int(getattr(cb_params, "cur_step_num", 0) or 0)
        self._last_time = time.time()

    def on_train_step_end(self, run_context) -> None:
        cb_params = run_context.original_args()
        step = cb_params.cur_step_num
        if step != self._last_step and self._due(step):
            self._save(cb_params)

    def on_train_end(self, run_context) -> None:
        cb_params = run_context.original_args()
        if cb_params.cur_step_num != self._last_step:
            self._save(cb_params)

    def _due(self, step: int) -> bool:
        steps = self._config.save_checkpoint_steps
        if steps and steps > 0:
            return step >= self._last_step + steps
        seconds = self._config.save_checkpoint_seconds
        if seconds and seconds > 0:
            return time.time() - self._last_time > seconds
        return False

    def select_parameters(self, train_network: nn.Cell) -> List[Parameter]:
        """The parameters a checkpoint of ``train_network`` holds, in network order.

        The trainable weights of ``config.saved_network`` if set, else of ``train_network`` with
        wrappers and optimizer state removed (see :func:`network_weights`); plus, with
        ``save_optimizer_state``, every other parameter of ``train_network``.
        """
        source = self._config.saved_network if self._config.saved_network is not None else train_network
        weights = network_weights(source)
        chosen = [p for p in weights if p.requires_grad]
        if self._save_optimizer_state:
            weight_ids = {id(p) for p in weights}
            chosen += [p for p in _unique(train_network.get_parameters()) if id(p) not in weight_ids]
        return chosen

    def _append_dict(self, cb_params) -> Optional[Dict]:
        base = self._config.append_dict
        if not base:
            return None
        extra = dict(base)
        if "epoch_num" in extra:
            extra["epoch_num"] = cb_params.cur_epoch_num
        if "step_num" in extra:
            extra["step_num"] = cb_params.cur_step_num
        return extra

    def _save(self, cb_params) -> None:
        step = cb_params.cur_step_num
        step_in_epoch = int((step - 1) % cb_params.batch_num + 1)
        fmt = self._config.format
        path = os.path.join(self._directory, f"{self._prefix}-{cb_params.cur_epoch_num}_{step_in_epoch}.{fmt}")
        items = [{"name": p.name, "data": p} for p in self.select_parameters(cb_params.train_network)]
        append = self._append_dict(cb_params)
        config = self._config

        def _write(tmp_path: str) -> None:
            save_checkpoint(items, tmp_path, integrated_save=config.integrated_save, async_save=False,
                            append_dict=append, enc_key=config.enc_key, enc_mode=config.enc_mode,
                            crc_check=config.crc_check, format=fmt)

        atomic_write(path, _write)
        now = time.time()
        self._last_step, self._last_time, self._latest = step, now, path
        self._files = [entry for entry in self._files if entry[0] != path] + [(path, now)]
        self._rotate(now)

    def _rotate(self, now: float) -> None:
        """Delete this callback's oldest files beyond the keep policy (never the newest)."""
        keep_max = self._config.keep_checkpoint_max
        per_minutes = self._config.keep_checkpoint_per_n_minutes
        doomed: List[Tuple[str, float]] = []
        if keep_max and keep_max > 0:
            doomed = self._files[:-keep_max] if len(self._files) > keep_max else []
        elif per_minutes and per_minutes > 0:
            recent = [e for e in self._files[:-1] if now - e[1] < per_minutes * 60]
            doomed = recent[1:]  # keep the oldest file of the current window, and the newest
        for entry in doomed:
            try:
                os.remove(entry[0])
            except FileNotFoundError:
                pass
            self._files.remove(entry)
