"""Entry point: ``python -m speechrnn.evaluate ckpt_path=... (folder=... | data=... split=...)``.

Evaluates a checkpoint either on any folder in the Speech Commands layout (every
clip is used, e.g. the canonical test set with its ``_unknown_`` and ``_silence_``
folders) or on a split of a configured dataset. Writes ``report.json`` (accuracy,
per-class precision/recall/F1, confusion matrix, the accuracy each step's output
would have), ``confusion_matrix.csv``, ``confusion_matrix.png`` and ``predictions.csv``
into the run directory. Unreadable clips are reported one
line each and left out; the exit status is then 1. The same checkpoint on the same
data always gives the same numbers (no augmentation, no randomness).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from speechrnn import answers_version
from speechrnn.audio import ALIGNMENTS
from speechrnn.cache import ClipArray, decode_split
from speechrnn.checkpoint import load_model
from speechrnn.datamodule import check_label_folders
from speechrnn.dataset import DatasetError, label_items, scan
from speechrnn.errors import check_config_types, friendly
from speechrnn.model import KeywordSpotter
from speechrnn.predict import predict_steps
from speechrnn.report import classification_report, format_report, write_predictions, write_report


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


def evaluate(cfg: DictConfig) -> dict:
    check_config_types(cfg)
    if cfg.align not in ALIGNMENTS:
        raise DatasetError(f"align must be one of {', '.join(ALIGNMENTS)}, got {cfg.align!r}")
    model = load_model(cfg.ckpt_path)
    if cfg.folder:
        clips, source = folder_clips(cfg.folder, model.labels, cfg.cache_dir, cfg.align), str(cfg.folder)
    else:
        data = instantiate(cfg.data, align=cfg.align)
        data.prepare_data()
        data.setup("test")
        clips, source = data.splits[cfg.split], f"{data.root} ({cfg.split})"
    out = Path(cfg.out_dir)
    report = evaluate_clips(model, clips, model.labels, out, cfg.batch_size,
                            extra={"checkpoint": str(cfg.ckpt_path), "dataset": source, "align": cfg.align})
    print(format_report(report))
    for reason in clips.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    print("accuracy at each step t, as if y_t were read (the model reads the last): "
          + " ".join(f"{100 * a:.1f}" for a in report["step_accuracy"]))
    print(f"accuracy on {source}: {report['accuracy']:.4f} ({report['num_samples']} clips)")
    print(f"report: {out / 'report.json'}  confusion matrix: {out / 'confusion_matrix.png'}")
    return report


@answers_version
@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@friendly
def main(cfg: DictConfig) -> None:
    # evaluate reports each unreadable clip itself, one line each; the cache's own log would repeat them
    logging.getLogger("speechrnn.cache").setLevel(logging.ERROR)
    if evaluate(cfg)["skipped"]:
        sys.exit(1)  # every good clip was evaluated, but some could not be read


if __name__ == "__main__":
    main()
