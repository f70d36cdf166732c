"""Keyword detection in recordings longer than one clip: which keywords occur, and when.

A spotter (``speechrnn.inference.streaming.StreamingSpotter``, or ``WindowedSpotter`` around an
exported model) gives the posterior of every 1 s window, one every ``hop * stack``
samples (80 ms). ``RecognizeCommands`` smooths them as TensorFlow's reference does
(``tensorflow/examples/speech_commands/recognize_commands.py``): it averages the
posteriors of the last ``average_window_ms``; fewer than ``minimum_count`` posteriors,
or less than a quarter of the averaging window, give no answer. Its decisions differ
from the reference's, so that one spoken word gives one detection with one label:

* Only keywords are detections: ``_silence_`` is the absence of a word and ``_unknown_``
  a word that is not a keyword (``report_unknown`` shows the latter, marked as such).
* A 1 s word overlaps the windows that start up to 1 s before it and during it, about
  2 s of windows 80 ms apart, and their posteriors can hand the top place from one
  keyword to a similar one (``left`` then ``right``). The reference reports every change
  of top label after ``suppression_ms``, so one word could come out twice. Here a keyword
  is reported when its smoothed score exceeds ``threshold``, no keyword was reported in
  the ``suppression_ms`` before (default 1 s: the refractory period, whatever the label),
  and the detector is armed: after each detection it re-arms only once the smoothed
  probability that some keyword is heard, the sum of the keywords' scores, has fallen to
  ``threshold`` or below, i.e. once the word has ended. While the top place passes from
  one keyword to another, each may dip under the threshold but their sum does not. (A
  model without ``_silence_`` or ``_unknown_`` puts all its mass on keywords; there the
  best keyword's score stands for the sum.) Two keywords spoken back to back with no
  lull between them count as one.
* Windows that are mostly padding count for nothing. The end of a recording is padded
  with silence so that its last samples are covered (``StreamingSpotter.flush``); a
  window whose start is later than ``MIN_AUDIO`` (3/4) of a window before the end is
  dropped, because sound followed by digital silence is what a short clip looks like,
  and the models called it a word.

A detection's time is the start of the window whose posterior fired it; its end is
that window's end (cut at the end of the recording). ``sweep`` replays the decisions
at many thresholds over posteriors computed once, for the benchmark and calibration of
``speechrnn.streamtest``; ``calibrate`` counts false accepts on noise to pick the
threshold of a budget, and ``read_calibration`` gives ``transcribe`` what it chose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import Tensor

from speechrnn.core.atomic import atomic_write_json
from speechrnn.model.checkpoint import CheckpointError
from speechrnn.core.errors import ConfigError
from speechrnn.data.labels import SILENCE, UNKNOWN

MIN_AUDIO = 0.75  # a window counts when at least this share of it is recorded audio, not end padding
DEFAULT_THRESHOLD = 0.5


def is_keyword(label: str) -> bool:
    """Whether a detection of ``label`` means a keyword was heard (not ``_silence_`` or ``_unknown_``)."""
    return label not in (SILENCE, UNKNOWN)


class RecognizeCommands:
    """Smooths a stream of window posteriors into keyword detections, one per spoken word.

    Args:
        labels (list[str]): class names, in posterior order.
        average_window_ms (float, optional): posteriors averaged, by age. (Default: ``500``)
        threshold (float, optional): smoothed score a keyword must exceed; the reference
            uses 0.7, 0.5 suits our softer posteriors. ``speechrnn.streamtest --calibrate``
            picks one for a budget of false accepts per hour. (Default: ``0.5``)
        suppression_ms (float, optional): refractory period after a keyword detection, in
            which no keyword, of any label, is reported. (Default: ``1000``)
        minimum_count (int, optional): posteriors needed in the window for any answer. (Default: ``3``)
        report_unknown (bool, optional): also report ``_unknown_`` when it becomes the top
            label above ``threshold`` outside a keyword's refractory period; it neither
            disarms the detector nor starts a refractory period, so a keyword heard later in
            the same word is still reported. (Default: ``False``)

    Shapes:
        ``process(time_ms, probs (C,)) -> (label, score) or None`` when no new detection.
    """

    def __init__(self, labels: list[str], average_window_ms: float = 500.0, threshold: float = DEFAULT_THRESHOLD,
                 suppression_ms: float = 1000.0, minimum_count: int = 3, report_unknown: bool = False):
        if average_window_ms <= 0 or suppression_ms < 0:
            raise ValueError(f"need average_window_ms > 0 and suppression_ms >= 0, got "
                             f"{average_window_ms} and {suppression_ms}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")
        if minimum_count < 1:
            raise ValueError(f"minimum_count must be >= 1, got {minimum_count}")
        self.labels = list(labels)
        self.average_window_ms, self.threshold = average_window_ms, threshold
        self.suppression_ms, self.minimum_count, self.report_unknown = suppression_ms, minimum_count, report_unknown
        self.keywords = torch.tensor([is_keyword(label) for label in self.labels])  # (C,) bool
        self.results: deque[tuple[float, Tensor]] = deque()  # (time_ms, probs (C,)), oldest first
        self.armed, self.previous_time, self.unknown_on = True, float("-inf"), False

    def process(self, time_ms: float, probs: Tensor) -> tuple[str, float] | None:
        """Add the posterior of the window starting at ``time_ms``; a new detection or None."""
        average = self.smooth(time_ms, probs)
        return None if average is None else self.decide(time_ms, *self.summary(average))

    def smooth(self, time_ms: float, probs: Tensor) -> Tensor | None:
        """Add a posterior; the average ``(C,)`` over the last ``average_window_ms``, or None if too few."""
        if probs.shape != (len(self.labels),):
            raise ValueError(f"expected {len(self.labels)} scores, got shape {tuple(probs.shape)}")
        if self.results and time_ms < self.results[-1][0]:
            raise ValueError(f"posteriors must come in time order: {time_ms} ms after {self.results[-1][0]} ms")
        self.results.append((time_ms, probs))
        while self.results[0][0] < time_ms - self.average_window_ms:
            self.results.popleft()
        if len(self.results) < self.minimum_count or \
                time_ms - self.results[0][0] < self.average_window_ms / 4:
            return None
        return torch.stack([p for _, p in self.results]).mean(0)  # (C,)

    def summary(self, average: Tensor) -> tuple[str, float, float]:
        """What ``decide`` needs of an average ``(C,)``: the top label, its score, and how keyword-like it is."""
        score, top = average.max(0)
        keywords = average[self.keywords]  # (K,)
        # how much the window sounds like some keyword: the keywords' total, or, where they are
        # every label (and so always total 1), the best of them
        heard = keywords.max() if self.keywords.all() else keywords.sum()
        return self.labels[int(top)], float(score), float(heard)

    def decide(self, time_ms: float, label: str, score: float, keyword_score: float) -> tuple[str, float] | None:
        """The detection, if any, of a smoothed posterior whose top is ``label`` at ``score``.

        ``keyword_score`` is the probability that some keyword is heard (see the module's docstring)."""
        if keyword_score <= self.threshold:
            self.armed = True  # no keyword is heard any more: the last word has ended
        above = score > self.threshold
        quiet = time_ms - self.previous_time > self.suppression_ms
        unknown = above and label == UNKNOWN
        rising, self.unknown_on = unknown and not self.unknown_on, unknown
        if above and is_keyword(label) and self.armed and quiet:
            self.armed, self.previous_time = False, time_ms
            return label, score
        if rising and quiet and self.report_unknown:
            return label, score
        return None


def window_posteriors(spotter, chunks: Iterable[Tensor]) -> Iterator[tuple[Tensor, Tensor, float]]:
    """The window posteriors of a stream as its chunks arrive: ``(starts (P,), probs (P, C), end)``.

    ``spotter`` has ``push(samples) -> (starts, probs)``, ``flush()``, ``rate`` and
    ``clip_samples``; the stream ends (and is padded, see ``StreamingSpotter.flush``) when
    ``chunks`` does. ``starts`` are in samples; ``end`` is the length of the recording in
    samples once it is known (the last batch), infinite before. Of the padded windows only
    those at least ``MIN_AUDIO`` recorded audio are kept.
    """
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        yield *spotter.push(chunk), float("inf")
    starts, probs = spotter.flush()  # (P,), (P, C)
    recorded = starts <= seen - MIN_AUDIO * spotter.clip_samples
    yield starts[recorded], probs[recorded], float(seen)


def detect_events(spotter, chunks: Iterable[Tensor], recognizer: RecognizeCommands) -> Iterator[dict]:
    """Detections in a stream, as they are found: ``{"label", "start", "end", "score"}`` (seconds).

    See ``window_posteriors`` for ``spotter`` and ``chunks``. Only keywords are reported, and
    ``_unknown_`` too if the recogniser was asked to (``report_unknown``).
    """
    clip_seconds = spotter.clip_samples / spotter.rate
    for starts, probs, end in window_posteriors(spotter, chunks):
        for start, p in zip(starts.tolist(), probs):
            found = recognizer.process(1000.0 * start / spotter.rate, p)
            if found:
                begin = start / spotter.rate
                yield {"label": found[0], "start": round(begin, 3),
                       "end": round(min(begin + clip_seconds, end / spotter.rate), 3), "score": round(found[1], 4)}


def sweep(times_ms: Iterable[float], probs: Tensor, labels: list[str], thresholds: Iterable[float],
          smoothing: dict) -> dict[float, list[tuple[str, float]]]:
    """Keyword detections ``[(label, time_ms)]`` at each threshold, from posteriors computed once.

    The same decisions ``RecognizeCommands`` takes with each threshold (``smoothing`` gives
    its other settings). The smoothing does not depend on the threshold, so it is done once
    and only the decisions are replayed: a sweep costs little more than one pass.

    Args:
        times_ms (Iterable[float]): each window's start, in ms, in time order; ``(P,)``.
        probs (Tensor): the windows' posteriors, ``(P, C)``.
        labels (list[str]): class names, C.
        thresholds (Iterable[float]): the thresholds to try.
        smoothing (dict): the other ``RecognizeCommands`` settings (a ``threshold`` there is ignored).
    """
    smoothing = {k: v for k, v in smoothing.items() if k not in ("threshold", "report_unknown")}
    recognizer = RecognizeCommands(labels, **smoothing)
    smoothed = [(t, *recognizer.summary(a)) for t, p in zip(times_ms, probs)
                if (a := recognizer.smooth(t, p)) is not None]
    out = {}
    for threshold in thresholds:
        decider = RecognizeCommands(labels, threshold=threshold, **smoothing)
        out[threshold] = [(found[0], t) for t, *summary in smoothed if (found := decider.decide(t, *summary))]
    return out


def summarize(events: list[dict], top_k: int) -> dict:
    """One record for a recording: its keywords in order as ``label``, the best as ``score``.

    ``_unknown_`` detections (``report_unknown``) stay in ``detections`` but are not keywords found."""
    best: dict[str, float] = {}
    keywords = [e for e in events if is_keyword(e["label"])]
    for e in keywords:
        best[e["label"]] = max(best.get(e["label"], 0.0), e["score"])
    topk = sorted(({"label": k, "score": v} for k, v in best.items()), key=lambda t: -t["score"])[:top_k]
    return {"label": " ".join(e["label"] for e in keywords) or SILENCE,
            "score": topk[0]["score"] if topk else 0.0, "topk": topk, "detections": events}


def calibrate(detections: dict[float, list], seconds: float) -> list[dict]:
    """False accepts per hour at each threshold, from ``sweep``'s detections on audio without keywords.

    Every keyword detected in noise is a false accept. With ``seconds`` of noise one false
    accept is ``3600 / seconds`` per hour: the finest budget the calibration can tell.
    """
    return [dict(threshold=round(t, 4), false_accepts=len(found), fa_per_hour=round(len(found) * 3600 / seconds, 3))
            for t, found in sorted(detections.items())]


def pick_threshold(points: list[dict], max_fa_per_hour: float) -> dict | None:
    """The point of the lowest threshold from which every higher one keeps within ``max_fa_per_hour``.

    Not merely the lowest that does: a low threshold can count few false accepts because its
    detector, re-armed only when the keywords' smoothed total falls to the threshold, stays
    disarmed in noise, which would make it deaf to keywords too. None if even the highest
    threshold exceeds the budget.
    """
    chosen = None
    for point in sorted(points, key=lambda q: -q["threshold"]):
        if point["fa_per_hour"] > max_fa_per_hour:
            break
        chosen = point
    return chosen


def calibration_path(model: str | Path) -> Path:
    """The side file that carries a model's calibrated threshold: ``<model>.threshold.json``."""
    return Path(f"{model}.threshold.json")


def _digest(path: str | Path) -> str:
    """SHA-256 of a model file: a calibration is valid for the exact weights it was measured on."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_calibration(model: str | Path, points: list[dict], max_fa_per_hour: float, **about) -> dict:
    """Write ``calibration_path(model)`` (atomically) with the threshold chosen for ``max_fa_per_hour``.

    Args:
        model (str | Path): the model file calibrated.
        points (list[dict]): ``calibrate``'s false accepts per threshold; kept, so another
            budget can be picked later (``transcribe --max-fa-per-hour``).
        max_fa_per_hour (float): the budget.
        **about: how the noise was made (folder, minutes, seed, smoothing), kept as is.

    Raises:
        ConfigError: no calibrated threshold keeps within the budget.
    """
    chosen = _choose(points, max_fa_per_hour, model)
    record = dict(model=str(model), sha256=_digest(model), max_fa_per_hour=max_fa_per_hour,
                  threshold=chosen["threshold"], fa_per_hour=chosen["fa_per_hour"], **about, points=points)
    atomic_write_json(calibration_path(model), record)
    return record


def _choose(points: list[dict], max_fa_per_hour: float, model: str | Path) -> dict:
    """``pick_threshold``, or a one-line error when no threshold keeps within the budget."""
    chosen = pick_threshold(points, max_fa_per_hour)
    if chosen is None:
        top = max(points, key=lambda q: q["threshold"])
        raise ConfigError(f"--max-fa-per-hour {max_fa_per_hour:g}: no threshold keeps {model} within it on the "
                          f"calibration noise (at {top['threshold']:g}: {top['fa_per_hour']:g} per hour); "
                          "allow more false accepts, or use a model that fires less on this noise")
    return chosen


def read_calibration(model: str | Path, max_fa_per_hour: float | None = None) -> tuple[float | None, str | None]:
    """The threshold of ``model``'s side file, and a line saying where it came from: ``(None, None)`` without one.

    The threshold is the file's own budget's, or ``max_fa_per_hour``'s picked from its points.
    A file measured on other weights (the model was retrained or replaced) is ignored, and
    the line says so: ``(None, line)``.

    Raises:
        CheckpointError: the side file is unreadable, or ``max_fa_per_hour`` is asked of a
            model without a valid one.
    """
    path = calibration_path(model)
    asked = 1 if max_fa_per_hour is None else max_fa_per_hour
    fix = (f"make one with python -m speechrnn.streamtest --model {model} --calibrate --noise DIR "
           f"--max-fa-per-hour {asked:g}")
    if not path.is_file():
        if max_fa_per_hour is None:
            return None, None
        raise CheckpointError(f"{path}: no calibration for --max-fa-per-hour; {fix}")
    try:
        record = json.loads(path.read_text())
        digest, points, budget = record["sha256"], record["points"], float(record["max_fa_per_hour"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{path}: not a readable calibration; delete it, or {fix}") from None
    if digest != _digest(model):
        if max_fa_per_hour is not None:
            raise CheckpointError(f"{path}: calibrated on other weights than {model}'s now; {fix}")
        return None, f"ignoring {path}: calibrated on other weights than {model}'s now; {fix}"
    budget = budget if max_fa_per_hour is None else max_fa_per_hour
    chosen = _choose(points, budget, model)
    return chosen["threshold"], (f"detection threshold {chosen['threshold']:g} from {path} (at most {budget:g} "
                                 f"false accepts per hour on its noise: {chosen['fa_per_hour']:g})")


def add_smoothing_args(parser: argparse.ArgumentParser) -> None:
    """The ``RecognizeCommands`` settings as command-line options (transcribe and streamtest share them)."""
    g = parser.add_argument_group("detection in long recordings (RecognizeCommands smoothing)")
    g.add_argument("--detection-threshold", type=float,
                   help=f"(default {DEFAULT_THRESHOLD}; transcribe: the model's calibrated one if it has one)")
    g.add_argument("--average-window-ms", type=float, default=500.0, help="(default 500)")
    g.add_argument("--suppression-ms", type=float, default=1000.0,
                   help="refractory period after a keyword, any keyword (default 1000)")
    g.add_argument("--minimum-count", type=int, default=3, help="(default 3)")


def smoothing_from_args(args: argparse.Namespace) -> dict:
    """``RecognizeCommands`` keyword arguments from the options of ``add_smoothing_args``."""
    threshold = DEFAULT_THRESHOLD if args.detection_threshold is None else args.detection_threshold
    return dict(average_window_ms=args.average_window_ms, threshold=threshold,
                suppression_ms=args.suppression_ms, minimum_count=args.minimum_count)
