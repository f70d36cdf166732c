"""Fine-tuning: a new run that starts from a checkpoint's weights (``train init_from=<ckpt>``).

It is not a resume: the optimiser, the schedule, the epochs and the data order start
anew, on the run's own data and labels. The run's config must describe the
checkpoint's frontend and encoder, since the weights fit nothing else (a killed
fine-tuning run then resumes like any other, with ``ckpt_path`` and without
``init_from``). The encoder is copied whole, and so are the readout rows (``W_hy``
and ``b_y``, or the ``out`` layer of a GRU/LSTM) of the labels the checkpoint and the
run share; a label the checkpoint lacks keeps the row the new model drew. The
frontend's normalisation statistics are kept, or refitted on the new training data
as a fresh run does (``init_normalization``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from omegaconf import DictConfig
from torch import Tensor

from speechrnn.model.checkpoint import read_checkpoint
from speechrnn.model.features import CMN_MODES
from speechrnn.core.errors import ConfigError
from speechrnn.model.spotter import KeywordSpotter

log = logging.getLogger(__name__)

NORMALIZATION = ("keep", "refit")
STATISTICS = ("frontend.mean", "frontend.std")  # the state-dict keys of the normalisation statistics
ENCODER_SHAPE = ("kind", "hidden_size", "num_layers")  # the encoder settings its weights' shapes follow


@dataclass(frozen=True)
class Source:
    """A checkpoint to start from: its path, labels and ``KeywordSpotter`` state dict, and what to do
    with its normalisation statistics (``"keep"`` or ``"refit"``)."""

    path: Path
    labels: list[str]
    state: dict[str, Tensor]
    normalization: str


def source_of(cfg: DictConfig) -> Source | None:
    """The checkpoint ``cfg.init_from`` names, checked against the run's config; ``None`` without one.

    Called before any work, so a mistake costs nothing.

    Raises:
        ConfigError: ``init_from`` with ``ckpt_path``, an unknown ``init_normalization``, or
            features or encoder settings the checkpoint's weights do not fit.
        CheckpointError: the file is missing or not a speechrnn checkpoint.
    """
    if not cfg.get("init_from"):
        return None
    if cfg.get("ckpt_path"):
        raise ConfigError("init_from and ckpt_path: init_from starts a new run from a checkpoint's weights, "
                          "ckpt_path resumes a killed run; give one (a killed fine-tuning run resumes with "
                          "ckpt_path and without init_from)")
    if cfg.init_normalization not in NORMALIZATION:
        raise ConfigError(f"init_normalization={cfg.init_normalization!r}: expected one of {list(NORMALIZATION)}")
    ckpt, state = read_checkpoint(cfg.init_from)
    hparams = ckpt["hyper_parameters"]
    _check_settings(cfg.init_from, hparams, cfg.features, cfg.model.encoder)
    return Source(Path(cfg.init_from), list(hparams["labels"]), state, cfg.init_normalization)


def _check_settings(path: str, hparams: dict, features: DictConfig, encoder: DictConfig) -> None:
    """Refuse a config whose features or encoder differ from the checkpoint's, naming the overrides that fit."""
    saved = {f"features.{k}": v for k, v in hparams["features"].items()}
    saved |= {f"model.encoder.{k}": hparams["encoder"].get(k) for k in ENCODER_SHAPE}
    asked = {f"features.{k}": features.get(k) for k in hparams["features"]}
    asked |= {f"model.encoder.{k}": encoder.get(k) for k in ENCODER_SHAPE}
    # features.cmn has two spellings of the whole-clip mean (true, "clip"): compared by what they mean
    same = {k: (CMN_MODES.get(saved[k], saved[k]), CMN_MODES.get(asked[k], asked[k])) if k == "features.cmn"
            else (saved[k], asked[k]) for k in saved}
    differ = sorted((k for k, (was, now) in same.items() if was != now), key=lambda k: (k != "model.encoder.kind", k))
    if differ:
        fixes = " ".join(f"model={saved[k]}" if k == "model.encoder.kind" else f"{k}={saved[k]}" for k in differ)
        raise ConfigError(f"init_from={path}: its weights fit only the settings they were trained with, and the "
                          f"config's {', '.join(f'{k}={asked[k]}' for k in differ)} differ; pass {fixes}")


@torch.no_grad()
def init_weights(model: KeywordSpotter, source: Source, waves: Iterable[Tensor]) -> None:
    """Copy ``source``'s weights into a freshly built ``model`` and log what was carried over.

    Args:
        model (KeywordSpotter): built for the run's labels, with the checkpoint's settings.
        source (Source): from ``source_of``.
        waves (Iterable[Tensor]): batches ``(B, N)`` of training waveforms, read only to refit
            the normalisation statistics.
    """
    readout = {f"encoder.{name}" for name in model.encoder.readout_names}
    shared = [label for label in model.labels if label in source.labels]
    state = {k: v.clone() for k, v in model.state_dict().items()}  # the fresh model's: new labels keep its rows
    for key, value in source.state.items():
        if key in readout:
            for label in shared:  # row c scores labels[c]
                state[key][model.labels.index(label)] = value[source.labels.index(label)]
        elif key in state and not (key in STATISTICS and source.normalization == "refit"):
            state[key] = value
    model.load_state_dict(state)
    if source.normalization == "refit":
        model.frontend.fit_normalization(waves)
    new = [label for label in model.labels if label not in shared]
    dropped = [label for label in source.labels if label not in shared]
    log.info("init_from %s: encoder and readout rows of the %d shared labels %s carried over; new labels %s "
             "start fresh; the checkpoint's other labels %s dropped; normalisation %s", source.path, len(shared),
             shared, new, dropped, "kept" if source.normalization == "keep" else "refitted on the training data")
