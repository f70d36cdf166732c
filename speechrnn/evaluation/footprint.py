"""What a trained spotter costs on a device, in the terms of ARM's ML-KWS tables.

The network only, as those tables count it (the MFCC frontend is the same for every model:
a 512-point FFT and a 40-band filterbank per 10 ms frame):

- parameters of the encoder and its readout;
- multiply-accumulates per second of audio: every entry of a recurrent weight matrix is one
  multiply-accumulate per step (W_xh and W_hh for the basic RNN, three of each for a GRU,
  four for an LSTM), at the model's steps per second; the readout once a second (one
  decision per 1 s window);
- weight memory at float32 (4 bytes a parameter) and int8 (1 byte; scales and zero points
  are a few bytes a tensor), and the size of the exported ``model.onnx`` and
  ``model.int8.onnx`` files, frontend included (``speechrnn.inference.export``);
- the latency of one streaming step (``encoder.step``, one frame, batch 1, one thread).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from speechrnn.core.audio import as_float
from speechrnn.core.machine import torch_threads
from speechrnn.core.timing import race
from speechrnn.data.cache import ClipArray
from speechrnn.inference.backends import OnnxBackend
from speechrnn.inference.export import export, quantize_int8
from speechrnn.model.spotter import KeywordSpotter


def parameter_count(model: KeywordSpotter) -> int:
    """Trainable parameters of the network (the frontend has none: its statistics are buffers)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def steps_per_second(model: KeywordSpotter) -> int:
    """Encoder steps for one second of audio: the frames of a 1 s clip, stacked (98 // 8 = 12 by default)."""
    rate = model.frontend.sample_rate
    with torch.no_grad():
        return model.frontend(torch.zeros(1, rate)).shape[1]  # (1, T, F)


def macs_per_second(encoder: nn.Module, steps: int) -> int:
    """Multiply-accumulates of ``encoder`` for one second of audio: ``steps`` steps of the recurrence and one readout.

    A step multiplies every recurrent weight matrix by a vector once, so its MACs are the
    entries of those matrices; biases are additions and are not counted.
    """
    weight = encoder.readout_names[0]
    matrices = dict((name, p) for name, p in encoder.named_parameters() if p.dim() == 2)
    readout = matrices.pop(weight)
    return steps * sum(p.numel() for p in matrices.values()) + readout.numel()


def step_latency(model: KeywordSpotter, seconds: float = 1.0) -> float:
    """Best seconds of one streaming step of the model's encoder (``encoder.step``, batch 1, one thread)."""
    encoder, x_t = model.encoder, torch.randn(1, model.frontend.dim)  # (B=1, I)
    state = {"s": encoder.init_state(1)}

    def step():
        state["s"] = encoder.step(x_t, state["s"])[1]

    with torch_threads(1), torch.inference_mode():
        return race({"step": step}, sync=lambda: None, seconds=seconds)["step"]


def export_sizes(ckpt: str | Path, out: str | Path) -> dict[str, int]:
    """Write ``out/model.onnx`` and ``out/model.int8.onnx`` of ``ckpt`` (checked against PyTorch); their
    sizes in bytes."""
    out = Path(out)
    export(ckpt, out, ("onnx",))
    quantize_int8(out / "model.onnx", out / "model.int8.onnx")
    return {"onnx_bytes": (out / "model.onnx").stat().st_size,
            "int8_onnx_bytes": (out / "model.int8.onnx").stat().st_size}


def onnx_accuracy(path: str | Path, clips: ClipArray) -> float:
    """Accuracy of the exported model at ``path`` (run as ``transcribe`` runs it) on decoded, labelled clips."""
    probs = OnnxBackend(path).predict(as_float(torch.from_numpy(np.array(clips.waves))))  # (N, C)
    return float((probs.argmax(-1).numpy() == np.asarray(clips.labels)).mean())
