"""Shared test helpers: tiny Speech Commands-layout folders built in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import speechrnn.training.config  # noqa: F401  registers the resolvers of conf/data/synthetic.yaml, which tests compose
from speechrnn.core import atomic

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(freq: float, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A short noisy tone: distinct per frequency, so tiny models can tell 'words' apart."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def write_wav(path: Path, data: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, subtype=subtype)
    return path


@pytest.fixture
def tone_folder(tmp_path: Path) -> Path:
    """words a/b/c as tones, 8 speakers each, with list files putting 2 speakers in val and 2 in test."""
    root = tmp_path / "tones"
    freqs = {"yes": 300.0, "no": 700.0, "up": 1500.0, "bed": 2500.0}
    speakers = [f"{i:08x}" for i in range(8)]
    for word, f in freqs.items():
        for k, spk in enumerate(speakers):
            write_wav(root / word / f"{spk}_nohash_0.wav", tone(f * (1 + 0.02 * k), seed=k))
    val = [f"{w}/{speakers[0]}_nohash_0.wav" for w in freqs] + [f"{w}/{speakers[1]}_nohash_0.wav" for w in freqs]
    test = [f"{w}/{speakers[2]}_nohash_0.wav" for w in freqs] + [f"{w}/{speakers[3]}_nohash_0.wav" for w in freqs]
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    write_wav(root / "_background_noise_" / "white.wav",
              (0.1 * np.random.default_rng(1).standard_normal(16000 * 3)).astype(np.float32))
    return root


_THREADS = torch.get_num_threads()  # this machine's default, as every subprocess a test starts gets it


@pytest.fixture(autouse=True)
def same_threads_in_every_test():
    """Each test starts with the default torch thread count and leaves it so.

    A command's ``main`` called in-process (``transcribe --threads 1``) sets the count for the
    whole pytest process; a later test that compares an in-process run with a subprocess run
    would then compare 1 thread with 2, and float reductions split by thread count may round
    differently on some CPUs.
    """
    torch.set_num_threads(_THREADS)
    yield
    torch.set_num_threads(_THREADS)


@pytest.fixture
def one_thread():
    """Many tiny per-step ops (streaming, small models): on a shared 2-core CPU a second torch thread mostly spins.

    Function-scoped, so it runs after ``same_threads_in_every_test`` has set the default."""
    torch.set_num_threads(1)
    yield


# sweep_leftovers asks with os.kill(pid, 0) whether a writer is alive; elsewhere it removes nothing
needs_posix_signals = pytest.mark.skipif(os.name != "posix", reason="sweeping needs POSIX signals")


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
