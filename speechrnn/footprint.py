"""Entry point: ``python -m speechrnn.footprint`` regenerates the README's table of models small enough for a device.

After ARM's ML-KWS tables: the basic RNN at hidden 64, 128 and 256 with 1 and 2 layers,
and a GRU and an LSTM with the parameter count of three of them (the closest hidden size).
Each is trained on the embedded synthetic corpus with the same recipe, budget and seed,
and scored on its held-out speakers; with ``--real-folder`` also zero-shot on that folder's
dev split (its ``testing_list.txt``), as the float model and as its int8 ONNX export. Then
``speechrnn.evaluation.footprint`` measures parameters, multiply-accumulates per second,
weight memory, file sizes and the streaming step's latency. Finished runs are reused
(``speechrnn.training.sweep``), so an interrupted or split sweep trains each model once.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from speechrnn.core.atomic import atomic_write_json
from speechrnn.core.cli import version_line
from speechrnn.core.errors import friendly
from speechrnn.core.readme import check_readme, write_readme
from speechrnn.evaluation.evaluate import config_clips, evaluate_config
from speechrnn.evaluation.footprint import (export_sizes, macs_per_second, onnx_accuracy, parameter_count,
                                            step_latency, steps_per_second)
from speechrnn.model.checkpoint import load_model
from speechrnn.model.encoders import build_encoder
from speechrnn.model.features import MFCC
from speechrnn.training.config import compose
from speechrnn.training.sweep import command_line, evaluation, trained

RNN_GRID = ((64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2))  # (hidden, layers) of the basic RNN
MATCHED = ((128, 1), (256, 1), (256, 2))  # basic RNNs whose parameter count a GRU and an LSTM are given
README_SECTION = "footprint"
EXPORT_TOOLS = ("onnx", "onnxscript", "onnxruntime")  # speechrnn[export]: the exports it measures


def encoder_params(kind: str, hidden: int, layers: int, input_size: int, classes: int) -> int:
    """Parameters of an encoder with its readout."""
    encoder = build_encoder(kind, input_size, classes, hidden_size=hidden, num_layers=layers)
    return sum(p.numel() for p in encoder.parameters())


def matched_hidden(kind: str, target: int, input_size: int, classes: int) -> int:
    """The hidden size of a one-layer ``kind`` encoder whose parameter count is closest to ``target``."""
    lo, hi = 1, 1
    while encoder_params(kind, hi, 1, input_size, classes) < target:  # parameters grow with the hidden size
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if encoder_params(kind, mid, 1, input_size, classes) < target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(encoder_params(kind, h, 1, input_size, classes) - target))


def grid(extra: list[str]) -> list[tuple[str, int, int]]:
    """``(kind, hidden, layers)`` of every model: the basic RNNs, then a GRU and an LSTM matched to each
    of ``MATCHED``."""
    cfg = compose("train", extra)
    input_size, classes = MFCC(**cfg.features).dim, len(instantiate(cfg.data).labels)
    models = [("rnn", h, n) for h, n in RNN_GRID]
    for h, n in MATCHED:
        target = encoder_params("rnn", h, n, input_size, classes)
        models += [(kind, matched_hidden(kind, target, input_size, classes), 1) for kind in ("gru", "lstm")]
    return models


def measure(kind: str, hidden: int, layers: int, seed: int, out: Path, extra: list[str], real_folder: str | None,
            cache_dir: str) -> dict:
    """Train (or reuse) one model and measure it: a row of the table, with the commands behind its accuracies."""
    name = f"{kind}-h{hidden}-l{layers}"
    args = [f"model={kind}", f"model.encoder.hidden_size={hidden}", f"model.encoder.num_layers={layers}",
            *extra, f"seed={seed}"]
    run = out / f"{name}-seed{seed}"
    metrics = trained(args, run)
    best = metrics["best_checkpoint"]
    model = load_model(best).eval()
    row = dict(model=name, kind=kind, hidden=hidden, layers=layers, params=parameter_count(model),
               macs_per_s=macs_per_second(model.encoder, steps_per_second(model)),
               step_s=step_latency(model), synthetic=metrics["test/acc"],
               synthetic_cmd=command_line("train", args), **export_sizes(best, run / "export"))
    if real_folder:
        real = ["data=folder", f"data.root={real_folder}", "split=testing"]
        cfg = evaluation(best, real, run / "real_dev", cache_dir)
        row["real_dev"] = evaluate_config(cfg)["accuracy"]
        row["real_dev_cmd"] = command_line("evaluate", [f"ckpt_path=<{name} run>/checkpoints/best.ckpt", *real])
        row["real_dev_int8"] = onnx_accuracy(run / "export" / "model.int8.onnx", config_clips(cfg, model.labels)[0])
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, then the commands behind the accuracies of the first one."""
    real = any("real_dev" in r for r in rows)
    head = ["model", "parameters", "MACs / s of audio", "float32 weights", "int8 weights", "model.onnx",
            "model.int8.onnx", "streaming step", "held-out synthetic"]
    head += ["real dev", "real dev, int8"] if real else []
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        cells = [r["model"], f"{r['params']:,}", f"{r['macs_per_s'] / 1e6:.2f} M", f"{4 * r['params'] / 1e3:.0f} kB",
                 f"{r['params'] / 1e3:.0f} kB", f"{r['onnx_bytes'] / 1e3:.0f} kB",
                 f"{r['int8_onnx_bytes'] / 1e3:.0f} kB",
                 f"{r['step_s'] * 1e6:.1f} us", f"{100 * r['synthetic']:.2f} %"]
        if real:
            cells += [f"{100 * r['real_dev']:.2f} %" if "real_dev" in r else "-",
                      f"{100 * r['real_dev_int8']:.2f} %" if "real_dev_int8" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Commands behind the accuracies (first row; the others differ in model and size):",
              f"- `{rows[0]['synthetic_cmd']}`"] if rows else []
    if rows and "real_dev_cmd" in rows[0]:
        lines.append(f"- `{rows[0]['real_dev_cmd']}`")
    return "\n".join(lines)


@friendly
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m speechrnn.footprint", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--real-folder", help="real speech in the Speech Commands layout with list files: zero-shot "
                                         "accuracy on its testing split, float and int8")
    p.add_argument("--out", default="runs/footprint", help="where runs and footprint.json go")
    p.add_argument("--seed", type=int, default=0, help="the seed of every run (default 0)")
    p.add_argument("--models", help="comma-separated names to run, e.g. rnn-h64-l1,gru-h61-l1 (default: all)")
    p.add_argument("--readme", help="also write the table between the README's lines "
                                    f"<!-- {README_SECTION}:begin --> and <!-- {README_SECTION}:end -->")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of every training run, e.g. trainer.max_epochs=20")
    args = p.parse_args(argv)
    missing = [m for m in EXPORT_TOOLS if importlib.util.find_spec(m) is None]
    if missing:  # the sizes and int8 accuracy need them: say so now, not after hours of training
        p.error(f"the ONNX sizes and int8 accuracy need {', '.join(EXPORT_TOOLS)} ({', '.join(missing)} not "
                "installed): pip install 'speechrnn[export]'")
    if args.readme:
        check_readme(args.readme, README_SECTION)  # fails now, not after hours of training
    models = grid(args.overrides)
    if args.models:
        names = {f"{kind}-h{hidden}-l{layers}": (kind, hidden, layers) for kind, hidden, layers in models}
        unknown = [name for name in args.models.split(",") if name not in names]
        if unknown:
            p.error(f"--models: no model {', '.join(unknown)} in the grid; it has {', '.join(names)}")
        models = [names[name] for name in args.models.split(",")]
    out = Path(args.out)
    rows = []
    for kind, hidden, layers in models:
        rows.append(measure(kind, hidden, layers, args.seed, out, list(args.overrides), args.real_folder,
                            str(out / "cache")))
        atomic_write_json(out / "footprint.json", rows)
    table = markdown(rows)
    print(table)
    if args.readme:
        command = " ".join(["python -m speechrnn.footprint", *(sys.argv[1:] if argv is None else argv)])
        about = f"torch threads: {torch.get_num_threads()} for training, 1 for the step"
        write_readme(args.readme, f"{table}\n\nWritten by `{command}` with {version_line()}, {about}.", README_SECTION)


if __name__ == "__main__":
    main()
