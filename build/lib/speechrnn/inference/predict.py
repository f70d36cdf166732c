"""Batched inference of a ``KeywordSpotter`` on decoded clips."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from speechrnn.core.audio import as_float
from speechrnn.model.spotter import KeywordSpotter


@torch.no_grad()
def _batched(model: KeywordSpotter, waves: np.ndarray | Tensor, batch_size: int,
             fn: Callable[[Tensor], tuple[Tensor, ...]], progress: bool = False) -> list[tuple[Tensor, ...]]:
    """``fn`` on clips ``(N, S)`` in batches of float waveforms on the model's device; its outputs on CPU.

    With ``progress``, a bar over the clips on stderr when stderr is a terminal (not in pipes,
    logs or tests), erased when done.
    """
    model.eval()
    device = next(model.parameters()).device
    out = []
    with tqdm(total=len(waves), desc="classifying", unit="clip", leave=False,
              disable=None if progress else True) as bar:  # None: tqdm draws only on a terminal
        for start in range(0, len(waves), batch_size):
            chunk = as_float(torch.as_tensor(np.array(waves[start: start + batch_size])))  # a copy: maps are read-only
            out.append(tuple(t.cpu() for t in fn(chunk.to(device))))
            bar.update(len(chunk))
    return out


def predict_proba(model: KeywordSpotter, waves: np.ndarray | Tensor, batch_size: int = 256) -> Tensor:
    """Class probabilities ``(N, C)`` for clips ``(N, S)`` (int16 PCM or float in [-1, 1])."""
    out = _batched(model, waves, batch_size, lambda x: (model(x).softmax(-1),))  # [((b, C),)]
    return torch.cat([probs for probs, in out]) if out else torch.zeros(0, len(model.labels))


def predict_steps(model: KeywordSpotter, waves: np.ndarray | Tensor, batch_size: int = 256,
                  progress: bool = False) -> tuple[Tensor, Tensor]:
    """``predict_proba``'s probabilities ``(N, C)``, and the class each step's y_t = W_hy h_t + b_y names ``(N, T)``.

    The second shows how the answer forms over the clip: for a short word padded with digital
    silence, whether the steps after the word refine the answer or wear it away. One pass does both.
    ``progress`` shows a bar over the clips on a terminal (evaluation: tens of seconds on a large set).
    """
    def both(x: Tensor) -> tuple[Tensor, Tensor]:
        logits, hs = model.forward_features(model.frontend(x))  # (b, C) from h_T as forward gives them, (b, T, H)
        return logits.softmax(-1), model.encoder.readout(hs).argmax(-1)  # (b, C), (b, T)
    out = _batched(model, waves, batch_size, both, progress)
    if not out:
        return torch.zeros(0, len(model.labels)), torch.zeros(0, 0, dtype=torch.long)
    probs, steps = zip(*out)
    return torch.cat(probs), torch.cat(steps)
