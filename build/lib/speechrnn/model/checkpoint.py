"""Checkpoints: loaded into a ready model with one-line errors (no Lightning needed).

A checkpoint is self-contained: its hyper-parameters hold the labels, the feature
settings and the encoder settings, and its state dict holds the weights and the
frontend's normalisation statistics, so a clip needs nothing else to be classified.
"""

from __future__ import annotations

from pathlib import Path

import torch

from speechrnn.core.errors import SpeechRNNError
from speechrnn.model.spotter import KeywordSpotter

REQUIRED_HPARAMS = ("labels", "features", "encoder")


class CheckpointError(SpeechRNNError, ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[dict, dict]:
    """The whole checkpoint dict (``hyper_parameters``, ``epoch``, ``global_step``, ...) and the
    ``KeywordSpotter`` state dict in it, checked to be a speechrnn checkpoint.

    Raises:
        CheckpointError: missing, unreadable, or not a speechrnn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the .ckpt written by python -m speechrnn.train "
                              "(runs/<run>/checkpoints/best.ckpt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a non-checkpoint file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if not all(k in hparams for k in REQUIRED_HPARAMS) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a speechrnn checkpoint (no labels/features/encoder settings); "
                              "use one written by python -m speechrnn.train")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return ckpt, state


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[KeywordSpotter, dict]:
    """``load_model``'s model, and the checkpoint dict it came from.

    Raises:
        CheckpointError: missing, unreadable, not a speechrnn checkpoint, or weights that do not fit.
    """
    ckpt, state = read_checkpoint(path, map_location)
    hparams = ckpt["hyper_parameters"]
    model = KeywordSpotter(hparams["labels"], hparams["features"], hparams["encoder"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"{path}: weights do not fit the model its settings describe ({first})") from None
    return model.eval(), ckpt


def load_model(path: str | Path, map_location: str = "cpu") -> KeywordSpotter:
    """The ``KeywordSpotter`` stored in a training checkpoint, in eval mode.

    Raises:
        CheckpointError: as ``load_checkpoint``.
    """
    return load_checkpoint(path, map_location)[0]
