"""The Lightning data module for any folder in the Speech Commands layout.

``prepare_data`` makes the data exist (synthesises the embedded corpus, or
downloads / extracts Speech Commands); ``setup`` splits and labels the clips for
the task and decodes each split once into a memory-mapped cache
(``speechrnn.cache``). Batches are ``(wave (B, S) float32, label (B,), index (B,))``;
the index names the clip in ``files(split)`` for error messages.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from speechrnn.audio import SAMPLE_RATE, AudioError, load_audio
from speechrnn.augment import WaveAugment
from speechrnn.cache import ClipArray, decode_split
from speechrnn.dataset import SPLITS, DatasetError, label_items, scan, split_clips, task_labels
from speechrnn.labels import BACKGROUND_NOISE_DIR

log = logging.getLogger(__name__)
STAGE_SPLITS = {"train": "training", "val": "validation", "test": "testing"}


class ClipDataset(Dataset):
    """Indexes a ``ClipArray``: item ``i`` is ``(wave (S,) float32 in [-1, 1], label, i)``."""

    def __init__(self, clips: ClipArray):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        wave = torch.from_numpy(self.clips.waves[i].astype(np.float32) / 32768.0)
        return wave, int(self.clips.labels[i]), i


def load_noise(root: Path, sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """The ``_background_noise_`` clips of a dataset (unreadable ones reported and skipped)."""
    noise = []
    for path in sorted((root / BACKGROUND_NOISE_DIR).glob("*.wav")):
        try:
            noise.append(load_audio(path, sample_rate))
        except AudioError as err:
            log.warning("skipping background noise %s", err)
    return noise


class SpeechCommandsData(L.LightningDataModule):
    """Speech Commands (or any folder in its layout), labelled for a task and split by the standard protocol.

    Args:
        root (str): the dataset folder, or a Speech Commands ``.tar.gz`` (see ``download``).
        task (str, optional): ``kws12``, ``kws35`` or ``custom``. (Default: ``"kws12"``)
        words (list[str], optional): keywords of a ``custom`` task. (Default: ``None``)
        version (str, optional): ``v0.01`` or ``v0.02``, for kws35 and downloads. (Default: ``"v0.02"``)
        silence_percentage (float, optional): silence clips per 100 known clips. (Default: ``10``)
        unknown_percentage (float, optional): unknown clips per 100 known clips. (Default: ``10``)
        validation_percentage (float, optional): hash-rule share when there are no list files. (Default: ``10``)
        testing_percentage (float, optional): likewise for testing. (Default: ``10``)
        batch_size (int, optional): clips per batch. (Default: ``128``)
        num_workers (int, optional): loader processes. (Default: ``0``)
        cache_dir (str, optional): where decoded splits are kept. (Default: ``"data/cache"``)
        augment (dict, optional): ``WaveAugment`` arguments; ``None`` turns it off. (Default: ``None``)
        synth (dict, optional): if given, ``prepare_data`` synthesises the embedded corpus at
            ``root`` with these ``speechrnn.synth.generate_corpus`` arguments. (Default: ``None``)
        download (bool, optional): fetch the official archive when ``root`` is missing. (Default: ``False``)
        seed (int, optional): seed of the unknown/silence draw. (Default: ``59185``, the reference's)
    """

    def __init__(self, root: str, task: str = "kws12", words: list[str] | None = None, version: str = "v0.02",
                 silence_percentage: float = 10.0, unknown_percentage: float = 10.0,
                 validation_percentage: float = 10.0, testing_percentage: float = 10.0,
                 batch_size: int = 128, num_workers: int = 0, cache_dir: str = "data/cache",
                 augment: dict | None = None, synth: dict | None = None, download: bool = False,
                 seed: int = 59185):
        super().__init__()
        self.root = Path(root)
        self.task, self.version = task, version
        self.labels = task_labels(task, version, list(words) if words else None)
        self.percent = dict(silence_percentage=silence_percentage, unknown_percentage=unknown_percentage)
        self.split_percent = dict(validation_percentage=validation_percentage, testing_percentage=testing_percentage)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_dir = Path(cache_dir)
        self.augment = WaveAugment(**augment) if augment else None
        self.synth, self.download = synth, download
        self.splits: dict[str, ClipArray] = {}
        self.noise = torch.zeros(0, 0)

    def prepare_data(self) -> None:
        if self.synth is not None:
            from speechrnn.synth import generate_corpus
            generate_corpus(self.root, **self.synth)
        elif self.download or str(self.root).endswith((".tar.gz", ".tgz")):
            from speechrnn.download import prepare_speech_commands
            self.root = prepare_speech_commands(self.root, version=self.version, cache_dir=self.cache_dir.parent,
                                                download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        noise = load_noise(self.root)
        folders = split_clips(self.root, scan(self.root), **self.split_percent)
        for split, by_word in folders.items():
            items = label_items(by_word, self.labels, sample=True, noise_lengths=[len(n) for n in noise],
                                seed=self.seed + SPLITS.index(split), **self.percent)
            if not items:
                raise DatasetError(f"{self.root}: the {split} split has no clips for labels {self.labels}")
            self.splits[split] = decode_split(items, self.labels, self.cache_dir, noise=noise, name=split)
        # noise for augmentation, cut to a common length so a batch can index it
        if noise:
            n = min(len(x) for x in noise)
            self.noise = torch.stack([x[:n] for x in noise])  # (K, M)

    def files(self, split: str) -> list[str]:
        """Clip paths of a split (``training``/``validation``/``testing``), by batch index."""
        return self.splits[split].paths

    def train_waves(self, batches: int = 20) -> Any:
        """Up to ``batches`` batches of clean training waveforms, for normalisation statistics."""
        loader = self._loader("training", shuffle=False)
        for i, (wave, _, _) in enumerate(loader):
            if i >= batches:
                break
            yield wave

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(ClipDataset(self.splits[split]), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, generator=generator,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("training", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("testing", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and self.augment is not None:
            wave, label, index = batch
            batch = (self.augment(wave, self.noise.to(wave.device)), label, index)
        return batch
