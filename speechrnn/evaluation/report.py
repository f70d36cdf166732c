"""Classification report: per-class precision/recall/F1, confusion matrix, and its files.

Computed with numpy alone (no sklearn) so evaluation has no extra dependency.
``write_report`` puts ``report.json``, ``confusion_matrix.csv`` and
``confusion_matrix.png`` in one folder, and ``write_predictions`` a clip-by-clip
``predictions.csv`` beside them, through ``atomic`` so a crash mid-evaluation never
leaves a truncated result beside a finished-looking one. ``write_curves`` draws a run's
training curves from its ``metrics.csv`` the same way, and ``write_summary`` tabulates the
runs of a multirun (``MultirunSummary``, the Hydra callback that calls it when one ends).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from speechrnn.core.atomic import atomic_save, atomic_write_json, atomic_write_text, sweep_leftovers
from speechrnn.data.layout import SILENCE_CUT


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
    sweep_leftovers(out_dir)  # what an evaluation killed mid-write left
    paths = {"json": out_dir / "report.json", "csv": out_dir / "confusion_matrix.csv",
             "png": out_dir / "confusion_matrix.png"}
    atomic_write_json(paths["json"], {**report, **extra})
    _write_csv(paths["csv"], [["true\\predicted", *report["labels"]],
                              *([label, *row] for label, row in zip(report["labels"], report["confusion_matrix"]))])
    fig = _plot_confusion(report)
    atomic_save(paths["png"], lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    return paths


# (panel, train metric, validation metric) of curves.png, as KeywordModule logs them per epoch
CURVES = (("loss", "train/loss_epoch", "val/loss"), ("accuracy", "train/acc_epoch", "val/acc"))


def read_curves(log_dir: str | Path) -> dict[str, dict[int, float]]:
    """Each metric of ``CURVES`` by epoch, from a run's ``metrics.csv``.

    A resumed run's log folder also holds the killed run's ``metrics.partN.csv``; they are read
    first, so the curves span the whole run and an epoch logged twice keeps its later value. A
    last line the kill cut short (Lightning appends the CSV as it goes) is left out.

    Args:
        log_dir (str | Path): the folder of ``metrics.csv`` (``runs/<run>/logs``).

    Returns:
        dict[str, dict[int, float]]: metric name -> {epoch: value}; empty dicts without a log.
    """
    log_dir = Path(log_dir)
    parts = sorted(log_dir.glob("metrics.part*.csv"), key=lambda p: int(p.stem.removeprefix("metrics.part")))
    curves: dict[str, dict[int, float]] = {key: {} for _, *keys in CURVES for key in keys}
    for path in [*parts, log_dir / "metrics.csv"]:
        if not path.is_file():
            continue
        text = path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line the kill cut short has no line end yet
        for row in csv.DictReader(io.StringIO(complete)):
            for key, values in curves.items():
                if row.get(key):  # empty where this row logged other metrics
                    values[int(row["epoch"])] = float(row[key])
    return curves


def plot_curves(curves: dict[str, dict[int, float]]) -> Figure:
    """One panel per ``CURVES`` entry, train and validation against the epoch."""
    fig = Figure(figsize=(10.0, 4.0))
    FigureCanvasAgg(fig)  # as _plot_confusion: no pyplot state
    for ax, (title, *keys) in zip(fig.subplots(1, len(CURVES)), CURVES):
        for key in keys:
            epochs = sorted(curves[key])
            ax.plot(epochs, [curves[key][e] for e in epochs], marker="o", markersize=3, label=key)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def write_curves(log_dir: str | Path) -> Path | None:
    """Draw ``read_curves(log_dir)`` into ``log_dir/curves.png`` atomically; ``None`` before any epoch is logged."""
    curves = read_curves(log_dir)
    if not any(curves.values()):
        return None
    path = Path(log_dir) / "curves.png"
    fig = plot_curves(curves)
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


SUMMARY_METRICS = ("test/acc", "val/acc", "best_checkpoint")  # of each run's metrics.json
SUMMARY_COLUMNS = ("run", "overrides", *SUMMARY_METRICS)


def summarize_runs(sweep_dir: str | Path) -> dict:
    """The runs of a Hydra multirun side by side: what sets each apart, and its ``metrics.json``.

    Args:
        sweep_dir (str | Path): the multirun's folder (``multirun/<time>``), one run folder per job.

    Returns:
        dict: ``common``, the overrides every run shares, and ``runs``, one dict per run in job
        order: ``run`` (its folder in ``sweep_dir``), ``overrides`` (the others, space-separated)
        and ``SUMMARY_METRICS`` (``None`` where the run wrote no ``metrics.json``).
    """
    sweep_dir = Path(sweep_dir)
    runs = sorted((p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")),
                  key=lambda d: (len(str(d)), str(d)))  # job numbers in order: 9 before 10
    overrides = {d: yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()) or [] for d in runs}
    common = [o for o in overrides[runs[0]] if all(o in v for v in overrides.values())] if runs else []
    rows = []
    for d in runs:
        metrics = d / "metrics.json"
        saved = json.loads(metrics.read_text()) if metrics.is_file() else {}
        rows.append({"run": str(d.relative_to(sweep_dir)),
                     "overrides": " ".join(o for o in overrides[d] if o not in common),
                     **{key: saved.get(key) for key in SUMMARY_METRICS}})
    return {"common": common, "runs": rows}


def format_summary(summary: dict) -> str:
    """``summarize_runs``' answer as a Markdown table, the shared overrides above it."""
    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [f"every run: {' '.join(summary['common']) or '(no overrides)'}", "",
             f"| {' | '.join(SUMMARY_COLUMNS)} |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += [f"| {' | '.join(cell(row[key]) for key in SUMMARY_COLUMNS)} |" for row in summary["runs"]]
    return "\n".join(lines)


def write_summary(sweep_dir: str | Path) -> str:
    """``summarize_runs(sweep_dir)`` as ``summary.md``, ``.csv``, ``.json`` there, atomically; returns the table."""
    sweep_dir = Path(sweep_dir)
    summary = summarize_runs(sweep_dir)
    text = format_summary(summary)
    atomic_write_text(sweep_dir / "summary.md", text + "\n")
    _write_csv(sweep_dir / "summary.csv",
               [SUMMARY_COLUMNS, *([row[key] for key in SUMMARY_COLUMNS] for row in summary["runs"])])
    atomic_write_json(sweep_dir / "summary.json", summary)
    return text


class MultirunSummary(Callback):
    """Hydra callback (``hydra.callbacks`` in ``conf/train.yaml``): one table of a multirun's runs at its end.

    After ``-m`` or ``experiment=compare`` the runs lie in separate folders; ``write_summary``
    puts them side by side in the sweep folder, and the table is printed.
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(f"{write_summary(sweep_dir)}\nsummary: {sweep_dir / 'summary.md'} (.csv, .json)")


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
