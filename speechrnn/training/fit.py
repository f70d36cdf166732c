"""``train(cfg)``: the whole training job, which ``python -m speechrnn.train`` runs and tests call.

The run directory (``runs/<time>`` unless ``hydra.run.dir`` says otherwise)
receives ``checkpoints/best.ckpt`` and ``last.ckpt``, the resolved ``config.yaml``,
``logs/metrics.csv``, ``metrics.json`` and the test report (``test/report.json``,
``confusion_matrix.csv`` and ``.png``).

A killed run resumes in its own folder with the same overrides plus
``hydra.run.dir=runs/<run> ckpt_path=runs/<run>/checkpoints/last.ckpt``; it continues
from the saved step and ends as the uninterrupted run would (see ``speechrnn.data.datamodule``).
``init_from=<ckpt>`` instead starts a new run from a checkpoint's weights (``speechrnn.training.finetune``).
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from speechrnn.core.atomic import atomic_write_json, atomic_write_text, sweep_leftovers
from speechrnn.core.audio import SAMPLE_RATE
from speechrnn.model.checkpoint import CheckpointError, load_model
from speechrnn.core.errors import ConfigError
from speechrnn.core.machine import torch_threads, training_threads
from speechrnn.evaluation.evaluate import evaluate_clips
from speechrnn.training.config import check_config_types
from speechrnn.training.finetune import init_weights, source_of
from speechrnn.training.callbacks import AtomicCheckpointIO

# Fewer optimiser steps than this leave a model short: on half A's 1,191 real clips (ten steps an epoch)
# 1,000 steps gave 79.74 % from scratch and 2,000 gave 81.94 % (seeds 0-4; README, "Real speech").
MIN_STEPS = 2000
log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict:
    """Train, keep the best checkpoint, evaluate it on the test split; returns the metrics."""
    check_config_types(cfg)
    if cfg.features.sample_rate != SAMPLE_RATE:  # datasets, cache and augmentation are read at SAMPLE_RATE
        raise ConfigError(f"features.sample_rate={cfg.features.sample_rate}: clips are decoded at {SAMPLE_RATE} Hz; "
                          f"keep features.sample_rate={SAMPLE_RATE}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ConfigError(f"seed={cfg.seed!r} is not an integer")
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} (trainer=gpu): torch sees no CUDA device on "
                          "this machine; train on the CPU without trainer=gpu")
    source = source_of(cfg)  # init_from: the checkpoint to fine-tune, checked before any work
    if cfg.ckpt_path and not Path(cfg.ckpt_path).is_file():
        raise CheckpointError(f"{cfg.ckpt_path}: checkpoint to resume from not found; "
                              "pass ckpt_path=runs/<run>/checkpoints/last.ckpt of the interrupted run")
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out)  # temp files of a run killed while writing config.yaml or metrics.json
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("fit")
    module = instantiate(cfg.model, labels=data.labels, features=cfg.features, _recursive_=False)
    if source is not None:
        init_weights(module.model, source, data.train_waves())
    elif not cfg.ckpt_path:  # a resumed run restores the statistics with the weights
        module.model.frontend.fit_normalization(data.train_waves())

    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values()]
    for folder in {c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath}:
        sweep_leftovers(folder)  # a half-written checkpoint of a run killed mid-save
    logger = instantiate(cfg.logger)
    if cfg.ckpt_path:
        _keep_metrics_of_killed_run(logger)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()])
    if cfg.trainer.get("limit_train_batches", 1.0) == 1.0 and not cfg.trainer.get("fast_dev_run"):  # not trainer=debug
        warn_if_short(len(data.splits["training"]), cfg.data.batch_size * trainer.world_size, trainer.max_epochs,
                      trainer.max_steps)
    with fitting(data.num_workers):
        trainer.fit(module, datamodule=data, ckpt_path=cfg.ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    metrics["best_checkpoint"] = best
    if cfg.test and best and trainer.is_global_zero:
        report = evaluate_clips(load_model(best), data.splits["testing"], data.labels, out / "test",
                                extra={"checkpoint": best, "split": "testing", "dataset": str(data.root)})
        metrics["test/acc"] = report["accuracy"]
        print(f"test accuracy ({len(data.splits['testing'])} clips of held-out speakers, {data.root}): "
              f"{report['accuracy']:.4f}")
        print(f"checkpoint: {best}\nreport: {out / 'test' / 'report.json'}")
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


@contextmanager
def fitting(loader_workers: int) -> Iterator[None]:
    """What a Lightning fit runs under, here and in the bench: torch's threads less the loader workers'
    (``training_threads``), and without torch's FutureWarning that ``LeafSpec`` is deprecated, which Lightning's
    own pytree helper (lightning/pytorch/utilities/_pytree.py) makes on every fit and no user of speechrnn can
    act on. Every other warning passes as before."""
    with torch_threads(training_threads(loader_workers)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        yield


def warn_if_short(clips: int, batch: int, max_epochs: int | None, max_steps: int = -1) -> str | None:
    """Warn, and return the warning, when ``max_epochs`` of ``clips`` in global batches of ``batch``
    make fewer than ``MIN_STEPS`` optimiser steps: a small folder trained for the corpus's 35 epochs
    takes a few hundred. The warning names the epochs that would make ``MIN_STEPS``."""
    if not max_epochs or max_epochs < 0 or max_steps != -1 or clips <= 0:
        return None  # no epoch budget, or a step budget the user chose
    per_epoch = math.ceil(clips / batch)
    if per_epoch * max_epochs >= MIN_STEPS:
        return None
    message = (f"{clips} training clips in batches of {batch} make {per_epoch} optimiser steps an epoch, "
               f"{per_epoch * max_epochs} in {max_epochs} epochs: a set this small trains better with "
               f"{MIN_STEPS} or more, e.g. trainer.max_epochs={math.ceil(MIN_STEPS / per_epoch)}")
    log.warning(message)
    return message


def _keep_metrics_of_killed_run(logger: object) -> None:
    """Lightning's CSVLogger deletes the ``metrics.csv`` it finds; a resumed run keeps it as ``metrics.partN.csv``."""
    log_dir = getattr(logger, "log_dir", None)
    old = Path(log_dir) / "metrics.csv" if log_dir else None
    if old is not None and old.is_file():
        n = 1
        while old.with_name(f"metrics.part{n}.csv").exists():
            n += 1
        old.rename(old.with_name(f"metrics.part{n}.csv"))
