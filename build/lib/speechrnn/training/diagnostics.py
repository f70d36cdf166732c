"""Training diagnostics of the recurrence: how far back gradients reach.

``hidden_grad_norms`` measures ||dL/dh_t|| for every step t of a batch: the
vanishing-gradient picture. A plain tanh RNN typically shows the norm falling
geometrically from t = T back to t = 1 (early frames barely influence the
weights), where a GRU or LSTM keeps it flat. It works for any encoder of
``speechrnn.model.spotter`` by unrolling it with ``step`` and keeping each state's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def hidden_grad_norms(encoder: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean over the batch of ||dL/dh_t|| of the top layer, for t = 1..T.

    Args:
        encoder (nn.Module): an encoder of ``speechrnn.model.spotter`` (``step``, ``hidden``, ``readout``).
        x (Tensor): features ``(B, T, F)``.
        y (Tensor): class indices ``(B,)``; L is the cross-entropy of the last state's readout.

    Returns:
        Tensor: ``(T,)``, detached.
    """
    with torch.enable_grad():
        state, states = None, []
        for t in range(x.shape[1]):
            _, state = encoder.step(x[:, t], state)  # the state the next step reads
            states.append(state)
        loss = F.cross_entropy(encoder.readout(encoder.hidden(states[-1])), y)
        grads = torch.autograd.grad(loss, states)
    return torch.stack([encoder.hidden(g).norm(dim=-1).mean() for g in grads]).detach()  # (T,)
