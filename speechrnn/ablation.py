"""Entry point: ``python -m speechrnn.ablation`` regenerates the README's comparison table.

For each encoder (the basic RNN, GRU, LSTM; same features, seed and epoch budget)
it trains on the embedded synthetic corpus and reports accuracy on its held-out
speakers, zero-shot accuracy on a real Speech Commands-layout folder
(``--real-test``, e.g. the canonical v0.02 test set), and trains again on FSDD
(``--fsdd``) with a speaker-disjoint split. Every cell names the command that
reproduces it; the table is printed as Markdown and saved as JSON.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir

from speechrnn.atomic import atomic_write_json
from speechrnn.checkpoint import load_model
from speechrnn.errors import friendly
from speechrnn.evaluate import evaluate_clips, folder_clips
from speechrnn.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def run_train(overrides: list[str]) -> dict:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return train(cfg)


def ablate(models: list[str], out: Path, real_test: str | None, fsdd: str | None, extra: list[str],
           cache_dir: str = "data/cache") -> list[dict]:
    rows = []
    for model in models:
        row = {"model": model}
        run = out / f"{model}-synthetic"
        args = [f"model={model}", *extra]
        metrics = run_train(args + [f"paths.output_dir={run}", "trainer.enable_progress_bar=false"])
        row["synthetic"] = metrics["test/acc"]
        row["synthetic_cmd"] = "python -m speechrnn.train " + " ".join(args)
        if real_test:
            best = load_model(metrics["best_checkpoint"])
            clips = folder_clips(real_test, best.labels, cache_dir)
            report = evaluate_clips(best, clips, best.labels, run / "real_test")
            row["real_test"] = report["accuracy"]
            row["real_test_cmd"] = (f"python -m speechrnn.evaluate ckpt_path=<run>/checkpoints/best.ckpt "
                                    f"folder={real_test}")
        if fsdd:
            fargs = [f"model={model}", "experiment=fsdd", f"data.root={fsdd}", *extra]
            fm = run_train(fargs + [f"paths.output_dir={out / f'{model}-fsdd'}", "trainer.enable_progress_bar=false"])
            row["fsdd"] = fm["test/acc"]
            row["fsdd_cmd"] = "python -m speechrnn.train " + " ".join(fargs)
        rows.append(row)
        atomic_write_json(out / "ablation.json", rows)
    return rows


def markdown(rows: list[dict]) -> str:
    cols = [c for c in ("synthetic", "fsdd", "real_test") if any(c in r for r in rows)]
    names = {"synthetic": "held-out synthetic speakers (kws12)", "fsdd": "FSDD speaker-disjoint",
             "real_test": "real Speech Commands folder, zero-shot"}
    lines = ["| model | " + " | ".join(names[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(f"{100 * r[c]:.2f} %" if c in r else "-" for c in cols) + " |")
    lines.append("")
    for r in rows:
        for c in cols:
            if f"{c}_cmd" in r:
                lines.append(f"- {r['model']}, {names[c]}: `{r[f'{c}_cmd']}`")
    return "\n".join(lines)


@friendly
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m speechrnn.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="rnn,gru,lstm", help="comma-separated encoders (default rnn,gru,lstm)")
    p.add_argument("--real-test", help="a real Speech Commands-layout folder evaluated zero-shot")
    p.add_argument("--fsdd", help="the FSDD folder in Speech Commands layout")
    p.add_argument("--out", default="runs/ablation", help="where runs and ablation.json go")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run, e.g. seed=1")
    args = p.parse_args(argv)
    rows = ablate(args.models.split(","), Path(args.out), args.real_test, args.fsdd, args.overrides)
    print(markdown(rows))


if __name__ == "__main__":
    main()
