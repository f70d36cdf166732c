"""Scoring a detector on long recordings: build one from clips over noise, run a model over it, count.

``build_recording`` lays words of a Speech Commands-layout split over background noise (at
chosen signal-to-noise ratios); ``window_probs`` runs a model once over the recording;
``score`` counts as TensorFlow's ``test_streaming_accuracy`` does, ``field_score`` as the
field does: keywords correct, wrong and missed, and false accepts per hour of audio.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from speechrnn.core.audio import load_audio
from speechrnn.data.layout import DatasetError, load_noise, scan, split_clips
from speechrnn.inference.detect import is_keyword, window_posteriors
from speechrnn.data.labels import SILENCE, UNKNOWN

NOISE_RMS = 0.01  # -40 dBFS: the noise bed's level when words are mixed at a signal-to-noise ratio


def _mix(track: np.ndarray, offset: int, clip: np.ndarray, volume: float, ramp: int) -> None:
    """Add ``clip`` into ``track`` at ``offset`` (in place), faded in and out over ``ramp`` samples."""
    clip = clip[: max(0, len(track) - offset)]
    n = np.arange(len(clip))
    envelope = np.minimum(1.0, np.minimum(n / ramp, (len(clip) - n) / ramp))  # (n,)
    track[offset: offset + len(clip)] += clip * envelope * volume


def active_rms(clip: np.ndarray, rate: int, within_db: float = 30.0) -> float:
    """A clip's speech level: the RMS of its 10 ms frames within ``within_db`` of its loudest.

    A Speech Commands clip is a word padded with silence to 1 s; the RMS of the whole clip
    would rate a short word as quiet. The signal-to-noise ratio of ``build_recording`` is
    20 log10(active_rms(word) / RMS of the noise), the noise being held at ``NOISE_RMS``.
    """
    hop = rate // 100
    frames = clip[: len(clip) // hop * hop].astype(np.float64).reshape(-1, hop)  # (n, 10 ms)
    power = (frames ** 2).mean(1)  # (n,)
    return float(np.sqrt(power[power >= power.max() * 10 ** (-within_db / 10)].mean())) if power.max() > 0 else 0.0


def noise_bed(track: np.ndarray, noises: list[np.ndarray], rng: np.random.Generator, rate: int,
              background_volume: float, fixed_level: bool) -> None:
    """Add noise all along ``track`` (in place): 1.5 s segments every 1 s, cross-faded over 0.25 s.

    Each segment is cut at random from a random one of ``noises``, at a random volume up to
    ``background_volume``, or scaled to ``NOISE_RMS`` when ``fixed_level``.
    """
    segment = int(1.5 * rate)
    noises = [n for n in noises if len(n) > segment]
    for offset in range(0, len(track), rate) if noises else ():
        noise = noises[rng.integers(len(noises))]
        start = rng.integers(len(noise) - segment)
        cut = noise[start: start + segment]
        rms = float(np.sqrt(np.mean(cut.astype(np.float64) ** 2)))
        volume = (NOISE_RMS / rms if rms > 0 else 0.0) if fixed_level else rng.uniform(0, background_volume)
        _mix(track, offset, cut, volume, rate // 4)


def build_recording(root: str | Path, labels: list[str], seconds: float, rng: np.random.Generator,
                    split: str = "testing", word_gap_ms: float = 2000.0, unknown_percentage: float = 20.0,
                    background_volume: float = 0.1, rate: int = 16000, noises: list[torch.Tensor] | None = None,
                    snr_db: tuple[float, float] | None = None) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """A long recording ``(N,)`` float32 of words over noise, and its ``[(label, start_s)]`` track.

    Args:
        noises (list[Tensor] | None, optional): background recordings ``(n,)`` at ``rate``;
            None takes the dataset's ``_background_noise_``. (Default: ``None``)
        snr_db (tuple[float, float] | None, optional): each word's signal-to-noise ratio is
            drawn uniformly from this range, over noise held at ``NOISE_RMS``; None keeps
            the words' own level and the noise's random volume. (Default: ``None``)
    """
    folders = split_clips(root, scan(root))[split]
    keywords = [w for w in labels if w in folders and is_keyword(w)]
    others = [w for w in folders if (w not in labels or w == UNKNOWN) and w != SILENCE] if UNKNOWN in labels else []
    if not keywords:
        raise DatasetError(f"{root}: its {split} split has no clips of the model's keywords {labels}")
    track = np.zeros(int(seconds * rate), np.float32)
    noises = load_noise(Path(root), rate) if noises is None else noises
    noise_bed(track, [n.numpy() for n in noises], rng, rate, background_volume, fixed_level=snr_db is not None)
    truth, stride, gap = [], rate + int(word_gap_ms * rate / 1000), int(word_gap_ms * rate / 1000)
    for i in range(len(track) // stride):
        offset = i * stride + int(rng.integers(max(1, gap)))
        unknown = bool(others) and rng.uniform(0, 100) < unknown_percentage
        word = others[rng.integers(len(others))] if unknown else keywords[rng.integers(len(keywords))]
        clip = load_audio(folders[word][rng.integers(len(folders[word]))], rate).numpy()[:rate]
        volume = 1.0
        if snr_db is not None and (level := active_rms(clip, rate)) > 0:
            volume = NOISE_RMS * 10 ** (rng.uniform(*snr_db) / 20) / level
        _mix(track, offset, clip, volume, 500)
        truth.append((UNKNOWN if unknown else word, round(offset / rate, 6)))
    return np.clip(track, -1, 1), truth


def score(truth: list[tuple[str, float]], found: list[tuple[str, float]], tolerance_s: float) -> dict:
    """Counts and rates of detections ``found`` against ``truth``, both ``[(label, time_s)]``.

    Each detection (in time order) takes the earliest unmatched word within ``tolerance_s``;
    it is correct when the labels agree and wrong otherwise; with none it is a false alarm.
    """
    truth, matched = sorted(truth, key=lambda t: t[1]), set()
    correct = wrong = false_alarms = 0
    for label, t in sorted(found, key=lambda f: f[1]):
        near = [i for i, (_, tt) in enumerate(truth) if abs(tt - t) <= tolerance_s and i not in matched]
        if not near:
            false_alarms += 1
            continue
        matched.add(near[0])
        correct, wrong = correct + (truth[near[0]][0] == label), wrong + (truth[near[0]][0] != label)
    n = max(1, len(truth))
    counts = dict(words=len(truth), detections=len(found), matched=len(matched), correct=correct, wrong=wrong,
                  false_alarms=false_alarms)
    rates = {f"{k}_pct": round(100 * counts[k] / n, 2) for k in ("matched", "correct", "wrong", "false_alarms")}
    return counts | rates


def field_score(truth: list[tuple[str, float]], found: list[tuple[str, float]], seconds: float,
                tolerance_s: float) -> dict:
    """Keyword spotting as the field measures it: correct, wrong and missed keywords, false accepts per hour.

    Args:
        truth (list[tuple[str, float]]): the recording's words ``(label, time_s)``, keywords and ``_unknown_``.
        found (list[tuple[str, float]]): keyword detections ``(label, time_s)``.
        seconds (float): the recording's length.
        tolerance_s (float): how far from a keyword a detection may be to count for it.

    Each detection, in time order, takes the earliest keyword within ``tolerance_s`` that
    no detection has taken yet (as ``score``): correct if the labels agree, else wrong. A
    detection with no such keyword near (on noise, on an ``_unknown_`` word, or a second one
    on a keyword already taken) is a false accept. A keyword no detection took is missed.
    ``miss_rate`` is 1 - correct / keywords: a keyword heard as another is missed too.
    """
    keywords = [(label, t) for label, t in truth if is_keyword(label)]
    s = score(keywords, found, tolerance_s)
    n = max(1, len(keywords))
    return dict(keywords=len(keywords), correct=s["correct"], wrong=s["wrong"], missed=len(keywords) - s["matched"],
                false_accepts=s["false_alarms"], fa_per_hour=round(s["false_alarms"] * 3600 / seconds, 3),
                correct_pct=round(100 * s["correct"] / n, 2), miss_rate=round(1 - s["correct"] / n, 4))


def operating_point(points: list[dict], max_fa_per_hour: float) -> dict | None:
    """The swept point with the most keywords correct at most ``max_fa_per_hour`` false accepts per hour."""
    within = [q for q in points if q["fa_per_hour"] <= max_fa_per_hour]
    return max(within, key=lambda q: (q["correct"], -q["fa_per_hour"])) if within else None


def window_probs(backend, wave: np.ndarray, chunk_ms: float = 100.0) -> tuple[list[float], torch.Tensor]:
    """The model run once over a recording, fed in chunks as a stream.

    Returns the windows' starts in ms ``(P,)`` and their posteriors ``(P, C)``."""
    chunk = round(chunk_ms * backend.rate / 1000)
    starts, probs, _ = zip(*window_posteriors(backend.spotter(), torch.from_numpy(wave).split(chunk)))
    return (1000.0 * torch.cat(starts) / backend.rate).tolist(), torch.cat(probs)


def read_labels(path: Path) -> list[tuple[str, float]]:
    with open(path, newline="") as f:
        return [(row["label"], float(row["time"])) for row in csv.DictReader(f)]
