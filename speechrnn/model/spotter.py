"""The keyword spotter: MFCC frontend -> recurrent encoder -> last hidden state -> class scores.

The encoder is any of ``speechrnn.model.encoders`` (``encoder.kind``: the basic RNN, or
the GRU/LSTM baselines), all called alike.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from speechrnn.model.encoders import build_encoder
from speechrnn.model.features import MFCC


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

    def forward_features(self, x: Tensor, encode: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
                         ) -> tuple[Tensor, Tensor]:
        """Features ``(B, T, F)`` -> (logits ``(B, C)`` from h_T, per-step hidden states ``(B, T, H)``).

        ``encode`` runs the encoder in its place (training's CUDA graphs, ``speechrnn.training.graphs``)."""
        hs, _ = (encode or self.encoder)(x)  # (B, T, H)
        return self.encoder.readout(hs[:, -1]), hs

    def forward(self, wave: Tensor) -> Tensor:
        logits, _ = self.forward_features(self.frontend(wave))
        return logits
