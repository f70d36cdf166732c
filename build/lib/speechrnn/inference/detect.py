"""Keyword detection in recordings longer than one clip: which keywords occur, and when.

A spotter (``speechrnn.inference.streaming.StreamingSpotter``, or ``WindowedSpotter`` around an
exported model) gives the posterior of every 1 s window, one every ``hop * stack``
samples. ``RecognizeCommands`` smooths them as TensorFlow's reference does
(``tensorflow/examples/speech_commands/recognize_commands.py``): it averages the
posteriors of the last ``average_window_ms``, and reports the top label as a new
command when its average is above ``threshold``, it differs from the previous command,
and more than ``suppression_ms`` have passed since that one (at once if that one was
``_silence_``). Fewer than ``minimum_count`` posteriors, or less than a quarter of
the averaging window, give no answer. A command's time is the start of the window
whose posterior fired it; its end is that window's end.
"""

from __future__ import annotations

import argparse
from collections import deque
from typing import Iterable

import torch
from torch import Tensor

from speechrnn.data.labels import SILENCE


class RecognizeCommands:
    """Smooths a stream of window posteriors into discrete commands.

    Args:
        labels (list[str]): class names, in posterior order.
        average_window_ms (float, optional): posteriors averaged, by age. (Default: ``500``)
        threshold (float, optional): smoothed score a command must exceed; the reference
            uses 0.7, 0.5 suits our softer posteriors (chosen on the validation split with
            ``speechrnn.streamtest``). (Default: ``0.5``)
        suppression_ms (float, optional): quiet time after a command. (Default: ``500``)
        minimum_count (int, optional): posteriors needed in the window for any answer. (Default: ``3``)

    Shapes:
        ``process(time_ms, probs (C,)) -> (label, score) or None`` when no new command.
    """

    def __init__(self, labels: list[str], average_window_ms: float = 500.0, threshold: float = 0.5,
                 suppression_ms: float = 500.0, minimum_count: int = 3):
        if average_window_ms <= 0 or suppression_ms < 0:
            raise ValueError(f"need average_window_ms > 0 and suppression_ms >= 0, got "
                             f"{average_window_ms} and {suppression_ms}")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")
        if minimum_count < 1:
            raise ValueError(f"minimum_count must be >= 1, got {minimum_count}")
        self.labels = list(labels)
        self.average_window_ms, self.threshold = average_window_ms, threshold
        self.suppression_ms, self.minimum_count = suppression_ms, minimum_count
        self.results: deque[tuple[float, Tensor]] = deque()  # (time_ms, probs (C,)), oldest first
        self.previous_label, self.previous_time = SILENCE, float("-inf")

    def process(self, time_ms: float, probs: Tensor) -> tuple[str, float] | None:
        """Add the posterior of the window starting at ``time_ms``; a new command or None."""
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
        average = torch.stack([p for _, p in self.results]).mean(0)  # (C,)
        score, top = average.max(0)
        label, score = self.labels[int(top)], float(score)
        since = float("inf") if self.previous_label == SILENCE else time_ms - self.previous_time
        if score > self.threshold and label != self.previous_label and since > self.suppression_ms:
            self.previous_label, self.previous_time = label, time_ms
            return label, score
        return None


def detect_events(spotter, chunks: Iterable[Tensor], recognizer: RecognizeCommands) -> Iterable[dict]:
    """Commands in a stream, as they are found: ``{"label", "start", "end", "score"}`` (seconds).

    ``spotter`` has ``push(samples) -> (starts, probs)``, ``flush()``, ``rate`` and
    ``clip_samples``; the stream ends (and is padded, see ``StreamingSpotter.flush``)
    when ``chunks`` does. ``_silence_`` commands only reset the recogniser; they are not reported.
    """
    seen, clip_seconds = 0, spotter.clip_samples / spotter.rate
    for chunk in chunks:
        seen += len(chunk)
        yield from _events(spotter.push(chunk), spotter.rate, recognizer, clip_seconds)
    yield from _events(spotter.flush(), spotter.rate, recognizer, clip_seconds, end=seen / spotter.rate)


def _events(posteriors: tuple[Tensor, Tensor], rate: int, recognizer: RecognizeCommands, clip_seconds: float,
            end: float = float("inf")) -> Iterable[dict]:
    """Commands fired by ``posteriors``; a window's end is cut at ``end``, the end of the recording once known."""
    starts, probs = posteriors  # (P,), (P, C)
    for start, p in zip(starts.tolist(), probs):
        found = recognizer.process(1000.0 * start / rate, p)
        if found and found[0] != SILENCE:
            begin = start / rate
            yield {"label": found[0], "start": round(begin, 3), "end": round(min(begin + clip_seconds, end), 3),
                   "score": round(found[1], 4)}


def summarize(events: list[dict], top_k: int) -> dict:
    """One record for a recording: its commands in order as ``label``, the best as ``score``."""
    best: dict[str, float] = {}
    for e in events:
        best[e["label"]] = max(best.get(e["label"], 0.0), e["score"])
    topk = sorted(({"label": k, "score": v} for k, v in best.items()), key=lambda t: -t["score"])[:top_k]
    return {"label": " ".join(e["label"] for e in events) or SILENCE,
            "score": topk[0]["score"] if topk else 0.0, "topk": topk, "detections": events}


def add_smoothing_args(parser: argparse.ArgumentParser) -> None:
    """The ``RecognizeCommands`` settings as command-line options (transcribe and streamtest share them)."""
    g = parser.add_argument_group("detection in long recordings (RecognizeCommands smoothing)")
    g.add_argument("--detection-threshold", type=float, default=0.5, help="(default 0.5)")
    g.add_argument("--average-window-ms", type=float, default=500.0, help="(default 500)")
    g.add_argument("--suppression-ms", type=float, default=500.0, help="(default 500)")
    g.add_argument("--minimum-count", type=int, default=3, help="(default 3)")


def smoothing_from_args(args: argparse.Namespace) -> dict:
    """``RecognizeCommands`` keyword arguments from the options of ``add_smoothing_args``."""
    return dict(average_window_ms=args.average_window_ms, threshold=args.detection_threshold,
                suppression_ms=args.suppression_ms, minimum_count=args.minimum_count)
