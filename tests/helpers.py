"""What the tests share besides fixtures: tiny audio, tiny Speech Commands-layout folders,
and the instruments (Lightning callbacks) that subprocess runs load by ``_target_=helpers.<name>``.

``pytest`` puts ``tests/`` on the path (pyproject's ``pythonpath``), and subprocess runs get it
in ``PYTHONPATH``, so every test imports these as ``from helpers import ...``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lightning.pytorch.callbacks import Callback

from speechrnn.core import atomic

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED_DATA = ROOT.parent / "shared" / "data"
# sweep_leftovers asks with os.kill(pid, 0) whether a writer is alive; elsewhere it removes nothing
needs_posix_signals = pytest.mark.skipif(os.name != "posix", reason="sweeping needs POSIX signals")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m speechrnn.<command>`` subprocess: this checkout and these helpers first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]), **extra}


def tone(freq: float, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A short noisy tone: distinct per frequency, so tiny models can tell 'words' apart."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def killed_writers_leftover(target: Path, kind: str = "file") -> Path:
    """What a writer killed mid-write leaves beside ``target``: its half-written temp file
    (``kind="file"``) or its ``make_temp_dir`` folder (``".partial"``, ``".old"``), named by
    ``speechrnn.core.atomic`` as a process of this host that has since exited would name it."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(atomic, "_owner", lambda: f"{atomic._host()}.{dead.pid}")
        if kind == "file":
            fd, path = atomic._make_temp(target)
            os.write(fd, b"half a file")
            os.close(fd)
        else:
            path = atomic.make_temp_dir(target, kind)
            (path / "half.wav").write_bytes(b"half a file")
    return path


class PauseAt(Callback):
    """Test instrument: before optimiser step ``step``, touch ``marker`` and hang until killed."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.marker.touch()
            time.sleep(600)


class SaveWeights(Callback):
    """Test instrument: save the module's weights to ``path`` when training starts (``at="start"``,
    after a continued run has loaded its checkpoint) or when each epoch ends (``at="epoch_end"``:
    the raw weights, validation's swap to the average undone)."""

    def __init__(self, path: str, at: str):
        self.path, self.at = Path(path), at

    def on_train_start(self, trainer, pl_module) -> None:
        if self.at == "start":
            torch.save(pl_module.state_dict(), self.path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.at == "epoch_end":
            torch.save(pl_module.state_dict(), self.path)


def tone_corpus(root: Path) -> Path:
    """yes/no/up/bed as tones, 8 speakers each, speaker 0 for validation and 1 for testing."""
    words = {"yes": 300.0, "no": 700.0, "up": 1500.0, "bed": 2500.0}
    for word, f in words.items():
        for k in range(8):
            write_wav(root / word / f"{k:08x}_nohash_0.wav", tone(f * (1 + 0.02 * k), seed=k))
    (root / "validation_list.txt").write_text("".join(f"{w}/00000000_nohash_0.wav\n" for w in words))
    (root / "testing_list.txt").write_text("".join(f"{w}/00000001_nohash_0.wav\n" for w in words))
    write_wav(root / "_background_noise_" / "white.wav",
              (0.1 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32))
    return root


class RecordBatches(Callback):
    """Test instrument: each training batch's clip indices and the seed its random draws come from,
    one JSON line per batch in ``<folder>/rank<r>.jsonl``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.folder / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"epoch": trainer.current_epoch, "clips": batch[2].tolist(),
                                "seed": torch.initial_seed()}) + "\n")


class Probe(Callback):
    """Test instrument: when training starts, save the module's state, labels and loop position to ``out``."""

    def __init__(self, out: str):
        self.out = out

    def on_train_start(self, trainer, pl_module) -> None:
        torch.save({"state": {k: v.clone() for k, v in pl_module.model.state_dict().items()},
                    "labels": pl_module.model.labels, "global_step": trainer.global_step,
                    "epoch": trainer.current_epoch, "optimizer_state": len(trainer.optimizers[0].state)}, self.out)
