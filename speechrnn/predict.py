"""Batched inference of a ``KeywordSpotter`` on decoded clips."""

from __future__ import annotations

import numpy as np
import torch

from speechrnn.audio import as_float
from speechrnn.model import KeywordSpotter


@torch.no_grad()
def predict_proba(model: KeywordSpotter, waves: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Class probabilities ``(N, C)`` for clips ``(N, S)`` (int16 PCM or float in [-1, 1])."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(waves), batch_size):
        chunk = as_float(torch.as_tensor(np.array(waves[start: start + batch_size])))  # a copy: memory maps are read-only
        out.append(model(chunk.to(device)).softmax(-1).cpu())  # (b, C)
    return torch.cat(out) if out else torch.zeros(0, len(model.labels))
