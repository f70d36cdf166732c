"""What the trainer does besides the training step: atomic checkpoint writes, the weight
average that keeps the raw weights in every checkpoint, and the training curves picture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EMAWeightAveraging

from speechrnn.core.atomic import atomic_save
from speechrnn.evaluation.report import write_curves


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes to a temp file and renames it, so a kill
    during a save leaves the previous good checkpoint, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(path, lambda tmp: torch.save(checkpoint, tmp))


class EMAWeightAverage(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, with the average copied into the model when fit ends
    rather than when training ends, so every checkpoint keeps the raw weights to resume from.

    Lightning's callback copies the average into the model in ``on_train_end``, and Lightning
    runs the ``ModelCheckpoint`` callbacks after all others. A ``ModelCheckpoint`` with
    ``save_last`` that has saved nothing yet writes ``last.ckpt`` in its own ``on_train_end``:
    here the step checkpoint of a run shorter than ``every_n_train_steps``. That ``last.ckpt``
    stored the average as the raw weights too (``current_model_state``, which
    ``on_load_checkpoint`` puts back into the model), so a continued run went on from the
    average. ``on_fit_end`` comes after every callback's ``on_train_end``: the model holds the
    raw weights while those checkpoints are written, and the average once ``fit`` returns.

    Args:
        **kwargs: ``EMAWeightAveraging``'s (``decay``, ``update_every_n_steps``, ...).
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the raw weights in the model while the checkpoint callbacks save at train end."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # Lightning's copy of the average into the model


class TrainingCurves(L.Callback):
    """Redraws ``logs/curves.png`` (``report.write_curves``) from ``logs/metrics.csv`` as training goes.

    Lightning writes an epoch's train metrics after every epoch-end hook, so each epoch is drawn
    when the next one starts and the last when training ends: a killed run has its picture too.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._draw(trainer)

    def _draw(self, trainer: L.Trainer) -> None:
        log_dir = getattr(trainer.logger, "log_dir", None)
        if log_dir and trainer.is_global_zero:
            write_curves(log_dir)
