"""Entry point: ``python -m speechrnn.ablation`` regenerates the README's comparison table.

For each encoder (the basic RNN, GRU, LSTM; same features, seeds and epoch budget)
it trains on the embedded synthetic corpus and reports accuracy on its held-out
speakers, zero-shot accuracy on a real Speech Commands-layout folder
(``--real-test``, e.g. the canonical v0.02 test set), and trains again on FSDD
(``--fsdd``) with a speaker-disjoint split. Every cell names the command that
reproduces it; with ``--seeds 0,1,2`` each cell is the mean and std over seeds.
The table is printed as Markdown and saved as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from speechrnn.core.cli import version_line
from speechrnn.core.atomic import atomic_write_json
from speechrnn.model.checkpoint import load_model
from speechrnn.core.errors import friendly
from speechrnn.evaluation.evaluate import evaluate_clips, folder_clips
from speechrnn.training.fit import train
from speechrnn.training.config import compose


def run_train(overrides: list[str]) -> dict:
    return train(compose("train", overrides))


COLUMNS = {"synthetic": "held-out synthetic speakers (kws12)", "fsdd": "FSDD speaker-disjoint",
           "real_test": "real Speech Commands folder, zero-shot"}


def ablate_one(model: str, seed: int, out: Path, real_test: str | None, fsdd: str | None, extra: list[str],
               cache_dir: str) -> dict:
    """One encoder, one seed: every column's accuracy and the command that reproduces it."""
    cell = {}
    args = [f"model={model}", *extra, f"seed={seed}"]
    run = out / f"{model}-synthetic-seed{seed}"
    metrics = run_train(args + [f"paths.output_dir={run}", "trainer.enable_progress_bar=false"])
    cell["synthetic"] = metrics["test/acc"]
    cell["synthetic_cmd"] = "python -m speechrnn.train " + " ".join(args)
    if real_test:
        best = load_model(metrics["best_checkpoint"])
        report = evaluate_clips(best, folder_clips(real_test, best.labels, cache_dir), best.labels, run / "real_test")
        cell["real_test"] = report["accuracy"]
        cell["real_test_cmd"] = (f"python -m speechrnn.evaluate ckpt_path=<run>/checkpoints/best.ckpt "
                                 f"folder={real_test}")
    if fsdd:
        fargs = [f"model={model}", "experiment=fsdd", f"data.root={fsdd}", *extra, f"seed={seed}"]
        fm = run_train(fargs + [f"paths.output_dir={out / f'{model}-fsdd-seed{seed}'}",
                                "trainer.enable_progress_bar=false"])
        cell["fsdd"] = fm["test/acc"]
        cell["fsdd_cmd"] = "python -m speechrnn.train " + " ".join(fargs)
    return cell


def ablate(models: list[str], out: Path, real_test: str | None, fsdd: str | None, extra: list[str],
           seeds: list[int] = (0,), cache_dir: str = "data/cache") -> list[dict]:
    """Every encoder on every seed; a row holds each column's mean, its std over seeds and the per-seed values.

    One seed moves a column by a point or more (600 and 1,000 test clips, and float reduction
    order), so comparisons within a point need several seeds.
    """
    if any(o.split("=", 1)[0].lstrip("+") == "seed" for o in extra):
        raise ValueError("give seeds with --seeds, not as a seed= override")
    rows = []
    for model in models:
        cells = [ablate_one(model, seed, out, real_test, fsdd, extra, cache_dir) for seed in seeds]
        row = {"model": model, "seeds": list(seeds)}
        for col in (c for c in COLUMNS if c in cells[0]):
            values = torch.tensor([c[col] for c in cells], dtype=torch.float64)
            row[col], row[f"{col}_std"] = values.mean().item(), (values.std().item() if len(values) > 1 else 0.0)
            row[f"{col}_runs"] = values.tolist()
            row[f"{col}_cmd"] = cells[0][f"{col}_cmd"].replace(f"seed={seeds[0]}", "seed=<seed>")
        rows.append(row)
        atomic_write_json(out / "ablation.json", rows)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (mean +- std over seeds when there are several), then the commands."""
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    lines = ["| model | " + " | ".join(COLUMNS[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def fmt(r: dict, c: str) -> str:
        if c not in r:
            return "-"
        spread = f" ± {100 * r[f'{c}_std']:.2f}" if len(r["seeds"]) > 1 else ""
        return f"{100 * r[c]:.2f}{spread} %"

    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(fmt(r, c) for c in cols) + " |")
    lines.append("")
    if rows:
        lines.append(f"Seeds: {', '.join(map(str, rows[0]['seeds']))}.")
    for r in rows:
        for c in cols:
            if f"{c}_cmd" in r:
                lines.append(f"- {r['model']}, {COLUMNS[c]}: `{r[f'{c}_cmd']}`")
    return "\n".join(lines)


@friendly
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m speechrnn.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--models", default="rnn,gru,lstm", help="comma-separated encoders (default rnn,gru,lstm)")
    p.add_argument("--real-test", help="a real Speech Commands-layout folder evaluated zero-shot")
    p.add_argument("--fsdd", help="the FSDD folder in Speech Commands layout")
    p.add_argument("--out", default="runs/ablation", help="where runs and ablation.json go")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, each a full run (default 0)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run, e.g. trainer.max_epochs=20")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    rows = ablate(args.models.split(","), Path(args.out), args.real_test, args.fsdd, args.overrides, seeds)
    print(markdown(rows))


if __name__ == "__main__":
    main()
