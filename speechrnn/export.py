"""Entry point: ``python -m speechrnn.export CKPT --out DIR [--int8]`` writes deployable models and checks them.

``DIR/model.onnx`` and ``DIR/model.pt`` hold the whole model, frontend included, with the
labels and window geometry in their metadata; ``--int8`` adds ``model.int8.onnx``. Each is
compared with the PyTorch model on test clips (``speechrnn.inference.export``), and
``python -m speechrnn.transcribe DIR/model.onnx clips/`` runs any of them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from speechrnn.core.cli import version_line
from speechrnn.core.errors import friendly
from speechrnn.inference.export import TOLERANCE, check_clips, check_int8, export


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechrnn.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("checkpoint", help="a .ckpt written by python -m speechrnn.train")
    p.add_argument("--out", required=True, help="folder for model.onnx and model.pt")
    p.add_argument("--format", choices=("all", "onnx", "torchscript"), default="all")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx, int8 weights quantised from model.onnx (written too)")
    args = p.parse_args(argv)
    formats = ("torchscript", "onnx") if args.format == "all" else (args.format,)
    if args.int8 and "onnx" not in formats:
        formats += ("onnx",)
    try:
        diffs = friendly(export)(args.checkpoint, args.out, formats)
        int8 = check_int8(Path(args.out)) if args.int8 else None
    except ImportError as err:
        print(f"error: ONNX export needs onnx, onnxscript and onnxruntime ({err}): pip install 'speechrnn[export]'",
              file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    for name, diff in diffs.items():
        print(f"{Path(args.out) / name}: max |logit - PyTorch| = {diff:.2e} on {len(check_clips(16000, 16))} "
              f"test clips (tolerance {TOLERANCE:g})")
    if int8:
        print(f"{Path(args.out) / 'model.int8.onnx'}: same label as model.onnx on {int8['agreement']:.0%} of "
              f"{int8['clips']} test clips, max |probability difference| = {int8['max_prob_diff']:.3f}; "
              f"{int8['int8_bytes'] / 1e3:.0f} kB, float {int8['float_bytes'] / 1e3:.0f} kB "
              f"({int8['float_bytes'] / int8['int8_bytes']:.1f}x smaller)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
