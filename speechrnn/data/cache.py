"""Decode each clip once into an int16 array on disk, memory-mapped by later runs.

Decoding (and resampling) wav files dominates data loading, so a split is decoded
once into ``<cache_dir>/<key>.npy`` (``(N, clip_samples)`` int16) beside a JSON index
of labels and paths; later epochs and later runs only index the memory map. The key
hashes the item list, file sizes and mtimes and the audio settings, so a changed
dataset is decoded again. Bad clips are reported once, with their path, and left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from speechrnn.core.atomic import atomic_save, atomic_write_json, sweep_leftovers
from speechrnn.core.audio import AudioError, fix_length, load_audio, to_pcm16
from speechrnn.data.layout import Item

log = logging.getLogger(__name__)


@dataclass
class ClipArray:
    """Decoded clips of one split: ``waves`` ``(N, S)`` int16, ``labels`` ``(N,)``, ``paths`` (``""`` for silence cuts).

    ``npy`` names the file ``waves`` is memory-mapped from, if it is. Pickled, such a split travels as
    that name and is mapped again where it lands: a loader worker started by spawn or forkserver (the
    default on macOS, and on Linux from Python 3.14) then shares the page cache as a forked one does,
    instead of receiving a copy of the whole split (230 MB for the embedded corpus's training split,
    about 2.7 GB for Speech Commands v0.02's).
    """

    waves: np.ndarray
    labels: np.ndarray
    paths: list[str]
    skipped: list[str]
    npy: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "waves": None} if self.npy else self.__dict__

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.npy:
            self.waves = np.load(self.npy, mmap_mode="r")


def _key(items: list[Item], labels: list[str], sample_rate: int, clip_samples: int, align: str) -> str:
    aligned = "" if align == "start" else f"|{align}"  # "start" keeps the keys of caches made before align existed
    h = hashlib.sha1(f"{labels}|{sample_rate}|{clip_samples}{aligned}".encode())
    for it in items:
        stat = it.path.stat() if it.path is not None else None
        h.update(f"{it}|{stat.st_size if stat else 0}|{stat.st_mtime_ns if stat else 0}\n".encode())
    return h.hexdigest()[:16]


def _decode(item: Item, noise: list[torch.Tensor], sample_rate: int, clip_samples: int) -> torch.Tensor:
    if item.path is None:
        if item.noise < 0:
            return torch.zeros(clip_samples)
        return noise[item.noise][item.offset: item.offset + clip_samples] * item.volume
    return load_audio(item.path, sample_rate)


def _save_npy(path: str | Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object, so numpy does not append ".npy" to the temp name
        np.save(f, array)


def decode_split(items: list[Item], labels: list[str], cache_dir: str | Path, *, noise: list[torch.Tensor] = (),
                 sample_rate: int = 16000, clip_samples: int = 16000, align: str = "start",
                 name: str = "split") -> ClipArray:
    """Decode ``items`` (cropped, or padded to ``clip_samples`` as ``align`` says) once; return the memory-mapped result."""
    cache_dir = Path(cache_dir)
    key = _key(items, labels, sample_rate, clip_samples, align)
    npy, index = cache_dir / f"{name}-{key}.npy", cache_dir / f"{name}-{key}.json"
    if not (npy.is_file() and index.is_file()):
        sweep_leftovers(cache_dir)  # half-written arrays of a decoder killed earlier: they can be large
        waves, meta = [], {"labels": [], "paths": [], "skipped": []}
        for item in tqdm(items, desc=f"decoding {name}", unit="clip", leave=False, disable=None):  # on a terminal only
            try:
                wave = fix_length(_decode(item, noise, sample_rate, clip_samples), clip_samples, align)
            except AudioError as err:
                log.warning("skipping %s", err)
                meta["skipped"].append(str(err))
                continue
            waves.append(to_pcm16(wave).numpy())
            meta["labels"].append(labels.index(item.label))
            meta["paths"].append(str(item.path) if item.path else "")
        array = np.stack(waves) if waves else np.zeros((0, clip_samples), np.int16)
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_save(npy, lambda tmp: _save_npy(tmp, array))
        atomic_write_json(index, meta)  # written last: its presence marks a complete cache
    else:
        meta = json.loads(index.read_text())
        if meta["skipped"]:
            log.warning("%d clips of %s were skipped when first decoded; reasons in %s", len(meta["skipped"]), name, index)
    return ClipArray(np.load(npy, mmap_mode="r"), np.asarray(meta["labels"], dtype=np.int64),
                     meta["paths"], meta["skipped"], npy=str(npy.absolute()))
