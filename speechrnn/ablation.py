"""Entry point: ``python -m speechrnn.ablation`` regenerates the README's comparison table.

For each encoder (the basic RNN, GRU, LSTM; same features, seeds and epoch budget)
it trains on the embedded synthetic corpus and reports accuracy on its held-out
speakers. ``--real-folder`` (real speech in the Speech Commands layout, with list files)
adds three tracks scored on that folder's dev split, its ``testing_list.txt``: the
synthetic model zero-shot, a model trained on the folder's training split alone, and the
synthetic model fine-tuned there (``init_from``). ``--real-test`` adds zero-shot accuracy
on a whole real folder (e.g. the canonical v0.02 test set), and ``--fsdd`` trains again
on FSDD with a speaker-disjoint split. Every cell names the command that reproduces it;
with ``--seeds 0,1,2`` each cell is the mean and std over seeds. The table is printed as
Markdown (with a basic RNN - GRU row when both ran), saved as JSON, and with ``--readme``
written into a README between its marker lines.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from speechrnn.core.cli import version_line
from speechrnn.core.atomic import atomic_write_json, atomic_write_text
from speechrnn.core.errors import SpeechRNNError, friendly
from speechrnn.evaluation.evaluate import evaluate_config
from speechrnn.training.fit import train
from speechrnn.training.config import compose


def run_train(overrides: list[str]) -> dict:
    return train(compose("train", overrides))


COLUMNS = {"synthetic": "held-out synthetic speakers (kws12)",
           "real_dev": "real dev split, zero-shot",
           "real_only": "real dev split, trained on real only",
           "finetuned": "real dev split, synthetic then fine-tuned",
           "fsdd": "FSDD speaker-disjoint",
           "real_test": "real Speech Commands folder, zero-shot"}
# what the commands call the synthetic run's checkpoint: a reader's own run lands elsewhere
SYNTHETIC_BEST = "<synthetic run>/checkpoints/best.ckpt"
README_BEGIN, README_END = "<!-- ablation:begin -->", "<!-- ablation:end -->"
DONE = "ablation_run.json"  # in a finished run's folder: its arguments and metrics


@dataclass(frozen=True)
class Sweep:
    """What every cell of a sweep shares.

    Attributes:
        out (Path): where the runs and ``ablation.json`` go.
        real_test (str | None): a real folder evaluated whole, zero-shot.
        real_folder (str | None): a real folder with list files: zero-shot on its testing
            split, and trained from scratch and fine-tuned on its training split.
        fsdd (str | None): the FSDD folder in Speech Commands layout.
        extra (tuple[str, ...]): overrides of the synthetic and FSDD runs.
        real_extra (tuple[str, ...]): overrides of the runs on ``real_folder`` only; the
            fine-tuned run must keep the synthetic run's features and encoder.
        cache_dir (str): where the evaluated folders' decoded clips are kept.
    """

    out: Path
    real_test: str | None = None
    real_folder: str | None = None
    fsdd: str | None = None
    extra: tuple[str, ...] = ()
    real_extra: tuple[str, ...] = ()
    cache_dir: str = "data/cache"


def _run_dir(sweep: Sweep, model: str, kind: str, seed: int) -> Path:
    """Where the ``kind`` run (synthetic, real, finetuned, fsdd) of ``model`` and ``seed`` goes."""
    return sweep.out / f"{model}-{kind}-seed{seed}"


def _command(tool: str, args: list[str], best: str = "") -> str:
    """The command line of a cell, the synthetic run's checkpoint ``best`` named ``SYNTHETIC_BEST``."""
    line = f"python -m speechrnn.{tool} " + " ".join(args)
    return line.replace(best, SYNTHETIC_BEST) if best else line


def _trained(args: list[str], run: Path) -> dict:
    """The metrics of training with ``args`` into ``run``: reused when ``run`` already finished with
    the same arguments, so an interrupted sweep, or one split over processes (``--models rnn`` and
    ``--models gru`` side by side, then both together to write the table), trains each cell once."""
    try:
        done = json.loads((run / DONE).read_text())
        if done["args"] == args and Path(done["metrics"]["best_checkpoint"]).exists():
            return done["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    metrics = run_train(args + [f"paths.output_dir={run}", "trainer.enable_progress_bar=false"])
    atomic_write_json(run / DONE, {"args": args, "metrics": {k: metrics[k] for k in ("test/acc", "best_checkpoint")}})
    return metrics


def _train_cell(cell: dict, col: str, args: list[str], run: Path, best: str = "") -> str:
    """Train with ``args`` into ``run`` (or reuse that run, see ``_trained``); its test accuracy and command go
    under ``col``. Returns its best checkpoint."""
    metrics = _trained(args, run)
    cell[col], cell[f"{col}_cmd"] = metrics["test/acc"], _command("train", args, best)
    return metrics["best_checkpoint"]


def _evaluate_cell(cell: dict, col: str, best: str, args: list[str], out: Path, cache_dir: str) -> None:
    """Evaluate ``best`` as ``python -m speechrnn.evaluate ckpt_path=<best> <args>`` does, reports into ``out``;
    its accuracy and command go under ``col``."""
    shown = [f"ckpt_path={best}", *args]
    cfg = compose("evaluate", shown + [f"out_dir={out}", f"cache_dir={cache_dir}", f"data.cache_dir={cache_dir}"])
    cell[col], cell[f"{col}_cmd"] = evaluate_config(cfg)["accuracy"], _command("evaluate", shown, best)


def _real_folder_cells(cell: dict, model: str, seed: int, best: str, sweep: Sweep) -> None:
    """The three tracks on ``sweep.real_folder``'s dev (testing) split: the synthetic run's ``best`` zero-shot,
    trained on the folder alone, and ``best`` fine-tuned on it."""
    real = ["data=folder", f"data.root={sweep.real_folder}"]
    _evaluate_cell(cell, "real_dev", best, real + ["split=testing"],
                   _run_dir(sweep, model, "synthetic", seed) / "real_dev", sweep.cache_dir)
    tail = [*real, *sweep.real_extra, f"seed={seed}"]
    _train_cell(cell, "real_only", [f"model={model}", *tail], _run_dir(sweep, model, "real", seed))
    _train_cell(cell, "finetuned", [f"model={model}", f"init_from={best}", *tail],
                _run_dir(sweep, model, "finetuned", seed), best)


def ablate_one(model: str, seed: int, sweep: Sweep) -> dict:
    """One encoder, one seed: every column's accuracy and the command that reproduces it."""
    cell = {}
    run = _run_dir(sweep, model, "synthetic", seed)
    best = _train_cell(cell, "synthetic", [f"model={model}", *sweep.extra, f"seed={seed}"], run)
    if sweep.real_test:
        _evaluate_cell(cell, "real_test", best, [f"folder={sweep.real_test}"], run / "real_test", sweep.cache_dir)
    if sweep.real_folder:
        _real_folder_cells(cell, model, seed, best, sweep)
    if sweep.fsdd:
        _train_cell(cell, "fsdd", [f"model={model}", "experiment=fsdd", f"data.root={sweep.fsdd}", *sweep.extra,
                                   f"seed={seed}"], _run_dir(sweep, model, "fsdd", seed))
    return cell


def ablate(models: list[str], sweep: Sweep, seeds: list[int] = (0,)) -> list[dict]:
    """Every encoder on every seed; a row holds each column's mean, its std over seeds and the per-seed values.

    One seed moves a column by a point or more (600 and 1,000 test clips, and float reduction
    order), so comparisons within a point need several seeds.
    """
    if any(o.split("=", 1)[0].lstrip("+") == "seed" for o in sweep.extra + sweep.real_extra):
        raise ValueError("give seeds with --seeds, not as a seed= override")
    rows = []
    for model in models:
        cells = [ablate_one(model, seed, sweep) for seed in seeds]
        row = {"model": model, "seeds": list(seeds)}
        for col in (c for c in COLUMNS if c in cells[0]):
            values = torch.tensor([c[col] for c in cells], dtype=torch.float64)
            row[col], row[f"{col}_std"] = values.mean().item(), (values.std().item() if len(values) > 1 else 0.0)
            row[f"{col}_runs"] = values.tolist()
            row[f"{col}_cmd"] = cells[0][f"{col}_cmd"].replace(f"seed={seeds[0]}", "seed=<seed>")
        rows.append(row)
        atomic_write_json(sweep.out / "ablation.json", rows)
    return rows


def gap_row(rows: list[dict], cols: list[str]) -> str | None:
    """The table row "basic RNN - GRU": per column, the RNN's mean minus the GRU's, in points.

    The issue's target is at least -1 on every column. ``None`` unless both encoders are in ``rows``.
    """
    by_model = {r["model"]: r for r in rows}
    if not {"rnn", "gru"} <= by_model.keys():
        return None
    rnn, gru = by_model["rnn"], by_model["gru"]
    gaps = [f"{100 * (rnn[c] - gru[c]):+.2f}" if c in rnn and c in gru else "-" for c in cols]
    return "| basic RNN - GRU (points) | " + " | ".join(gaps) + " |"


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
    if gap := gap_row(rows, cols):
        lines.append(gap)
    lines.append("")
    if rows:
        lines.append(f"Seeds: {', '.join(map(str, rows[0]['seeds']))}.")
    commands = [f"- {r['model']}, {COLUMNS[c]}: `{r[f'{c}_cmd']}`" for r in rows for c in cols if f"{c}_cmd" in r]
    if any(SYNTHETIC_BEST in line for line in commands):
        lines.append(f"`{SYNTHETIC_BEST}`: the best checkpoint of the synthetic run of the same model and seed.")
    if "real_dev" in cols:
        lines.append("Real dev split: the real folder's testing_list.txt; trained on real only: on its training split.")
    return "\n".join(lines + commands)


def with_table(text: str, table: str, name: str) -> str:
    """``text`` with ``table`` in place of what lies between its marker lines; the rest is left as it is.

    Raises:
        SpeechRNNError: ``text`` lacks one ``README_BEGIN`` line followed by one ``README_END`` line.
    """
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1 or end < begin:
        raise SpeechRNNError(f"{name}: no place for the table: it needs one line {README_BEGIN} and, below it, one "
                             f"line {README_END}; add them where the table goes")
    return text[:begin + len(README_BEGIN)] + "\n" + table + "\n" + text[end:]


def read_readme(path: str) -> str:
    """The README's text, byte for byte (newlines as they are); a file that cannot be read is a one-line error."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as err:
        raise SpeechRNNError(f"{path}: cannot read it ({err.strerror}); --readme names the README to write "
                             "the table into") from None


def write_readme(path: str, table: str) -> None:
    """Put ``table`` between the marker lines of the README at ``path``, atomically."""
    atomic_write_text(path, with_table(read_readme(path), table, path))


@friendly
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m speechrnn.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--models", default="rnn,gru,lstm", help="comma-separated encoders (default rnn,gru,lstm)")
    p.add_argument("--real-folder", help="real speech in the Speech Commands layout with list files: zero-shot, "
                                         "trained-on-it-only and fine-tuned columns, each on its testing split")
    p.add_argument("--real-overrides", default="",
                   help="Hydra overrides of the --real-folder training runs only, one quoted string, e.g. "
                        "'trainer.max_epochs=30'; features and encoder must stay the synthetic runs' (init_from)")
    p.add_argument("--real-test", help="a real Speech Commands-layout folder evaluated zero-shot")
    p.add_argument("--fsdd", help="the FSDD folder in Speech Commands layout")
    p.add_argument("--out", default="runs/ablation", help="where runs and ablation.json go")
    p.add_argument("--seeds", default="0", help="comma-separated seeds, each a full run (default 0)")
    p.add_argument("--readme", help="also write the table between the README's lines "
                                    f"{README_BEGIN} and {README_END}")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the synthetic and FSDD runs, "
                                                "e.g. trainer.max_epochs=20")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.readme:
        with_table(read_readme(args.readme), "", args.readme)  # a README without markers fails now, not after the sweep
    sweep = Sweep(Path(args.out), real_test=args.real_test, real_folder=args.real_folder, fsdd=args.fsdd,
                  extra=tuple(args.overrides), real_extra=tuple(shlex.split(args.real_overrides)))
    table = markdown(ablate(args.models.split(","), sweep, seeds))
    print(table)
    if args.readme:
        command = shlex.join(["python", "-m", "speechrnn.ablation", *(sys.argv[1:] if argv is None else argv)])
        write_readme(args.readme, f"{table}\n\nWritten by `{command}` with {version_line()}.")


if __name__ == "__main__":
    main()
