"""Transcription of files and streams: inputs expanded, clips classified in batches, long
recordings and standard input scanned for keywords; a stream's real-time factor.

Clips of at most the training length are classified whole; longer recordings go to the
detector (``speechrnn.inference.detect``); ``-`` is standard input, raw 16-bit PCM at the
model's rate or a 16-bit wav.
"""

from __future__ import annotations

import glob
import itertools
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from time import perf_counter
from typing import Iterable, Iterator

import numpy as np
import torch

from speechrnn.core.audio import AudioError, as_float, find_audio, fix_length, is_wav, load_pcm16, wav_stream_pcm16
from speechrnn.data.labels import UNKNOWN
from speechrnn.inference.detect import RecognizeCommands, detect_events, summarize

STDIN = "-"


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files named by paths, folders and globs, in order, without repeats; plus one error line per bad input."""
    files, errors, seen = [], [], set()
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))] if glob.has_magic(item) else [Path(item)]
        if not matches:
            errors.append(f"{item}: no file matches this pattern")
        for path in matches:
            if not path.exists():
                errors.append(f"{path}: no such file or folder")
                continue
            found = find_audio(path)
            if path.is_dir() and not found:
                errors.append(f"{path}: folder has no audio files")
            for f in found:
                if f not in seen:
                    seen.add(f)
                    files.append(f)
    return files, errors


def _read(path: Path, rate: int) -> torch.Tensor | AudioError:
    try:
        return as_float(load_pcm16(path, rate))  # the int16 rounding training clips went through
    except AudioError as err:
        return err


def transcribe(backend, files: list[Path], top_k: int = 3, threshold: float = 0.0, batch_size: int = 256,
               smoothing: dict | None = None, workers: int = 4) -> tuple[list[dict], list[str]]:
    """A record per readable file (input order) and an error line per unreadable one.

    Clips of at most ``backend.clip_samples`` are classified in batches; a best score
    under ``threshold`` answers ``_unknown_``. Longer recordings go to ``detect_events``
    with the ``RecognizeCommands`` arguments in ``smoothing``.
    """
    results: dict[Path, dict] = {}
    errors: list[str] = []
    with ThreadPoolExecutor(workers) as pool:
        for i in range(0, len(files), batch_size):
            group = files[i: i + batch_size]
            clips, paths = [], []
            for path, wave in zip(group, pool.map(lambda p: _read(p, backend.rate), group)):
                if isinstance(wave, AudioError):
                    errors.append(str(wave))
                elif len(wave) <= backend.clip_samples:
                    clips.append(fix_length(wave, backend.clip_samples))
                    paths.append(path)
                else:
                    events = list(detect_events(backend.spotter(), wave.split(backend.rate),
                                                RecognizeCommands(backend.labels, **(smoothing or {}))))
                    results[path] = dict(summarize(events, top_k), duration=round(len(wave) / backend.rate, 3))
            if clips:
                for path, probs in zip(paths, backend.predict(torch.stack(clips))):  # (C,)
                    results[path] = classify(probs, backend.labels, top_k, threshold)
    return [dict(path=str(p), **results[p]) for p in files if p in results], errors


def classify(probs: torch.Tensor, labels: list[str], top_k: int, threshold: float) -> dict:
    """The record of one clip from its probabilities ``(C,)``."""
    scores, idx = probs.topk(min(top_k, len(labels)))
    topk = [{"label": labels[j], "score": round(s, 4)} for s, j in zip(scores.tolist(), idx.tolist())]
    best = scores[0].item()
    return {"label": topk[0]["label"] if best >= threshold else UNKNOWN, "score": round(best, 4), "topk": topk}


def stream_chunks(source: str, rate: int, chunk: int) -> Iterator[torch.Tensor]:
    """Chunks ``(<= chunk,)`` of int16 PCM on stdin as it arrives, or of a decoded file.

    A file is decoded whole by ``load_pcm16`` (resampling needs the whole signal, and so
    the checks are those of every other input); only the detector sees it in chunks.
    Stdin is raw 16-bit PCM at ``rate``, or a 16-bit wav (``cat clip.wav |``), whose header
    is not audio and whose rate and channels are converted as a file's (``wav_stream_pcm16``).
    """
    if source != STDIN:
        yield from load_pcm16(source, rate).split(chunk)
        return
    stdin = sys.stdin.buffer
    head = stdin.read(12)  # enough to tell a wav header from raw PCM
    if is_wav(head):
        yield from wav_stream_pcm16(stdin, rate, chunk, STDIN)
        return
    pending = b""
    for data in itertools.chain([head], iter(lambda: stdin.read(2 * chunk), b"")):
        data, pending = pending + data, b""
        if len(data) % 2:  # a sample split between two reads
            data, pending = data[:-1], data[-1:]
        if data:
            yield torch.from_numpy(np.frombuffer(data, dtype="<i2").copy())  # (n,) int16


class Stopwatch:
    """The seconds spent producing the items of the iterables it times, summed.

    Only the time inside the iterable counts, not what the consumer does with each item.
    """

    def __init__(self):
        self.seconds = 0.0

    def timed(self, items: Iterable) -> Iterator:
        """``items``, one by one, each one's production timed (also one cut short by Ctrl-C or an error)."""
        items = iter(items)
        while True:
            start = perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.seconds += perf_counter() - start
            yield item


class StreamMeter:
    """The real-time factor of streams: seconds spent processing their audio over seconds of audio.

    Processing is features, model and detection, not waiting for input: ``results`` times
    the detections as they are produced, ``audio`` the chunks they are produced from (a
    microphone's pace on stdin, a file's decoding), and the second is taken from the first.
    The audio's length is that of the samples read, at ``rate``.

    Example:
        >>> meter = StreamMeter(16000)
        >>> for event in meter.results(detect_events(spotter, meter.audio(chunks), recognizer)):
        ...     print(event)
        >>> print(meter.report(threads=1))
    """

    def __init__(self, rate: int):
        self.rate, self.samples = rate, 0
        self.busy, self.waiting = Stopwatch(), Stopwatch()

    def audio(self, chunks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The chunks ``(n,)``, counted, their arrival timed as waiting."""
        for chunk in self.waiting.timed(chunks):
            self.samples += len(chunk)
            yield chunk

    def results(self, items: Iterable) -> Iterator:
        """The results of the audio, their production timed (waiting for the audio included, then taken out)."""
        return self.busy.timed(items)

    @property
    def seconds(self) -> float:
        """Seconds of audio read."""
        return self.samples / self.rate

    @property
    def processing(self) -> float:
        """Seconds spent processing it."""
        return self.busy.seconds - self.waiting.seconds

    @property
    def factor(self) -> float:
        """Processing seconds per second of audio: under 1, the stream is processed faster than it plays."""
        return self.processing / self.seconds

    def report(self, threads: int) -> str:
        """One line: audio and processing seconds, and the real-time factor (once some audio was read)."""
        return speed_line(self.seconds, self.processing, threads)


def speed_line(seconds: float, processing: float, threads: int) -> str:
    """``streamed 18.0 s of audio in 0.41 s of processing: real-time factor 0.023 on 1 thread(s)``,
    as ``transcribe`` ends a stream and ``streamtest`` reports each model's pass."""
    return (f"streamed {seconds:.1f} s of audio in {processing:.2f} s of processing: "
            f"real-time factor {processing / seconds:.3f} on {threads} thread(s)")
