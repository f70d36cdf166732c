"""Speech Commands-layout folders: find clips, split them, label them for a task.

A folder is in the Speech Commands layout when it holds ``<word>/<clip>.wav``
(names ``<speaker>_nohash_<n>.wav``), optionally ``validation_list.txt`` /
``testing_list.txt`` and ``_background_noise_/``. The canonical test set adds
``_unknown_/`` (``<word>_<speaker>_nohash_<n>.wav.wav``) and ``_silence_/``.

Splits follow the reference recipe (TensorFlow's ``input_data.py``): the list
files when present, otherwise the SHA-1 hash of the part of the name before
``_nohash_``, so one speaker never lands in two splits. A folder whose speaker ids
hash unevenly (one that is itself a test split hashes almost wholly to testing) is
warned about, and can be split by ``deal_speakers`` instead, or by a salted hash. For kws12, ``_unknown_``
and ``_silence_`` are each ``unknown_percentage`` / ``silence_percentage`` of the
known-word clips of a split; unknown clips are drawn from the other words, silence
is cut from ``_background_noise_``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from speechrnn.core.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, AudioError, load_audio
from speechrnn.core.errors import SpeechRNNError
from speechrnn.data.labels import BACKGROUND_NOISE_DIR, KWS12, SILENCE, UNKNOWN, WORDS_V2, words_for_version

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

SPLITS = ("training", "validation", "testing")
SPLIT_RULES = ("reference", "speaker_fraction")  # data.split
STAGE_SPLITS = {"train": "training", "val": "validation"}  # Lightning stage -> split (testing: evaluate_clips)
MAX_NUM_WAVS_PER_CLASS = 2**27 - 1  # from the reference recipe's hash rule
SILENCE_CUT = "<silence cut>"  # how reports and errors name a clip cut from background noise (no file)


class DatasetError(SpeechRNNError, ValueError):
    """A dataset folder that cannot be used; the message is one line naming it and the fix."""


@dataclass(frozen=True)
class Item:
    """One example: a clip file, or a silence cut (``path`` None, ``noise`` index and ``offset``)."""

    label: str
    path: Path | None = None
    noise: int = -1
    offset: int = 0
    volume: float = 0.0


def task_labels(task: str, version: str = "v0.02", words: list[str] | None = None,
                silence: bool = True, unknown: bool = True) -> list[str]:
    """Class names of a task: ``kws12``, ``kws35`` (every word of the version) or ``custom``."""
    if task == "kws12":
        return list(KWS12)
    if task == "kws35":
        return list(words_for_version(version))
    if task == "custom":
        if not words:
            raise DatasetError("task=custom needs data.words, a list of keywords")
        return list(words) + ([SILENCE] if silence else []) + ([UNKNOWN] if unknown else [])
    raise DatasetError(f"unknown task {task!r}: expected kws12, kws35 or custom")


def _percentage(name: str) -> float:
    bucket = int(hashlib.sha1(name.encode()).hexdigest(), 16) % (MAX_NUM_WAVS_PER_CLASS + 1)
    return bucket * (100.0 / MAX_NUM_WAVS_PER_CLASS)


def speaker_of(filename: str) -> str:
    """The speaker id of a clip: the part before ``_nohash_``, less a ``<word>_`` prefix (canonical ``_unknown_``)."""
    return re.sub(r"_nohash_.*$", "", Path(filename).name).split("_")[-1]


def _split_at(percentage: float, validation_percentage: float, testing_percentage: float) -> str:
    """The split whose band holds ``percentage``: validation [0, v), testing [v, v + t), training the rest."""
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def hash_split(filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0,
               salt: str = "") -> str:
    """The reference recipe's split of a clip, from the SHA-1 of its name before ``_nohash_``.

    A non-empty ``salt`` is put before the name, which draws another split, still one speaker
    to one split; ``""`` is the reference rule.
    """
    percentage = _percentage(salt + re.sub(r"_nohash_.*$", "", Path(filename).name))
    return _split_at(percentage, validation_percentage, testing_percentage)


def deal_speakers(folders: dict[str, list[Path]], validation_percentage: float = 10.0,
                  testing_percentage: float = 10.0, seed: int = 59185, salt: str = "") -> dict[str, str]:
    """Speaker id -> split: the speakers, shuffled, dealt so each split gets its share of the clips.

    The shuffled speakers are laid end to end on [0, 100), each as wide as its share of the
    clips, and each goes to the split whose band (as in ``hash_split``) holds its middle: the
    shares come out right to about one speaker's clips, however the ids would hash.

    Args:
        folders (dict): ``{folder: clips}``; a speaker is ``speaker_of`` a clip's name.
        validation_percentage, testing_percentage (float, optional): the shares; training has
            the rest. (Default: ``10``, ``10``)
        seed (int, optional): the shuffle's seed. (Default: ``59185``)
        salt (str, optional): mixed into the seed, as in ``hash_split``: another deal. (Default: ``""``)
    """
    counts = Counter(speaker_of(clip.name) for clips in folders.values() for clip in clips)
    speakers = sorted(counts)
    random.Random(f"{salt}{seed}").shuffle(speakers)
    total, start, dealt = sum(counts.values()), 0, {}
    for speaker in speakers:
        dealt[speaker] = _split_at(100.0 * (start + counts[speaker] / 2) / total,
                                   validation_percentage, testing_percentage)
        start += counts[speaker]
    return dealt


def speaker_split(filename: str, testing_speakers: list[str], validation_speakers: list[str],
                  validation_percentage: float = 10.0) -> str:
    """A split by named speakers, for small corpora such as FSDD (train on 4 speakers, test on 2).

    Without ``validation_speakers``, validation takes ``validation_percentage`` of the other
    speakers' clips (by a hash of the whole name): it then only picks the checkpoint.
    """
    speaker = speaker_of(filename)
    if speaker in testing_speakers:
        return "testing"
    if speaker in validation_speakers:
        return "validation"
    if not validation_speakers and _percentage(Path(filename).name) < validation_percentage:
        return "validation"
    return "training"


def scan(root: str | Path, key: str = "data.root") -> dict[str, list[Path]]:
    """Clips per label folder under ``root`` (sorted); ``_background_noise_`` is left out.

    Args:
        root (str | Path): a folder in the Speech Commands layout.
        key (str, optional): the setting ``root`` came from, named in errors. (Default: ``"data.root"``)

    Raises:
        DatasetError: ``root`` is missing, is a file, or holds no label folder with audio.
    """
    root = Path(root)
    layout = "a folder in the Speech Commands layout (<word>/<clip>.wav)"
    if root.is_file():
        raise DatasetError(f"{root}: is a file, not a folder; set {key} to {layout}")
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist: expected {layout}; set {key}")
    folders = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != BACKGROUND_NOISE_DIR):
        clips = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if clips:
            folders[sub.name] = clips
    if not folders:
        raise DatasetError(f"{root} has no label folders with audio: expected the Speech Commands layout "
                           "<word>/<clip>.wav")
    return folders


def read_split_lists(root: Path) -> dict[str, set[str]] | None:
    """``validation_list.txt`` and ``testing_list.txt`` as sets of ``word/file`` names, or None."""
    lists = {"validation": root / "validation_list.txt", "testing": root / "testing_list.txt"}
    if not all(p.is_file() for p in lists.values()):
        return None
    named = {s: {ln.strip() for ln in p.read_text().splitlines() if ln.strip()} for s, p in lists.items()}
    for split, names in named.items():
        missing = sorted(n for n in names if not (root / n).is_file())
        if missing:
            raise DatasetError(f"{lists[split]} names {len(missing)} clips that do not exist under {root} "
                               f"(first: {missing[0]}); fix the list or restore the clips")
    return named


def split_clips(root: str | Path, folders: dict[str, list[Path]], validation_percentage: float = 10.0,
                testing_percentage: float = 10.0, testing_speakers: list[str] | None = None,
                validation_speakers: list[str] | None = None, split: str = "reference", salt: str = "",
                seed: int = 59185) -> dict[str, dict[str, list[Path]]]:
    """``{split: {folder: clips}}`` by named speakers if given, else as ``split`` says.

    ``split="reference"``: the list files, else ``hash_split``; ``split="speaker_fraction"``:
    ``deal_speakers`` with ``seed``; ``salt`` draws another split of either. A split by
    percentages that comes out far from them is warned about (``warn_if_skewed``).

    Raises:
        DatasetError: an unknown ``split``, or one given together with ``testing_speakers``.
    """
    root = Path(root)
    if split not in SPLIT_RULES:
        raise DatasetError(f"data.split={split!r}: unknown split rule; expected one of {list(SPLIT_RULES)}")
    if testing_speakers and split != "reference":
        raise DatasetError(f"data.split={split} and data.testing_speakers both choose the test speakers; drop one")
    lists = None if testing_speakers or split != "reference" else read_split_lists(root)
    dealt = None
    if split == "speaker_fraction":
        dealt = deal_speakers(folders, validation_percentage, testing_percentage, seed, salt)
    out: dict[str, dict[str, list[Path]]] = {s: {} for s in SPLITS}
    for word, clips in folders.items():
        for clip in clips:
            if testing_speakers:
                name = speaker_split(clip.name, testing_speakers, validation_speakers or [], validation_percentage)
            elif dealt is not None:
                name = dealt[speaker_of(clip.name)]
            elif lists is not None:
                rel = f"{word}/{clip.name}"
                name = next((s for s in ("validation", "testing") if rel in lists[s]), "training")
            else:
                name = hash_split(clip.name, validation_percentage, testing_percentage, salt)
            out[name].setdefault(word, []).append(clip)
    if not testing_speakers and lists is None:
        warn_if_skewed(root, out, validation_percentage, testing_percentage, rule=split)
    return out


def warn_if_skewed(root: Path, splits: dict[str, dict[str, list[Path]]], validation_percentage: float,
                   testing_percentage: float, rule: str = "reference") -> None:
    """One warning line naming every split whose share of the clips is under half or over double its percentage.

    The hash rule's shares are right on average over many speakers, not on any one folder:
    the canonical test set hashes almost wholly to testing. The warning names the way out.

    Args:
        root (Path): the dataset folder, named in the warning.
        splits (dict): ``{split: {folder: clips}}`` as ``split_clips`` made it.
        validation_percentage, testing_percentage (float): the intended shares; training has the rest.
        rule (str, optional): the ``split_clips`` rule that made ``splits``. (Default: ``"reference"``)
    """
    intended = {"training": 100.0 - validation_percentage - testing_percentage,
                "validation": validation_percentage, "testing": testing_percentage}
    sizes = {s: sum(len(clips) for clips in splits[s].values()) for s in SPLITS}
    total = sum(sizes.values())
    share = {s: 100.0 * sizes[s] / total for s in SPLITS}
    off = [f"{s} {share[s]:.1f} % (intended {intended[s]:g} %)" for s in SPLITS
           if intended[s] > 0 and not intended[s] / 2 <= share[s] <= 2 * intended[s]]
    if not off:
        return
    if rule == "reference":
        way_out = ("its speaker ids hash unevenly; data.split=speaker_fraction deals the speakers by the "
                   "percentages (data.split_salt=<text> draws another hash split)")
    else:
        way_out = "a few speakers hold most clips; data.split_salt=<text> deals them in another order"
    log.warning("%s: the %s split of %d clips is far from its intended shares: %s; %s", root,
                "hash" if rule == "reference" else rule, total, ", ".join(off), way_out)


def label_items(folders: dict[str, list[Path]], labels: list[str], *, sample: bool,
                unknown_percentage: float = 10.0, silence_percentage: float = 10.0,
                noise_lengths: list[int] = (), clip_samples: int = 16000, seed: int = 59185) -> list[Item]:
    """Label the clips of one split for a task.

    Folders named after a label keep it; ``_silence_`` and ``_unknown_`` folders keep theirs;
    any other word becomes ``_unknown_`` when the task has it and is dropped otherwise.
    With ``sample`` (a split cut from word folders), unknown clips are drawn to
    ``unknown_percentage`` of the known clips and silence cuts are added to
    ``silence_percentage``, as in the reference recipe; without it (a folder such as the
    canonical test set) every clip is used as it is.
    """
    rng = random.Random(seed)
    known = [Item(w, p) for w in sorted(folders) if w in labels for p in folders[w]]
    others = [Item(UNKNOWN, p) for w in sorted(folders) if w not in labels and w != SILENCE for p in folders[w]]
    if UNKNOWN not in labels:
        others = []
    elif sample:
        rng.shuffle(others)
        others = others[: math.ceil(len(known) * unknown_percentage / 100)]
    items = known + others
    if SILENCE in labels and sample and SILENCE not in folders:
        count = math.ceil(len(known) * silence_percentage / 100)
        for _ in range(count):
            if noise_lengths:
                k = rng.randrange(len(noise_lengths))
                offset = rng.randrange(max(1, noise_lengths[k] - clip_samples))
                items.append(Item(SILENCE, noise=k, offset=offset, volume=rng.uniform(0.0, 1.0)))
            else:
                items.append(Item(SILENCE))  # no noise files: digital silence, as the reference does
    return items


def load_noise(root: Path, sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """The ``_background_noise_`` clips of a dataset (unreadable ones reported and skipped)."""
    return load_noise_dir(root / BACKGROUND_NOISE_DIR, sample_rate)


def load_noise_dir(folder: Path, sample_rate: int = SAMPLE_RATE) -> list[torch.Tensor]:
    """The ``.wav`` recordings in a folder of noise (unreadable ones reported and skipped)."""
    noise = []
    for path in sorted(folder.glob("*.wav")):
        try:
            noise.append(load_audio(path, sample_rate))
        except AudioError as err:
            log.warning("skipping background noise %s", err)
    return noise


def check_label_folders(root: Path, folders: list[str], labels: list[str]) -> None:
    """Refuse a dataset whose folders match no label; warn once about each folder that is no known word.

    Raises:
        DatasetError: no folder is named after a label of the task.
    """
    recognised = set(labels) | {SILENCE, UNKNOWN}
    if not recognised & set(folders):
        raise DatasetError(f"{root}: no label folder matches the task's labels {labels} (found {sorted(folders)}); "
                           "name each folder after its keyword, or choose the task (task=..., data.words=[...])")
    fate = "used as _unknown_" if UNKNOWN in labels else "left out"
    for name in sorted(set(folders) - recognised - set(WORDS_V2)):
        log.warning("label folder %s is neither a label of the task nor a Speech Commands word; its clips are %s "
                    "(rename it if it holds a keyword)", root / name, fate)
