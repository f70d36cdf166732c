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

from omegaconf import DictConfig

from speechrnn.evaluation.evaluate import evaluate_config
from speechrnn.evaluation.report import format_report
from speechrnn.training.config import check_config_types, command


def evaluate(cfg: DictConfig) -> dict:
    """The checkpoint ``cfg.ckpt_path`` on ``cfg.folder`` or a split of ``cfg.data``: prints the report, returns its fields."""
    check_config_types(cfg)
    report = evaluate_config(cfg)
    out, source = Path(cfg.out_dir), report["dataset"]
    print(format_report(report))
    for reason in report["skipped"]:
        print(f"skipped: {reason}", file=sys.stderr)
    print("accuracy at each step t, as if y_t were read (the model reads the last): "
          + " ".join(f"{100 * a:.1f}" for a in report["step_accuracy"]))
    print(f"accuracy on {source}: {report['accuracy']:.4f} ({report['num_samples']} clips)")
    print(f"report: {out / 'report.json'}  confusion matrix: {out / 'confusion_matrix.png'}")
    return report


@command("evaluate")
def main(cfg: DictConfig) -> None:
    # evaluate reports each unreadable clip itself, one line each; the cache's own log would repeat them
    logging.getLogger("speechrnn.data.cache").setLevel(logging.ERROR)
    if evaluate(cfg)["skipped"]:
        sys.exit(1)  # every good clip was evaluated, but some could not be read


if __name__ == "__main__":
    main()
