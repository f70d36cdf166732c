"""Training on a GPU through CUDA graphs: the basic RNN's forward and backward, replayed.

On a GPU the eager ``ElmanRNN`` launches a few small kernels per step from Python and
loses to cuDNN (README, Speed: 0.43-0.50x ``nn.RNN`` at T=12 on an H200). Captured once
and replayed as CUDA graphs (``torch.cuda.make_graphed_callables``: the forward as one
graph, the hand-written backprop through time as another, inside one autograd node) the
same code beat cuDNN 2.0-2.7x at T=12 in the bench. ``GraphedEncoder`` is that path for
training: ``KeywordModule`` puts it in front of the encoder when it trains on one CUDA
device (``trainer=gpu``) with ``model.cuda_graphs`` on, as ``conf/model/rnn.yaml`` sets it.

A graph replays fixed shapes from fixed memory, so one is captured per training batch
shape (the full batch, and the shorter last batch of an epoch when there is one); any
other call runs the encoder eagerly: evaluation (``eval()`` or no gradients), and shapes
beyond ``max_shapes``. A capture that fails (mixed precision with autocast's cache, say) says why
in one warning and training goes on eagerly. The optimiser, the weight average and checkpoint loading all update
the weights in place, which the graphs read as they are at each replay.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class _Unroll(nn.Module):
    """The encoder's forward as a module of its own: ``make_graphed_callables`` replaces the
    ``forward`` of the module it captures, so each captured shape gets its own, and the encoder
    itself stays eager."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)  # (B, T, H), (L, B, H)


class GraphedEncoder:
    """Calls ``encoder(x)`` in training as CUDA graphs, one pair per input shape; eagerly otherwise.

    Args:
        encoder (nn.Module): an encoder of ``speechrnn.model.spotter`` on a CUDA device, with no
            module hooks (``make_graphed_callables`` refuses them).
        max_shapes (int, optional): at most this many shapes are captured; later new shapes run
            eagerly. (Default: ``2``: a batch size and an epoch's last, shorter batch)
        capture (callable, optional): the capturing function, ``(module, sample_args) -> module``.
            (Default: ``torch.cuda.make_graphed_callables`` with unused inputs allowed)

    Shapes:
        ``x (B, T, I) -> (hs (B, T, H), h_n (L, B, H))``, as the encoder. The outputs of a replay
        live in the graph's memory until the next replay of the same shape overwrites them.
    """

    def __init__(self, encoder: nn.Module, max_shapes: int = 2,
                 capture: Callable[[nn.Module, tuple[Tensor, ...]], nn.Module] | None = None):
        self.encoder, self.max_shapes = encoder, max_shapes
        # the encoder's readout (W_hy, b_y) is a parameter its forward does not use: allowed, its gradient
        # comes from the readout's own eager call outside the graph
        self.capture = capture or functools.partial(torch.cuda.make_graphed_callables, allow_unused_input=True)
        self.graphs: dict[tuple[int, ...], nn.Module] = {}

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not (self.encoder.training and torch.is_grad_enabled()):
            return self.encoder(x)
        shape = tuple(x.shape)
        graphed = self.graphs.get(shape)
        if graphed is None:
            if len(self.graphs) >= self.max_shapes:
                return self.encoder(x)
            log.info("capturing the encoder's forward and backward as CUDA graphs for input shape %s", shape)
            try:  # warms up on, and captures with, a copy of this batch; requires_grad as the real input's
                graphed = self.capture(_Unroll(self.encoder), (x.detach().clone().requires_grad_(x.requires_grad),))
            except Exception as err:  # e.g. autocast with its cache on (precision=16-mixed): train on, eagerly
                log.warning("CUDA graphs off, the encoder trains eagerly: %s: %s", type(err).__name__, err)
                self.max_shapes = 0
                return self.encoder(x)
            self.graphs[shape] = graphed
        return graphed(x)
