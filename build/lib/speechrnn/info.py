"""Entry point: ``python -m speechrnn.info CKPT [--format json]`` says what a checkpoint knows.

Its labels, feature settings, encoder, parameter count, epoch and step come from the
checkpoint itself. While it is still in its run folder (``runs/<run>/checkpoints/``), the
run's ``config.yaml`` adds the training data (dataset root, task, seed) and its
``metrics.json`` the test accuracy, which is that of the run's best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from speechrnn.core.cli import version_line
from speechrnn.model.checkpoint import load_checkpoint
from speechrnn.core.errors import friendly


def describe(path: str | Path) -> dict:
    """What ``path`` (a ``.ckpt`` from ``speechrnn.train``) and its run folder say about the model.

    Returns:
        dict: ``checkpoint``, ``epoch`` and ``step`` (Lightning's counts when it was saved),
        ``labels``, ``features``, ``encoder``, ``parameters``; ``training`` (``config``, ``root``,
        ``task``, ``seed``) and ``metrics`` (``file``, ``test/acc``, ``best_checkpoint``), each
        ``None`` when the run's file is not beside the checkpoint's folder.

    Raises:
        CheckpointError: missing, unreadable, or not a speechrnn checkpoint.
    """
    model, ckpt = load_checkpoint(path)
    hparams = ckpt["hyper_parameters"]
    folder = Path(path).resolve().parent
    run = folder.parent if folder.name == "checkpoints" else None  # runs/<run>/checkpoints/<name>.ckpt
    config, metrics = (run / "config.yaml", run / "metrics.json") if run else (None, None)
    training = None
    if config and config.is_file():
        cfg = yaml.safe_load(config.read_text())
        training = {"config": str(config), "root": cfg["data"]["root"], "task": cfg["data"]["task"],
                    "seed": cfg["seed"]}
    return {
        "checkpoint": str(path), "epoch": ckpt.get("epoch"), "step": ckpt.get("global_step"),
        "labels": model.labels, "features": hparams["features"], "encoder": hparams["encoder"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": training,
        "metrics": _run_metrics(metrics) if metrics and metrics.is_file() else None,
    }


def _run_metrics(path: Path) -> dict:
    saved = json.loads(path.read_text())
    return {"file": str(path), "test/acc": saved.get("test/acc"), "best_checkpoint": saved.get("best_checkpoint")}


def _settings(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def render(info: dict) -> str:
    """``describe``'s answer as aligned ``field  value`` lines."""
    name = Path(info["checkpoint"]).name
    lines = [("checkpoint", f"{info['checkpoint']} (epoch {info['epoch']}, step {info['step']})"),
             ("labels", f"{len(info['labels'])}: {' '.join(info['labels'])}"),
             ("features", _settings(info["features"])),
             ("encoder", f"{_settings(info['encoder'])}; {info['parameters']:,} parameters")]
    training, metrics = info["training"], info["metrics"]
    lines.append(("training", f"data.root={training['root']} task={training['task']} seed={training['seed']} "
                              f"({training['config']})" if training else
                  "unknown: no runs/<run>/config.yaml above the checkpoint's folder"))
    if metrics and metrics["test/acc"] is not None:
        best = Path(metrics["best_checkpoint"] or "").name
        whose = "this checkpoint" if best == name else f"the run's {best}, not {name}"
        lines.append(("test acc", f"{metrics['test/acc']:.4f} of {whose} ({metrics['file']})"))
    else:
        lines.append(("test acc", "unknown: no runs/<run>/metrics.json with test/acc above the checkpoint's folder"))
    return "\n".join(f"{field:<11} {value}" for field, value in lines)


@friendly
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechrnn.info", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("checkpoint", help="a .ckpt written by python -m speechrnn.train")
    p.add_argument("--format", choices=("text", "json"), default="text")
    args = p.parse_args(argv)
    info = describe(args.checkpoint)
    print(json.dumps(info, indent=2) if args.format == "json" else render(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
