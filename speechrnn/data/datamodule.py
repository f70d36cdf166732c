"""The Lightning data module for any folder in the Speech Commands layout.

``prepare_data`` makes the data exist (synthesises the embedded corpus, or
downloads / extracts Speech Commands); ``setup`` splits and labels the clips for
the task and decodes each split once into a memory-mapped cache
(``speechrnn.data.cache``). Batches are ``(wave (B, S) float32, label (B,), index (B,))``;
the index names the clip in ``files(split)`` for error messages.

A run killed mid-epoch resumes exactly: the training order of epoch ``e`` is a permutation
drawn from ``(seed, e)`` alone (``EpochSampler``), each batch's augmentation draws come
from ``(run seed, epoch, position)``, and the position within the epoch travels in the
checkpoint (``state_dict``). A batch is augmented where it is collated
(``AugmentingCollate``): in a loader worker beside the training step with
``num_workers >= 1``, else in the main process; the same numbers either way, as the batch brings its seed,
and the generator's state after its draws, to the training step (for SpecAugment).
Lightning 2.x restores the loop counters but not the data order or the RNG, and a stateful
``DataLoader`` would not help: its state is dropped when ``configure_optimizers`` asks for
``estimated_stepping_batches`` (Lightning issue #20550). Under DDP every rank takes its
share of the same permutation (Lightning's own sharding is off,
``trainer.use_distributed_sampler=false``), the position counts the clips of all ranks,
and each rank's batch is seeded by its own position, so the ranks draw different
augmentations and a resumed DDP run also skips exactly what was trained on.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate

from speechrnn.core.audio import SAMPLE_RATE, as_float
from speechrnn.data.augment import WaveAugment
from speechrnn.data.cache import ClipArray, decode_split
from speechrnn.data.layout import (SPLITS, DatasetError, check_label_folders, label_items, load_noise, load_noise_dir,
                                   scan, split_clips, task_labels)
from speechrnn.data.noise import NOISES, generated_noise

log = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """Indexes a ``ClipArray``: item ``i`` is ``(wave (S,) float32 in [-1, 1], label, i)``."""

    def __init__(self, clips: ClipArray):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        wave = as_float(torch.from_numpy(np.array(self.clips.waves[i])))  # a copy of the read-only memory map
        return wave, int(self.clips.labels[i]), i


class PlacedClips(ClipDataset):
    """The training split indexed by ``EpochSampler(positions=True)``'s ``(epoch, position, i)``:
    item ``(wave, label, i, epoch, position)``, so a batch knows its place in the run wherever it is collated."""

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int, int, int, int]:
        epoch, position, i = key
        return (*super().__getitem__(i), epoch, position)


class AugmentingCollate:
    """Collates ``PlacedClips`` items into a training batch and augments it there, seeded by its place.

    It runs where the batch is loaded: in a loader worker (``num_workers >= 1``), so the
    augmentation of the next batches overlaps the training step, or in the main process. The
    batch's draws come from torch's generator seeded by ``(seed, epoch, position of its first
    clip)``, as a resumed run needs; the batch carries that seed and the generator's state after
    the draws, and ``SpeechCommandsData.on_after_batch_transfer`` puts the main process's generator
    there, so SpecAugment in the training step draws the same numbers wherever the batch was made.

    Args:
        augment (WaveAugment | None): the wave augmentation, or ``None`` (the seed is still set).
        noise (Tensor): ``(K, M)`` noise recordings it mixes in (``K = 0``: none).
        seed (int): the run's augmentation seed.

    Shapes:
        ``B x (wave (S,), label, i, epoch, position)`` -> ``(wave (B, S), label (B,), i (B,), seed, rng state)``.
    """

    def __init__(self, augment: WaveAugment | None, noise: torch.Tensor, seed: int):
        self.augment, self.noise, self.seed = augment, noise, seed

    def __call__(self, items: list[tuple]) -> tuple:
        wave, label, index, epoch, position = default_collate(items)
        seed = _mix(self.seed, int(epoch[0]), int(position[0]))
        torch.manual_seed(seed)
        if self.augment is not None:
            wave = self.augment(wave, self.noise)  # (B, S)
        return wave, label, index, seed, torch.get_rng_state()


def _mix(*ints: int) -> int:
    """A well-spread 63-bit seed from several integers."""
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1, np.uint64)[0] >> np.uint64(1))


MAX_NOISE_SECONDS = 300  # longer noise recordings are cut: 5 minutes of each is plenty of variety


def tile_noise(noise: list[torch.Tensor], clip_samples: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Noise recordings as one ``(K, M)`` tensor a batch can index: each repeated end to end up to
    the longest (at least a clip, at most ``MAX_NOISE_SECONDS``), so a short recording neither crops
    the others nor is too short to cut a clip from.

    Args:
        noise (list[Tensor]): ``(M_k,)`` non-empty recordings.
        clip_samples (int): the length of a training clip.
        sample_rate (int, optional): rate of the recordings. (Default: ``16000``)

    Shapes:
        ``K x (M_k,)`` -> ``(K, M)``.
    """
    n = min(max(clip_samples, *(len(x) for x in noise)), MAX_NOISE_SECONDS * sample_rate)
    return torch.stack([x.repeat(-(-n // len(x)))[:n] for x in noise])


class EpochSampler(Sampler[int]):
    """A fresh shuffle every epoch, drawn from ``(seed, epoch)`` so any epoch's order can be
    rebuilt; under DDP, this rank's share of it.

    Every rank draws the same permutation and takes its positions ``rank, rank + world_size,
    ...``: the ranks' clips are disjoint and together make the epoch. When ``world_size`` does
    not divide ``num_clips``, the permutation is padded with its own first positions to a
    multiple of ``world_size`` (as ``DistributedSampler`` pads by default), so every rank has
    ``ceil(num_clips / world_size)`` clips and takes as many steps as the others, and every
    clip is trained on each epoch, at most ``world_size - 1`` of them twice.

    ``consumed`` counts the positions of the (padded) permutation that all ranks together
    have trained on so far in the epoch (the data module advances it by ``world_size`` x the
    batch). ``resume_at(epoch, consumed)`` makes the next pass over that epoch skip them and
    share out the rest as before, so a resumed run trains on exactly the clips the killed run
    had not (resumed with another ``world_size``, the skip is rounded down to a multiple of it,
    so the ranks stay level: a few clips are trained on again). ``len`` stays the rank's whole
    epoch, as Lightning's restored progress counters expect.

    Args:
        num_clips (int): size of the dataset.
        seed (int): shuffling seed.
        rank (int, optional): this process's rank, ``0 <= rank < world_size``. (Default: ``0``)
        world_size (int, optional): number of processes sharing the epoch. (Default: ``1``)
        positions (bool, optional): yield ``(epoch, position, clip)`` instead of the clip alone,
            for ``PlacedClips``. (Default: ``False``)
    """

    def __init__(self, num_clips: int, seed: int, rank: int = 0, world_size: int = 1, positions: bool = False):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.num_clips, self.seed, self.rank, self.world_size = num_clips, seed, rank, world_size
        self.positions = positions
        self.epoch, self.consumed, self._skip = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a pending resume belongs to another epoch
        self.epoch = epoch

    def resume_at(self, epoch: int, consumed: int) -> None:
        self.epoch, self._skip = epoch, consumed

    def __len__(self) -> int:
        return -(-self.num_clips // self.world_size)

    def __iter__(self):
        start, self._skip = self._skip - self._skip % self.world_size, 0  # level, even if the killed run had other ranks
        self.consumed = start
        order = torch.randperm(self.num_clips, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch)))
        # (len * world_size,): the order, then its first positions again
        padded = order[torch.arange(len(self) * self.world_size) % max(self.num_clips, 1)]
        clips = padded[start + self.rank::self.world_size].tolist()
        if not self.positions:
            yield from clips
        else:  # the j-th clip of this rank sits at position start + rank + j * world_size of the epoch
            yield from ((self.epoch, start + self.rank + j * self.world_size, c) for j, c in enumerate(clips))


class SpeechCommandsData(L.LightningDataModule):
    """Speech Commands (or any folder in its layout), labelled for a task and split by the standard protocol.

    Args:
        root (str): the dataset folder, or a Speech Commands ``.tar.gz`` (see ``download``).
        task (str, optional): ``kws12``, ``kws35`` or ``custom``. (Default: ``"kws12"``)
        words (list[str], optional): keywords of a ``custom`` task. (Default: ``None``)
        silence (bool, optional): a ``custom`` task has a ``_silence_`` class. (Default: ``True``)
        unknown (bool, optional): a ``custom`` task has an ``_unknown_`` class. (Default: ``True``)
        version (str, optional): ``v0.01`` or ``v0.02``, for kws35 and downloads. (Default: ``"v0.02"``)
        silence_percentage (float, optional): silence clips per 100 known clips. (Default: ``10``)
        unknown_percentage (float, optional): unknown clips per 100 known clips. (Default: ``10``)
        validation_percentage (float, optional): hash-rule share when there are no list files. (Default: ``10``)
        testing_percentage (float, optional): likewise for testing. (Default: ``10``)
        testing_speakers (list[str], optional): split by these speaker ids instead of the list
            files or hash rule (e.g. FSDD's speaker-disjoint test). (Default: ``None``)
        validation_speakers (list[str], optional): likewise for validation; without them,
            validation is ``validation_percentage`` of the other speakers' clips. (Default: ``None``)
        split (str, optional): without named speakers, ``"reference"`` (the list files, else the
            reference hash rule) or ``"speaker_fraction"`` (the speakers shuffled by ``seed`` and
            dealt by the percentages, for a folder whose ids hash unevenly; see
            ``speechrnn.data.layout.deal_speakers``). (Default: ``"reference"``)
        split_salt (str, optional): mixed into the hash rule: another speaker split. (Default: ``""``)
        batch_size (int, optional): clips per batch. (Default: ``128``)
        num_workers (int, optional): loader processes; with one or more, the training batches are
            augmented there, beside the training step (``AugmentingCollate``). (Default: ``0``)
        cache_dir (str, optional): where decoded splits are kept. (Default: ``"data/cache"``)
        augment (dict, optional): ``WaveAugment`` arguments; ``None`` turns it off. (Default: ``None``)
        noise_dir (str, optional): a folder of ``.wav`` noise recordings (e.g. another dataset's
            ``_background_noise_``) that augmentation mixes in besides the dataset's own noise;
            ``_silence_`` clips are still cut from the dataset's own. With neither, augmentation
            mixes in generated noise (``speechrnn.data.noise``). (Default: ``None``)
        synth (dict, optional): if given, ``prepare_data`` synthesises the embedded corpus at
            ``root`` with these ``speechrnn.data.synthetic.generate_corpus`` arguments. (Default: ``None``)
        download (bool, optional): fetch the official archive when ``root`` is missing. (Default: ``False``)
        seed (int, optional): seed of the unknown/silence draw and of the training order per epoch. (Default: ``59185``, the reference's)
        align (str, optional): where a clip shorter than the window sits: ``"start"`` (zero padding
            after it, the Speech Commands layout), ``"centre"`` or ``"end"``; ``evaluate`` sets it
            to test whether a model finds words wherever they are. (Default: ``"start"``)
    """

    def __init__(self, root: str, task: str = "kws12", words: list[str] | None = None, version: str = "v0.02",
                 silence: bool = True, unknown: bool = True, silence_percentage: float = 10.0, unknown_percentage: float = 10.0,
                 validation_percentage: float = 10.0, testing_percentage: float = 10.0,
                 testing_speakers: list[str] | None = None, validation_speakers: list[str] | None = None,
                 split: str = "reference", split_salt: str = "",
                 batch_size: int = 128, num_workers: int = 0, cache_dir: str = "data/cache",
                 augment: dict | None = None, noise_dir: str | None = None, synth: dict | None = None,
                 download: bool = False, seed: int = 59185, align: str = "start"):
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need data.batch_size >= 1 and data.num_workers >= 0, got {batch_size} and {num_workers}")
        self.root = Path(root)
        self.task, self.version = task, version
        self.labels = task_labels(task, version, list(words) if words else None, silence, unknown)
        self.percent = dict(silence_percentage=silence_percentage, unknown_percentage=unknown_percentage)
        self.split_rule = dict(validation_percentage=validation_percentage, testing_percentage=testing_percentage,
                               testing_speakers=list(testing_speakers or []),
                               validation_speakers=list(validation_speakers or []),
                               split=split, salt=str(split_salt), seed=seed)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.cache_dir, self.align = Path(cache_dir), align
        self.augment = WaveAugment(**augment) if augment else None
        self.noise_dir = Path(noise_dir) if noise_dir else None
        self.synth, self.download = synth, download
        self.splits: dict[str, ClipArray] = {}
        self.noise = torch.zeros(0, 0)
        self.train_sampler: EpochSampler | None = None
        self._resume: dict | None = None

    def prepare_data(self) -> None:
        if self.synth is not None:
            from speechrnn.data.synthetic import generate_corpus
            generate_corpus(self.root, **self.synth)
        elif self.download or str(self.root).endswith((".tar.gz", ".tgz")):
            from speechrnn.data.speech_commands import prepare_speech_commands
            self.root = prepare_speech_commands(self.root, version=self.version, cache_dir=self.cache_dir.parent,
                                                download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        noise = load_noise(self.root)
        extra = self._extra_noise()  # checked before the splits are decoded: a wrong path fails fast
        found = scan(self.root)
        check_label_folders(self.root, list(found), self.labels)
        folders = split_clips(self.root, found, **self.split_rule)
        for split, by_word in folders.items():
            items = label_items(by_word, self.labels, sample=True, noise_lengths=[len(n) for n in noise],
                                seed=self.seed + SPLITS.index(split), **self.percent)
            if not items:
                raise DatasetError(f"{self.root}: the {split} split has no clips for labels {self.labels}")
            self.splits[split] = decode_split(items, self.labels, self.cache_dir, noise=noise, align=self.align,
                                               name=split)
            log.info("%s", self._size_line(split))
        noise = [x for x in noise + extra if len(x)]  # augmentation's noise: the dataset's own, then noise_dir's
        if not noise and self.augment is not None and self.augment.noise_prob > 0 and self.augment.noise_volume > 0:
            noise = generated_noise()  # a folder without recordings would otherwise train on clean clips only
            log.info("%s: no _background_noise_ recordings and no data.noise_dir: training mixes in generated noise "
                     "(%s)", self.root, ", ".join(NOISES))
        if noise:
            self.noise = tile_noise(noise, self.splits["training"].waves.shape[1])  # (K, M)
        # the run's seed (L.seed_everything), so seed=... changes the augmentation draws too
        self.augment_seed = torch.initial_seed()

    def _extra_noise(self) -> list[torch.Tensor]:
        """The recordings of ``noise_dir`` (none without it).

        Raises:
            DatasetError: ``noise_dir`` is not a folder, or holds no readable ``.wav``.
        """
        if self.noise_dir is None:
            return []
        if not self.noise_dir.is_dir():
            raise DatasetError(f"{self.noise_dir}: data.noise_dir is not a folder of .wav noise recordings")
        extra = load_noise_dir(self.noise_dir)
        if not extra:
            raise DatasetError(f"{self.noise_dir}: data.noise_dir holds no readable .wav file")
        return extra

    def _size_line(self, split: str) -> str:
        """``training split: 293 clips (yes 25, no 27, ...)``: what a split holds once decoded, per label."""
        counts = np.bincount(self.splits[split].labels, minlength=len(self.labels))  # (C,)
        per_label = ", ".join(f"{label} {n}" for label, n in zip(self.labels, counts.tolist()))
        return f"{split} split: {len(self.splits[split])} clips ({per_label})"

    def files(self, split: str) -> list[str]:
        """Clip paths of a split (``training``/``validation``/``testing``), by batch index."""
        return self.splits[split].paths

    def train_waves(self, clips: int = 2048) -> Any:
        """Batches of clean training waveforms for normalisation statistics: ``clips`` drawn at
        random (seeded), since the split is sorted by label and its head would be a few words only."""
        split = self.splits["training"]
        pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(self.seed))[:clips]
        loader = DataLoader(Subset(ClipDataset(split), pick.tolist()), batch_size=self.batch_size)
        for wave, _, _ in loader:
            yield wave

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(ClipDataset(self.splits[split]), batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        self.train_sampler = EpochSampler(len(self.splits["training"]), self.seed, rank, world_size, positions=True)
        if self._resume:
            self.train_sampler.resume_at(self._resume["epoch"], self._resume["consumed"])
            # the position is restored here, so Lightning's "not resumable" warning does not apply
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
            self._resume = None
        return DataLoader(PlacedClips(self.splits["training"]), batch_size=self.batch_size,
                          sampler=self.train_sampler, num_workers=self.num_workers,
                          collate_fn=AugmentingCollate(self.augment, self.noise, self.augment_seed),
                          generator=torch.Generator().manual_seed(self.seed), persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training and self.train_sampler is not None:
            wave, label, index, seed, state = batch  # augmented where it was collated (AugmentingCollate)
            # the training step's draws (SpecAugment, mixup) follow the batch's own, which depend only on
            # where it is (so a resumed run repeats them, and under DDP no two ranks draw the same): the
            # generators seeded by its position (the CUDA ones too), the CPU one where its augmentation left it
            torch.manual_seed(seed)
            torch.set_rng_state(state.cpu())
            self.train_sampler.consumed += len(label) * self.train_sampler.world_size
            batch = (wave, label, index)
        return batch

    def state_dict(self) -> dict:
        """The training position (epoch, clips trained on), saved in every checkpoint."""
        if self.train_sampler is None:
            return {}
        return {"epoch": self.train_sampler.epoch, "consumed": self.train_sampler.consumed}

    def load_state_dict(self, state: dict) -> None:
        if state:
            log.info("resuming epoch %d after its first %d training clips", state["epoch"], state["consumed"])
            self._resume = dict(state)
