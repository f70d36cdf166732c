"""Training diagnostics of the recurrence: how far back gradients reach.

``hidden_grad_norms`` measures ||dL/dh_t|| for every step t of a batch: the
vanishing-gradient picture. A plain tanh RNN typically shows the norm falling
geometrically from t = T back to t = 1 (early frames barely influence the
weights), where a GRU or LSTM keeps it flat. It works for any encoder of
``speechrnn.model`` by unrolling it one step at a time and keeping each state's
gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hidden_grad_norms(encoder: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean over the batch of ||dL/dh_t|| of the top layer, for t = 1..T.

    Args:
        encoder (nn.Module): an encoder with ``forward(x, h) -> (hs, h_n)`` and ``readout``.
        x (Tensor): features ``(B, T, F)``.
        y (Tensor): class indices ``(B,)``; L is the cross-entropy of the last state's readout.

    Returns:
        Tensor: ``(T,)``, detached.
    """
    with torch.enable_grad():
        h, states = None, []
        for t in range(x.shape[1]):
            _, h = encoder(x[:, t: t + 1], h)  # h (L, B, H), or (h, c) for an LSTM
            top = h[0] if isinstance(h, tuple) else h
            states.append(top)
        loss = F.cross_entropy(encoder.readout(states[-1][-1]), y)
        grads = torch.autograd.grad(loss, states, allow_unused=True)
    return torch.stack([g[-1].norm(dim=-1).mean() if g is not None else torch.zeros(())
                        for g in grads]).detach()  # (T,)
