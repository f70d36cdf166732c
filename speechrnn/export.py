"""Entry point: ``python -m speechrnn.export CKPT --out DIR`` writes deployable models and checks them.

Both files hold the whole model, frontend included: waveform ``(B, 16000)`` float32 in
[-1, 1] at the checkpoint's rate (1 s, the training clip length; the batch is free)
-> logits ``(B, C)``; softmax gives the probabilities.

* ``DIR/model.onnx`` (opset 20, one file): the MFCC is exported too, the STFT as the
  ONNX ``STFT`` operator, so no feature code is needed to run it. Labels, rate and
  window geometry are in its metadata (``speechrnn.inference.backends.model_metadata``);
  ``python -m speechrnn.transcribe DIR/model.onnx clips/`` runs it with onnxruntime.
* ``DIR/model.pt`` (TorchScript, by tracing): the same graph, with the metadata as the
  extra file ``meta.json`` (``torch.jit.load(path, _extra_files={"meta.json": ""})``);
  ``python -m speechrnn.transcribe DIR/model.pt clips/`` runs it with ``torch.jit``.

The clip length is fixed: tracing unrolls the recurrence over its 12 steps (98 frames
stacked 8 at a time). What is exported is the ``KeywordSpotter`` itself: under a tracer
``ElmanRNN.forward`` runs by ``ElmanRNN.step``, one Gemm and Tanh per layer and step;
GRU and LSTM become ONNX ``GRU`` / ``LSTM`` nodes. The frontend is ``MFCC.forward``
itself (its deltas are shifted differences, which export).

Each export is run on test clips and compared with the PyTorch model; the command
fails unless the largest logit difference is under ``TOLERANCE``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from speechrnn.core.cli import version_line
from speechrnn.model.checkpoint import load_model
from speechrnn.core.errors import friendly
from speechrnn.model.spotter import KeywordSpotter
from speechrnn.inference.backends import model_metadata

TOLERANCE = 1e-3  # largest |logit difference| accepted between an export and PyTorch


def check_clips(rate: int, num_samples: int, n: int = 6, seed: int = 0) -> Tensor:
    """Clips to compare an export on ``(n, N)``: noisy tones, noise from -50 to -10 dBFS, digital silence.

    Pure tones are left out on purpose: most of their mel bands hold only float32 FFT
    round-off, whose dB value differs between FFT implementations by whole units.
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / rate
    noise = [v * torch.randn(num_samples, generator=g) for v in (0.003, 0.01, 0.01, 0.03, 0.3)]
    clips = [0.3 * torch.sin(2 * torch.pi * 300 * t) + noise[1], 0.1 * torch.sin(2 * torch.pi * 1200 * t) + noise[2]]
    clips += [noise[0], noise[3], noise[4], torch.zeros(num_samples)]
    return torch.stack(clips[:n])


def export_torchscript(module: nn.Module, example: Tensor, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns about deprecation and python bools it freezes
        traced = torch.jit.trace(module, example)
    traced.save(str(path), _extra_files={"meta.json": json.dumps(meta)})


def export_onnx(module: nn.Module, example: Tensor, path: Path, meta: dict) -> None:
    import onnx

    log = logging.getLogger("torch.onnx")  # it warns that torchvision's operators are not there to register
    level = log.level
    log.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # and prints its progress
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["wave"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    log.setLevel(level)
    graph = onnx.load(str(path))
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def max_diff(model: KeywordSpotter, run, clips: Tensor) -> float:
    """Largest |logit difference| between ``run(clips)`` and the PyTorch model."""
    with torch.no_grad():
        ref = model(clips)
    return float((torch.as_tensor(np.asarray(run(clips))) - ref).abs().max())


def export(ckpt: str | Path, out: str | Path, formats: tuple[str, ...] = ("torchscript", "onnx")) -> dict[str, float]:
    """Write the exports of ``ckpt`` under ``out``; returns each file's largest logit difference.

    Raises:
        RuntimeError: an export differs from PyTorch by more than ``TOLERANCE``.
    """
    model = load_model(ckpt)
    meta = model_metadata(model)
    rate, clip_samples = model.frontend.sample_rate, int(meta["speechrnn.clip_samples"])
    example, clips = check_clips(rate, clip_samples, 2, seed=1), check_clips(rate, clip_samples)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    diffs = {}
    if "torchscript" in formats:
        export_torchscript(model, example, out / "model.pt", meta)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
            ts = torch.jit.load(str(out / "model.pt"))
            diffs["model.pt"] = max_diff(model, ts, clips)
    if "onnx" in formats:
        import onnxruntime as ort

        export_onnx(model, example, out / "model.onnx", meta)
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        diffs["model.onnx"] = max_diff(model, lambda x: session.run(None, {"wave": x.numpy()})[0], clips)
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"exports differ from PyTorch by more than {TOLERANCE}: {bad}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m speechrnn.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("checkpoint", help="a .ckpt written by python -m speechrnn.train")
    p.add_argument("--out", required=True, help="folder for model.onnx and model.pt")
    p.add_argument("--format", choices=("all", "onnx", "torchscript"), default="all")
    args = p.parse_args(argv)
    formats = ("torchscript", "onnx") if args.format == "all" else (args.format,)
    try:
        diffs = friendly(export)(args.checkpoint, args.out, formats)
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
    return 0

if __name__ == "__main__":
    sys.exit(main())
