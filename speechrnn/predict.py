"""Batched inference of a ``KeywordSpotter`` on decoded clips."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from speechrnn.audio import as_float
from speechrnn.model import KeywordSpotter


@torch.no_grad()
def _batched(model: KeywordSpotter, waves: np.ndarray | Tensor, batch_size: int,
             fn: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """``fn`` on clips ``(N, S)`` in batches of float waveforms on the model's device; its outputs on CPU."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(waves), batch_size):
        chunk = as_float(torch.as_tensor(np.array(waves[start: start + batch_size])))  # a copy: memory maps are read-only
        out.append(fn(chunk.to(device)).cpu())
    return out


def predict_proba(model: KeywordSpotter, waves: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
    """Class probabilities ``(N, C)`` for clips ``(N, S)`` (int16 PCM or float in [-1, 1])."""
    out = _batched(model, waves, batch_size, lambda x: model(x).softmax(-1))  # [(b, C)]
    return torch.cat(out) if out else torch.zeros(0, len(model.labels))


def step_predictions(model: KeywordSpotter, waves: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
    """The class each step's output y_t = W_hy h_t + b_y names, ``(N, T)``; the model's prediction is step T's.

    How the answer forms over the clip: for a short word padded with digital silence it
    shows whether the steps after the word refine the answer or wear it away.
    """
    def steps(x: Tensor) -> Tensor:
        hs, _ = model.encoder(model.frontend(x))  # (b, T, H)
        return model.encoder.readout(hs).argmax(-1)  # (b, T)
    out = _batched(model, waves, batch_size, steps)
    return torch.cat(out) if out else torch.zeros(0, 0, dtype=torch.long)
