"""The recurrent encoders a keyword spotter can use, all called alike.

``encoder.kind`` picks the recurrence: ``rnn`` is the product's basic (Elman) RNN
(``speechrnn.model.rnn``); ``gru`` and ``lstm`` are ``torch.nn`` baselines run on the
same pipeline. Every encoder exposes the same calls, so the rest of the product never
asks which it is: ``forward(x) -> (hs, h_n)`` over a clip, ``readout(h) -> scores`` (whose
weight and bias it names in ``readout_names``, one row per class), and for streaming
``init_state(B)``, ``step(x_t, state) -> (h_t, state)`` and ``hidden(state) -> h``.
A state is one tensor whose last two axes are ``(B, H)``, so rows can be reset alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from speechrnn.model.rnn import ElmanRNN

ENCODER_KINDS = ("rnn", "gru", "lstm")


class TorchRecurrent(nn.Module):
    """A ``torch.nn.GRU`` or ``torch.nn.LSTM`` with a linear readout, shaped like ``ElmanRNN``.

    Args:
        kind (str): ``"gru"`` or ``"lstm"``.
        input_size (int): features per step.
        hidden_size (int): units per layer.
        output_size (int): classes.
        num_layers (int, optional): stacked layers. (Default: ``1``)
        dropout (float, optional): in training, dropout on what a layer passes up to the next, as
            ``ElmanRNN``'s; nothing with one layer. (Default: ``0``)
    """

    readout_names = ("out.weight", "out.bias")  # as ElmanRNN's W_hy, b_y

    def __init__(self, kind: str, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        cls = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.lstm = kind == "lstm"  # its state is (h, c), stacked here into one tensor
        # one layer has no layer above it: torch warns on dropout there, so none is passed
        self.rnn = cls(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0)
        self.out = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, h0: Any = None) -> tuple[Tensor, Any]:
        hs, h_n = self.rnn(x, h0)  # (B, T, H)
        return hs, h_n

    def readout(self, h: Tensor) -> Tensor:
        return self.out(h)

    def init_state(self, batch: int) -> Tensor:
        """Zeros: ``(L, B, H)``, or ``(2, L, B, H)`` for the LSTM's (h, c)."""
        zeros = self.out.weight.new_zeros(self.rnn.num_layers, batch, self.rnn.hidden_size)
        return torch.stack([zeros, zeros]) if self.lstm else zeros

    def step(self, x_t: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One frame: x_t (B, I), a state or zeros -> (h_t (B, H) of the top layer, new state)."""
        state = self.init_state(len(x_t)) if state is None else state
        _, hx = self.rnn(x_t[:, None], tuple(state) if self.lstm else state)  # (L, B, H) or ((L, B, H), (L, B, H))
        state = torch.stack(hx) if self.lstm else hx
        return self.hidden(state), state

    def hidden(self, state: Tensor) -> Tensor:
        """The top layer's h in a state (or in a state's gradient) -> (B, H)."""
        return state[0, -1] if self.lstm else state[-1]


def build_encoder(kind: str, input_size: int, num_classes: int, hidden_size: int = 128,
                  num_layers: int = 1, dropout: float = 0.0, **rnn_options: Any) -> nn.Module:
    """The recurrent encoder named by ``kind``; ``dropout`` between layers for every kind, ``rnn_options``
    (initialisations) for ``ElmanRNN`` only."""
    if kind not in ENCODER_KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}: expected one of {ENCODER_KINDS}")
    if kind == "rnn":
        return ElmanRNN(input_size, hidden_size, output_size=num_classes, num_layers=num_layers, dropout=dropout,
                        **rnn_options)
    if rnn_options:
        raise ValueError(f"options {sorted(rnn_options)} apply to the basic RNN only, not {kind!r}")
    return TorchRecurrent(kind, input_size, hidden_size, num_classes, num_layers, dropout)
