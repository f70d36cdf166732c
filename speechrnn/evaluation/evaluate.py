"""Evaluate a model on decoded clips: the report files, the clips of any Speech Commands-layout folder,
and a checkpoint on what an ``evaluate`` config names.

``evaluate_clips`` is the one test path of the product: training's final test on the
best checkpoint, the ``evaluate`` command and the ablation sweep all go through it. It
writes ``report.json`` (accuracy, per-class precision/recall/F1, confusion matrix, the
accuracy each step's output would have), ``confusion_matrix.csv`` and ``.png``, and
``predictions.csv``. The same model on the same clips always gives the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from speechrnn.core.audio import ALIGNMENTS
from speechrnn.data.cache import ClipArray, decode_split
from speechrnn.data.layout import DatasetError, check_label_folders, label_items, scan
from speechrnn.evaluation.report import classification_report, write_predictions, write_report
from speechrnn.inference.predict import predict_steps
from speechrnn.model.checkpoint import load_model
from speechrnn.model.spotter import KeywordSpotter


def evaluate_clips(model: KeywordSpotter, clips: ClipArray, labels: list[str], out_dir: str | Path,
                   batch_size: int = 256, extra: dict | None = None) -> dict:
    """Classify decoded clips labelled with ``labels``, write the report files and ``predictions.csv``, return ``report.json``'s fields.

    ``report.json`` also holds ``step_accuracy``: the accuracy of each step's y_t, as if the
    clip were classified at step t (the model reads the last step).
    """
    if list(labels) != model.labels:
        raise DatasetError(f"the dataset's labels {labels} differ from the checkpoint's {model.labels}; "
                           "evaluate with the task the model was trained on")
    probs, steps = predict_steps(model, clips.waves, batch_size, progress=True)  # (N, C), (N, T)
    report = classification_report(clips.labels, probs.argmax(-1).numpy(), model.labels)
    step_accuracy = (steps == torch.as_tensor(clips.labels)[:, None]).double().mean(0)  # (T,)
    extra = dict(extra or {}, skipped=clips.skipped, step_accuracy=step_accuracy.tolist())
    write_report(report, out_dir, extra=extra)
    write_predictions(Path(out_dir) / "predictions.csv", clips.paths, clips.labels, probs, model.labels)
    return {**report, **extra}


def folder_clips(folder: str | Path, labels: list[str], cache_dir: str | Path, align: str = "start") -> ClipArray:
    """Every clip of a Speech Commands-layout folder, labelled for ``labels`` (no sampling), laid out by ``align``."""
    found = scan(folder, key="folder")
    check_label_folders(Path(folder), list(found), labels)
    items = label_items(found, labels, sample=False)
    if not items:
        raise DatasetError(f"{folder}: no clip has one of the labels {labels}")
    return decode_split(items, labels, cache_dir, align=align, name=f"eval-{Path(folder).name}")


def evaluate_config(cfg: DictConfig) -> dict:
    """The checkpoint ``cfg.ckpt_path`` on what an ``evaluate`` config (``conf/evaluate.yaml``) names.

    Every clip of ``cfg.folder``, else the split ``cfg.split`` of the dataset ``cfg.data``; the
    report files go to ``cfg.out_dir``. The ``evaluate`` command and the ablation sweep both
    call it, so a cell of the sweep's table is the number the command prints.

    Returns:
        dict: ``report.json``'s fields; ``dataset`` names what was evaluated, ``skipped`` the
        clips that could not be read.
    """
    if cfg.align not in ALIGNMENTS:
        raise DatasetError(f"align must be one of {', '.join(ALIGNMENTS)}, got {cfg.align!r}")
    model = load_model(cfg.ckpt_path)
    clips, source = config_clips(cfg, model.labels)
    return evaluate_clips(model, clips, model.labels, cfg.out_dir, cfg.batch_size,
                          extra={"checkpoint": str(cfg.ckpt_path), "dataset": source, "align": cfg.align})


def config_clips(cfg: DictConfig, labels: list[str]) -> tuple[ClipArray, str]:
    """The clips an ``evaluate`` config names (``cfg.folder`` whole, else a split of ``cfg.data``), and their name."""
    if cfg.folder:
        return folder_clips(cfg.folder, labels, cfg.cache_dir, cfg.align), str(cfg.folder)
    data = instantiate(cfg.data, align=cfg.align)
    data.prepare_data()
    data.setup("test")
    return data.splits[cfg.split], f"{data.root} ({cfg.split})"
