"""Shared fixtures: a tiny tone folder, and the thread count every test starts with (helpers.py has the rest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import speechrnn.training.config  # noqa: F401  registers the resolvers of conf/data/synthetic.yaml, which tests compose

from helpers import tone, write_wav


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
