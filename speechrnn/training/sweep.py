"""The runs of a sweep (``python -m speechrnn.ablation``, ``python -m speechrnn.footprint``): each
trained once, reused when it has finished, and evaluated as the commands a reader would type.

A finished run's folder holds ``DONE``: the arguments it was trained with and its metrics. A
sweep that is interrupted, or split over processes (one model each, side by side, then all
together to write the table), trains every run once.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from speechrnn.core.atomic import atomic_write_json
from speechrnn.evaluation.evaluate import evaluate_config
from speechrnn.training.config import compose
from speechrnn.training.fit import train

DONE = "sweep_run.json"  # in a finished run's folder: its arguments and metrics


def run_train(overrides: list[str]) -> dict:
    return train(compose("train", overrides))


def trained(args: list[str], run: Path) -> dict:
    """The metrics (``test/acc``, ``best_checkpoint``) of ``python -m speechrnn.train <args>`` run into ``run``:
    reused when ``run`` already finished with the same arguments and its checkpoint is there."""
    try:
        done = json.loads((run / DONE).read_text())
        if done["args"] == args and Path(done["metrics"]["best_checkpoint"]).exists():
            return done["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    metrics = run_train(args + [f"paths.output_dir={run}", "trainer.enable_progress_bar=false"])
    metrics = {k: metrics[k] for k in ("test/acc", "best_checkpoint")}
    atomic_write_json(run / DONE, {"args": args, "metrics": metrics})
    return metrics


def evaluation(ckpt: str, args: list[str], out: Path, cache_dir: str) -> DictConfig:
    """The config of ``python -m speechrnn.evaluate ckpt_path=<ckpt> <args>``, its files going into ``out``
    and the decoded clips kept in ``cache_dir``."""
    return compose("evaluate", [f"ckpt_path={ckpt}", *args, f"out_dir={out}", f"cache_dir={cache_dir}",
                                f"data.cache_dir={cache_dir}"])


def evaluated(ckpt: str, args: list[str], out: Path, cache_dir: str) -> dict:
    """That evaluation's report (``evaluation``'s arguments)."""
    return evaluate_config(evaluation(ckpt, args, out, cache_dir))


def command_line(tool: str, args: list[str], names: dict[str, str] | None = None) -> str:
    """``python -m speechrnn.<tool> <args>``, each path in ``names`` written as its name (a reader's runs
    land elsewhere)."""
    line = f"python -m speechrnn.{tool} " + " ".join(args)
    for path, name in (names or {}).items():
        line = line.replace(path, name)
    return line
