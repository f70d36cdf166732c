"""Entry point: streaming accuracy on a long recording, like TensorFlow's
``generate_streaming_test_wav`` + ``test_streaming_accuracy``.

    python -m speechrnn.streamtest --model CKPT --data data/synthetic --split testing --minutes 5 --seed 0

1. ``build_recording`` lays clips of held-out speakers (the ``--split`` of the dataset,
   as ``speechrnn.data.layout`` splits it) over background noise: one word every
   1 s + ``word_gap_ms`` on average, at a random time, a keyword or (``unknown_percentage``
   of the time) another word labelled ``_unknown_``; the noise is 1.5 s segments of
   ``_background_noise_`` at a random volume up to ``background_volume``, cross-faded.
   It writes ``stream.wav`` (16-bit) and ``labels.csv`` (``label,time``: the clip's
   start in seconds). ``--wav`` / ``--labels`` evaluate an existing pair instead.
2. The recording is fed in 100 ms chunks to the streaming detector (``speechrnn.inference.detect``);
   each new command except ``_silence_`` is a detection at the start of its window.
3. ``score`` matches detections to the label track within ``tolerance_ms``.

Rates are percentages of the ground-truth words, as in the reference: matched (some
detection near the word), correct (with its label), wrong (another label) and false
alarms (a detection near no unmatched word; may exceed 100 %). One difference from the
reference: a second detection of an already matched word is a false alarm (the reference
counts it as wrong), so correct + wrong = matched.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speechrnn.core.cli import version_line
from speechrnn.core.audio import as_float, load_audio, load_pcm16
from speechrnn.data.layout import DatasetError, load_noise, scan, split_clips
from speechrnn.inference.detect import RecognizeCommands, add_smoothing_args, detect_events, smoothing_from_args
from speechrnn.core.errors import friendly
from speechrnn.data.labels import SILENCE, UNKNOWN
from speechrnn.inference.backends import load_backend


def _mix(track: np.ndarray, offset: int, clip: np.ndarray, volume: float, ramp: int) -> None:
    """Add ``clip`` into ``track`` at ``offset`` (in place), faded in and out over ``ramp`` samples."""
    clip = clip[: max(0, len(track) - offset)]
    n = np.arange(len(clip))
    envelope = np.minimum(1.0, np.minimum(n / ramp, (len(clip) - n) / ramp))  # (n,)
    track[offset: offset + len(clip)] += clip * envelope * volume


def build_recording(root: str | Path, labels: list[str], seconds: float, rng: np.random.Generator,
                    split: str = "testing", word_gap_ms: float = 2000.0, unknown_percentage: float = 20.0,
                    background_volume: float = 0.1, rate: int = 16000) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """A long recording ``(N,)`` float32 of words over noise, and its ``[(label, start_s)]`` track."""
    folders = split_clips(root, scan(root))[split]
    keywords = [w for w in labels if w in folders and w not in (SILENCE, UNKNOWN)]
    others = [w for w in folders if (w not in labels or w == UNKNOWN) and w != SILENCE] if UNKNOWN in labels else []
    if not keywords:
        raise DatasetError(f"{root}: its {split} split has no clips of the model's keywords {labels}")
    track = np.zeros(int(seconds * rate), np.float32)
    noises = [n.numpy() for n in load_noise(Path(root), rate) if len(n) > int(1.5 * rate)]
    for offset in range(0, len(track), rate) if noises else ():  # 1.5 s segments every 1 s
        noise = noises[rng.integers(len(noises))]
        start = rng.integers(len(noise) - int(1.5 * rate))
        _mix(track, offset, noise[start: start + int(1.5 * rate)], rng.uniform(0, background_volume), rate // 4)
    truth, stride, gap = [], rate + int(word_gap_ms * rate / 1000), int(word_gap_ms * rate / 1000)
    for i in range(len(track) // stride):
        offset = i * stride + int(rng.integers(max(1, gap)))
        unknown = bool(others) and rng.uniform(0, 100) < unknown_percentage
        word = others[rng.integers(len(others))] if unknown else keywords[rng.integers(len(keywords))]
        clip = load_audio(folders[word][rng.integers(len(folders[word]))], rate).numpy()[:rate]
        _mix(track, offset, clip, 1.0, 500)
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


def detect_recording(backend, wave: np.ndarray, smoothing: dict, chunk_ms: float = 100.0) -> list[dict]:
    """Stream ``wave`` through the backend's spotter in chunks; the commands found."""
    chunk = round(chunk_ms * backend.rate / 1000)
    recognizer = RecognizeCommands(backend.labels, **smoothing)
    return list(detect_events(backend.spotter(), torch.from_numpy(wave).split(chunk), recognizer))


def read_labels(path: Path) -> list[tuple[str, float]]:
    with open(path, newline="") as f:
        return [(row["label"], float(row["time"])) for row in csv.DictReader(f)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m speechrnn.streamtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("--model", required=True, help="a .ckpt from speechrnn.train or a model.onnx from speechrnn.export")
    p.add_argument("--data", default="data/synthetic", help="Speech Commands-layout dataset (default %(default)s)")
    p.add_argument("--split", default="testing", choices=("training", "validation", "testing"))
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for stream.wav, labels.csv, report.json (default: next to the model)")
    p.add_argument("--wav", help="evaluate this recording (with --labels) instead of building one")
    p.add_argument("--labels", help="its label track, CSV with columns label,time (seconds)")
    p.add_argument("--word-gap-ms", type=float, default=2000.0)
    p.add_argument("--unknown-percentage", type=float, default=20.0)
    p.add_argument("--background-volume", type=float, default=0.1)
    p.add_argument("--tolerance-ms", type=float, default=750.0, help="match window around a word (default 750)")
    add_smoothing_args(p)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, see speechrnn.transcribe)")
    args = p.parse_args(argv)
    if bool(args.wav) != bool(args.labels):
        p.error("--wav and --labels go together")
    return args


@friendly
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backend = load_backend(args.model)
    out = Path(args.out or Path(args.model).parent / f"streamtest_{args.split}_seed{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    if args.wav:
        truth, source = read_labels(Path(args.labels)), args.wav
    else:
        rng = np.random.default_rng(args.seed)
        wave, truth = build_recording(args.data, backend.labels, args.minutes * 60, rng, args.split,
                                      args.word_gap_ms, args.unknown_percentage, args.background_volume, backend.rate)
        sf.write(out / "stream.wav", wave, backend.rate, subtype="PCM_16")
        with open(out / "labels.csv", "w", newline="") as f:
            csv.writer(f).writerows([("label", "time"), *truth])
        source = str(out / "stream.wav")  # read back as written, 16-bit: --wav on it gives the same figures
    wave = as_float(load_pcm16(source, backend.rate)).numpy()  # the int16 rounding training clips went through
    smoothing = smoothing_from_args(args)
    start = time.perf_counter()
    events = detect_recording(backend, wave, smoothing)
    seconds = time.perf_counter() - start
    report = score(truth, [(e["label"], e["start"]) for e in events], args.tolerance_ms / 1000)
    report |= dict(model=str(args.model), recording=source, seconds=round(len(wave) / backend.rate, 1),
                   tolerance_ms=args.tolerance_ms, smoothing=smoothing, backend=backend.name,
                   processing_seconds=round(seconds, 2), detections_list=events)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"{report['words']} words in {report['seconds'] / 60:.1f} min ({source}): "
          f"{report['matched_pct']:.1f}% matched, {report['correct_pct']:.1f}% correct, "
          f"{report['wrong_pct']:.1f}% wrong, {report['false_alarms_pct']:.1f}% false alarms "
          f"(tolerance {args.tolerance_ms:g} ms; streamed in {seconds:.1f} s)")
    print(f"report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
