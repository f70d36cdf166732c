"""Inference backends for transcription: a PyTorch checkpoint, or a model exported by ``speechrnn.export``.

All answer the same three questions, so ``transcribe`` never asks which it has:
``predict(clips (B, clip_samples)) -> probabilities (B, C)`` for whole clips,
``spotter()`` for the window posteriors of a long recording or a stream, and the
``labels`` / ``rate`` / ``clip_samples`` the model was trained with.

* ``TorchBackend`` (a ``.ckpt`` from ``speechrnn.train``): streams with
  ``StreamingSpotter``, one step of K staggered RNN states per frame (or, for a model
  that normalises each clip by its whole mean, ``features.cmn=clip``, ``WindowedSpotter``).
* ``OnnxBackend`` (``model.onnx``, run by onnxruntime) and ``TorchScriptBackend``
  (``model.pt``, run by ``torch.jit``): an export takes fixed 1 s clips, so long
  recordings are cut into the same windows (``WindowedSpotter``) and each is classified
  whole. Everything they need (labels, rate, window geometry) is in the file's metadata,
  written by ``model_metadata`` and read by ``ExportedBackend``.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from speechrnn.model.checkpoint import CheckpointError, load_model
from speechrnn.model.spotter import KeywordSpotter
from speechrnn.inference.predict import predict_proba
from speechrnn.inference.streaming import StreamingSpotter, WindowedSpotter, window_geometry

META_PREFIX = "speechrnn."


def model_metadata(model: KeywordSpotter) -> dict[str, str]:
    """What a runtime needs besides the graph, as strings: labels, rate, window geometry and the
    frontend's settings (``MFCC(**features)`` rebuilds it)."""
    fe = model.frontend
    clip_samples, _, stride, context = window_geometry(fe)
    meta = dict(labels=json.dumps(model.labels), sample_rate=fe.sample_rate, clip_samples=clip_samples,
                stride=stride, context=context, features=json.dumps(fe.settings))
    return {META_PREFIX + k: str(v) for k, v in meta.items()}


def windowed_spotter(backend: TorchBackend | ExportedBackend) -> WindowedSpotter:
    """A spotter that classifies each window of a recording whole, with ``backend.predict``."""
    return WindowedSpotter(backend.predict, len(backend.labels), backend.rate, backend.clip_samples, backend.stride,
                           backend.context)


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
        """Staggered states; windows classified whole when each clip is normalised by its whole mean."""
        if self.model.frontend.cmn == "clip":
            return windowed_spotter(self)
        return StreamingSpotter(self.model)


class ExportedBackend:
    """A model written by ``speechrnn.export``: 1 s waveforms in, logits out, run ``batch_size`` clips at a time.

    Args:
        path (str | Path): the file, named in errors.
        meta (dict[str, str]): its metadata, as ``model_metadata`` wrote it.
        batch_size (int, optional): clips per run of the model. (Default: ``256``)

    Raises:
        CheckpointError: the metadata lacks what a runtime needs.
    """

    kind: str  # the format, as errors name it

    def __init__(self, path: str | Path, meta: dict[str, str], batch_size: int = 256):
        try:
            self.labels = json.loads(meta[META_PREFIX + "labels"])
            self.rate, self.clip_samples, self.stride, self.context = (
                int(meta[META_PREFIX + k]) for k in ("sample_rate", "clip_samples", "stride", "context"))
        except (KeyError, ValueError):
            raise CheckpointError(f"{path}: a {self.kind} model without speechrnn metadata; "
                                  "use one written by python -m speechrnn.export") from None
        self.batch_size = batch_size

    def logits(self, clips: Tensor) -> Tensor:
        """Logits ``(b, C)`` of one batch of clips ``(b, clip_samples)``."""
        raise NotImplementedError

    def predict(self, clips: Tensor) -> Tensor:
        out = [self.logits(clips[i: i + self.batch_size]) for i in range(0, len(clips), self.batch_size)]
        logits = torch.cat(out) if out else torch.zeros(0, len(self.labels))
        return logits.softmax(-1)  # (B, C)

    def spotter(self) -> WindowedSpotter:
        return windowed_spotter(self)


class OnnxBackend(ExportedBackend):
    """A ``model.onnx`` written by ``speechrnn.export``, run by onnxruntime on CPU."""

    name, kind = "onnx", "ONNX"

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
        super().__init__(path, self.session.get_modelmeta().custom_metadata_map, batch_size)
        self.input = self.session.get_inputs()[0].name

    def logits(self, clips: Tensor) -> Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: clips.numpy().astype(np.float32)})[0])


class TorchScriptBackend(ExportedBackend):
    """A ``model.pt`` written by ``speechrnn.export`` (TorchScript, metadata in its extra file ``meta.json``)."""

    name, kind = "torchscript", "TorchScript"

    def __init__(self, path: str | Path, batch_size: int = 256):
        extra = {"meta.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
        except Exception as err:  # torch.jit raises RuntimeError and others for a file it cannot read
            reason = " ".join(str(err).split())[:200]
            raise CheckpointError(f"{path}: not a readable TorchScript model ({reason})") from None
        try:
            meta = json.loads(extra["meta.json"])
        except ValueError:  # no meta.json: the empty string stays
            meta = {}
        super().__init__(path, meta, batch_size)

    @torch.no_grad()
    def logits(self, clips: Tensor) -> Tensor:
        return self.module(clips.float())


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive: its zip holds the model's code, a checkpoint's zip does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def load_backend(path: str | Path, batch_size: int = 256) -> TorchBackend | ExportedBackend:
    """The backend for a model file: ``.onnx`` runs on onnxruntime, a TorchScript ``model.pt`` on ``torch.jit``,
    anything else is a checkpoint."""
    if Path(path).suffix.lower() == ".onnx":
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: ONNX model not found; write one with python -m speechrnn.export")
        return OnnxBackend(path, batch_size)
    if is_torchscript(path):
        return TorchScriptBackend(path, batch_size)
    return TorchBackend(load_model(path), batch_size)
