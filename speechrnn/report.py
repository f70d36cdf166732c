"""Classification report: per-class precision/recall/F1, confusion matrix, and its files.

Computed with numpy alone (no sklearn) so evaluation has no extra dependency.
``write_report`` puts ``report.json``, ``confusion_matrix.csv`` and
``confusion_matrix.png`` in one folder, and ``write_predictions`` a clip-by-clip
``predictions.csv`` beside them, through ``atomic`` so a crash mid-evaluation never
leaves a truncated result beside a finished-looking one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from speechrnn.atomic import atomic_save, atomic_write_json, atomic_write_text
from speechrnn.dataset import SILENCE_CUT


def _as_indices(y: Any, name: str, num_classes: int) -> np.ndarray:
    """Class indices as a 1-D int64 array; accepts sequences, arrays and (any-device) tensors."""
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}; take argmax of logits first")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)][0]
        raise ValueError(f"{name} has class index {bad} outside [0, {num_classes}) for {num_classes} labels")
    return arr.astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0.0 where den == 0."""
    return np.divide(num, den, out=np.zeros(len(num)), where=den != 0)


def classification_report(y_true: Any, y_pred: Any, labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 and the confusion matrix.

    Args:
        y_true (sequence | ndarray | Tensor): true class indices, shape ``(N,)``.
        y_pred (sequence | ndarray | Tensor): predicted class indices, shape ``(N,)``.
        labels (list[str]): class names; index ``i`` names class ``i``.

    Returns:
        dict: ``accuracy``, ``num_samples``, ``labels``, ``per_class`` (label ->
        precision, recall, f1, support), ``macro_f1`` (unweighted mean over all
        labels, as sklearn with ``labels=``), ``confusion_matrix`` (``K x K`` list,
        rows = true, columns = predicted). Any 0/0 is reported as 0.0.

    Example:
        >>> classification_report([0, 1, 1], [0, 1, 0], ["yes", "no"])["accuracy"]
        0.6666666666666666
    """
    labels = [str(label) for label in labels]
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labels}")
    k = len(labels)
    t, p = _as_indices(y_true, "y_true", k), _as_indices(y_pred, "y_pred", k)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} samples but y_pred has {len(p)}")
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)  # (true, pred)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    per_class = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]),
                "f1": float(f1[i]), "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": float(tp.sum() / len(t)) if len(t) else 0.0,
        "num_samples": int(len(t)),
        "labels": labels,
        "per_class": per_class,
        "macro_f1": float(f1.mean()),
        "confusion_matrix": cm.tolist(),
    }


def _write_csv(path: str | Path, rows: Iterable[list]) -> None:
    """Rows as CSV (``\\n`` line ends), written atomically."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _plot_confusion(report: dict) -> Figure:
    """Row-normalised colours (recall per true class) with raw counts written in each cell."""
    cm, labels = np.asarray(report["confusion_matrix"]), report["labels"]
    k = len(labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # empty rows stay 0
    size = max(4.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(size + 1.0, size))
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend switch, no open-figure leak
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, label="fraction of true class", shrink=0.8)
    fontsize = max(5, min(10, 140 // k))
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=fontsize,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(f"Confusion matrix (accuracy {report['accuracy']:.2%}, n={report['num_samples']})")
    fig.tight_layout()
    return fig


def write_report(report: dict, out_dir: str | Path, *, extra: dict | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``confusion_matrix.csv`` and ``confusion_matrix.png`` atomically.

    Args:
        report (dict): output of ``classification_report``.
        out_dir (str | Path): folder to write into; created if missing.
        extra (dict | None, optional): fields added to ``report.json`` (checkpoint,
            split, config, ...); may not reuse a report key. (Default: ``None``)

    Returns:
        dict[str, Path]: ``{"json": ..., "csv": ..., "png": ...}``.
    """
    extra = extra or {}
    clash = sorted(set(extra) & set(report))
    if clash:
        raise ValueError(f"extra fields {clash} would overwrite report fields; rename them")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "csv": out_dir / "confusion_matrix.csv",
             "png": out_dir / "confusion_matrix.png"}
    atomic_write_json(paths["json"], {**report, **extra})
    _write_csv(paths["csv"], [["true\\predicted", *report["labels"]],
                              *([label, *row] for label, row in zip(report["labels"], report["confusion_matrix"]))])
    fig = _plot_confusion(report)
    atomic_save(paths["png"], lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return paths


def format_report(report: dict) -> str:
    """A text table of per-class precision/recall/F1/support, then accuracy and macro-F1."""
    width = max(len("macro avg"), *(len(label) for label in report["labels"]))
    lines = [f"{'':<{width}}  {'precision':>9}  {'recall':>6}  {'f1':>6}  {'support':>7}"]
    for label in report["labels"]:
        m = report["per_class"][label]
        lines.append(f"{label:<{width}}  {m['precision']:>9.3f}  {m['recall']:>6.3f}  "
                     f"{m['f1']:>6.3f}  {m['support']:>7d}")
    lines.append("")
    for name, value in (("accuracy", report["accuracy"]), ("macro avg", report["macro_f1"])):
        lines.append(f"{name:<{width}}  {'':>9}  {'':>6}  {value:>6.3f}  {report['num_samples']:>7d}")
    return "\n".join(lines)


def write_predictions(path: str | Path, paths: list[str], y_true: Any, probs: Any, labels: list[str]) -> Path:
    """Write one CSV row per clip: ``path, label, predicted, score`` (the predicted class's probability).

    Args:
        path (str | Path): the CSV file, written atomically.
        paths (list[str]): each clip's file; ``""`` (a silence cut from background noise) is
            written as ``SILENCE_CUT`` (``<silence cut>``).
        y_true (sequence | ndarray | Tensor): true class indices, shape ``(N,)``.
        probs (ndarray | Tensor): class probabilities, shape ``(N, C)``.
        labels (list[str]): class names; index ``i`` names class ``i``.
    """
    y_true = _as_indices(y_true, "y_true", len(labels))
    probs = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs)  # (N, C)
    if probs.shape != (len(y_true), len(labels)) or len(paths) != len(y_true):
        raise ValueError(f"need {len(y_true)} paths and probabilities of shape ({len(y_true)}, {len(labels)}), "
                         f"got {len(paths)} paths and {probs.shape}")
    _write_csv(path, [["path", "label", "predicted", "score"],
                      *([clip or SILENCE_CUT, labels[true], labels[int(p.argmax())], f"{p.max():.4f}"]
                        for clip, true, p in zip(paths, y_true, probs))])
    return Path(path)


def write_detection_curves(curves: dict[str, list[dict]], path: str | Path, title: str) -> Path:
    """Draw miss rate against false accepts per hour, one line per model, to a PNG (atomically).

    Args:
        curves (dict[str, list[dict]]): model name -> its points, each with ``fa_per_hour`` and
            ``miss_rate`` (0-1) at its ``threshold``, as ``speechrnn.streamtest`` sweeps them.
        path (str | Path): the PNG file.
        title (str): what was measured (recording, noise, signal-to-noise ratio).
    """
    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, points in curves.items():
        points = sorted(points, key=lambda q: -q["threshold"])  # the sweep's order: from few false accepts to many
        ax.plot([q["fa_per_hour"] for q in points], [100 * q["miss_rate"] for q in points], marker="o",
                markersize=3, label=name)
    ax.set_xscale("symlog", linthresh=0.1)  # zero false accepts is a point to show, which a log axis cannot
    ax.set(xlabel="false accepts per hour", ylabel="keywords missed or mislabelled (%)", ylim=(0, 100))
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return Path(path)
