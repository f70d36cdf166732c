"""Inference backends for transcription: a PyTorch checkpoint, or an exported ONNX model.

Both answer the same three questions, so ``transcribe`` never asks which it has:
``predict(clips (B, clip_samples)) -> probabilities (B, C)`` for whole clips,
``spotter()`` for the window posteriors of a long recording or a stream, and the
``labels`` / ``rate`` / ``clip_samples`` the model was trained with.

* ``TorchBackend`` (a ``.ckpt`` from ``speechrnn.train``): streams with
  ``StreamingSpotter``, one step of K staggered RNN states per frame (or, for a model
  that normalises each clip by its own mean, ``WindowedSpotter``).
* ``OnnxBackend`` (a ``model.onnx`` from ``speechrnn.export``, run by onnxruntime): the
  graph takes fixed 1 s clips, so long recordings are cut into the same windows
  (``WindowedSpotter``) and each is classified whole. Everything it needs (labels,
  rate, window geometry) is in the ONNX file's metadata, written by ``model_metadata``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from speechrnn.checkpoint import CheckpointError, load_model
from speechrnn.model import KeywordSpotter
from speechrnn.predict import predict_proba
from speechrnn.streaming import StreamingSpotter, WindowedSpotter, window_geometry

META_PREFIX = "speechrnn."


def model_metadata(model: KeywordSpotter) -> dict[str, str]:
    """What a runtime needs besides the graph: labels, rate and window geometry, as strings."""
    fe = model.frontend
    clip_samples, _, stride, context = window_geometry(fe)
    features = dict(sample_rate=fe.sample_rate, n_mfcc=fe.n_mfcc, win_length=fe.win_length,
                    hop_length=fe.hop_length, n_mels=fe.n_mels, f_min=fe.f_min,
                    f_max=fe.f_max, deltas=fe.deltas, stack=fe.stack, normalize=fe.normalize, floor_db=fe.floor_db,
                    cmn=fe.cmn)
    meta = dict(labels=json.dumps(model.labels), sample_rate=fe.sample_rate, clip_samples=clip_samples,
                stride=stride, context=context, features=json.dumps(features))
    return {META_PREFIX + k: str(v) for k, v in meta.items()}


class TorchBackend:
    """A ``KeywordSpotter`` run by PyTorch."""

    name = "torch"

    def __init__(self, model: KeywordSpotter, batch_size: int = 256):
        self.model, self.batch_size = model.eval(), batch_size
        self.labels, self.rate = model.labels, model.frontend.sample_rate
        self.clip_samples, _, self.stride, self.context = window_geometry(model.frontend)

    def predict(self, clips: Tensor) -> Tensor:
        return predict_proba(self.model, clips, self.batch_size)  # (B, C)

    def spotter(self) -> StreamingSpotter | WindowedSpotter:
        """Staggered states; windows classified whole when each clip is normalised by its own mean."""
        if self.model.frontend.cmn:
            return WindowedSpotter(self.predict, len(self.labels), self.rate, self.clip_samples, self.stride,
                                   self.context)
        return StreamingSpotter(self.model)


class OnnxBackend:
    """A ``model.onnx`` written by ``speechrnn.export``, run by onnxruntime on CPU."""

    name = "onnx"

    def __init__(self, path: str | Path, batch_size: int = 256):
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError(f"{path}: running an ONNX model needs onnxruntime: "
                                  "pip install 'speechrnn[export]'") from None
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            reason = " ".join(str(err).split())[:200]
            raise CheckpointError(f"{path}: not a readable ONNX model ({reason})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.labels = json.loads(meta[META_PREFIX + "labels"])
            self.rate, self.clip_samples, self.stride, self.context = (
                int(meta[META_PREFIX + k]) for k in ("sample_rate", "clip_samples", "stride", "context"))
        except (KeyError, ValueError):
            raise CheckpointError(f"{path}: an ONNX model without speechrnn metadata; "
                                  "use one written by python -m speechrnn.export") from None
        self.input = self.session.get_inputs()[0].name
        self.batch_size = batch_size

    def predict(self, clips: Tensor) -> Tensor:
        out = [self.session.run(None, {self.input: clips[i: i + self.batch_size].numpy().astype(np.float32)})[0]
               for i in range(0, len(clips), self.batch_size)]
        logits = torch.from_numpy(np.concatenate(out)) if out else torch.zeros(0, len(self.labels))
        return logits.softmax(-1)  # (B, C)

    def spotter(self) -> WindowedSpotter:
        return WindowedSpotter(self.predict, len(self.labels), self.rate, self.clip_samples, self.stride,
                               self.context)


def load_backend(path: str | Path, batch_size: int = 256) -> TorchBackend | OnnxBackend:
    """The backend for a model file: ``.onnx`` runs on onnxruntime, anything else is a checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: ONNX model not found; write one with python -m speechrnn.export")
        return OnnxBackend(path, batch_size)
    return TorchBackend(load_model(path), batch_size)
