"""The keyword spotter: MFCC frontend -> recurrent encoder -> last hidden state -> class scores.

``encoder.kind`` picks the recurrence: ``rnn`` is the product's basic (Elman) RNN
(``speechrnn.rnn``); ``gru`` and ``lstm`` are ``torch.nn`` baselines run on the
same pipeline. Every encoder exposes the same two calls, ``forward(x) -> (hs, h_n)``
and ``readout(h) -> scores``, and names its readout's weight and bias (``readout_names``,
one row per class), so the rest of the product never asks which it is.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from speechrnn.features import MFCC
from speechrnn.rnn import ElmanRNN

ENCODER_KINDS = ("rnn", "gru", "lstm")


class TorchRecurrent(nn.Module):
    """A ``torch.nn.GRU`` or ``torch.nn.LSTM`` with a linear readout, shaped like ``ElmanRNN``.

    Args:
        kind (str): ``"gru"`` or ``"lstm"``.
        input_size (int): features per step.
        hidden_size (int): units per layer.
        output_size (int): classes.
        num_layers (int, optional): stacked layers. (Default: ``1``)
    """

    readout_names = ("out.weight", "out.bias")  # as ElmanRNN's W_hy, b_y

    def __init__(self, kind: str, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1):
        super().__init__()
        cls = {"gru": nn.GRU, "lstm": nn.LSTM}[kind]
        self.rnn = cls(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, h0: Any = None) -> tuple[Tensor, Any]:
        hs, h_n = self.rnn(x, h0)  # (B, T, H)
        return hs, h_n

    def readout(self, h: Tensor) -> Tensor:
        return self.out(h)


def build_encoder(kind: str, input_size: int, num_classes: int, hidden_size: int = 128,
                  num_layers: int = 1, **rnn_options: Any) -> nn.Module:
    """The recurrent encoder named by ``kind``; ``rnn_options`` go to ``ElmanRNN`` only."""
    if kind not in ENCODER_KINDS:
        raise ValueError(f"unknown encoder kind {kind!r}: expected one of {ENCODER_KINDS}")
    if kind == "rnn":
        return ElmanRNN(input_size, hidden_size, output_size=num_classes, num_layers=num_layers, **rnn_options)
    if rnn_options:
        raise ValueError(f"options {sorted(rnn_options)} apply to the basic RNN only, not {kind!r}")
    return TorchRecurrent(kind, input_size, hidden_size, num_classes, num_layers)


class KeywordSpotter(nn.Module):
    """Waveform in, keyword scores out; the prediction uses the last hidden state.

    Args:
        labels (list[str]): class names, in output order.
        features (dict): ``MFCC`` keyword arguments.
        encoder (dict): ``build_encoder`` keyword arguments (``kind``, ``hidden_size``, ...).

    Shapes:
        ``(B, N)`` waveform at ``features["sample_rate"]`` -> ``(B, C)`` logits.
    """

    def __init__(self, labels: list[str], features: dict, encoder: dict):
        super().__init__()
        self.labels = list(labels)
        self.frontend = MFCC(**features)
        self.encoder = build_encoder(input_size=self.frontend.dim, num_classes=len(self.labels), **encoder)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``(B, T, F)`` -> (logits ``(B, C)`` from h_T, per-step hidden states ``(B, T, H)``)."""
        hs, _ = self.encoder(x)  # (B, T, H)
        return self.encoder.readout(hs[:, -1]), hs

    def forward(self, wave: Tensor) -> Tensor:
        logits, _ = self.forward_features(self.frontend(wave))
        return logits
