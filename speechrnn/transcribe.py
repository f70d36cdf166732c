"""Entry point: ``python -m speechrnn.transcribe MODEL INPUT... [--top-k K] [--format table|json|csv]``.

MODEL is a ``.ckpt`` written by ``speechrnn.train`` (run by PyTorch), or a ``model.onnx``
(run by onnxruntime) or ``model.pt`` (TorchScript) written by ``speechrnn.export``; it
carries everything else.
Inputs are any mix of files, folders (searched recursively) and glob patterns, in any
format, rate and channel count soundfile reads; audio is resampled and downmixed
exactly as in training. Clips are read by a few threads and classified in batches.

A clip of at most 1 s (the training length) is classified whole, zero-padded to 1 s.
A longer recording is never cropped: it is scanned for keywords (``speechrnn.inference.detect``)
and reported with their start and end times: one detection per spoken keyword;
``_unknown_`` only with ``--show-unknown``, marked as not a keyword. The detection
threshold is ``--detection-threshold``, else the one calibrated for the model on noise
(``<model>.threshold.json``, written by ``speechrnn.streamtest --calibrate``; its budget,
or ``--max-fa-per-hour``'s), else 0.5. ``-`` reads raw 16-bit mono PCM at the
model's rate, or a 16-bit wav, from standard input and prints each keyword as it is heard; ``--stream``
does the same for files, fed to the detector chunk by chunk.

Each unreadable input gets one line on stderr and every good file is still reported;
the exit status is 0 when every input was classified, 1 otherwise (2: unusable model).
Ctrl-C ends a stream as live use does: the keywords heard stay printed, the summary
line says it was stopped, and the exit status is 130. A stream ends with its real-time
factor on stderr: seconds of processing (features, model, detection; not the wait for
input) over seconds of audio read.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import signal
import sys
import time
from collections import Counter

import torch

from speechrnn.core.audio import AudioError
from speechrnn.core.cli import version_line
from speechrnn.core.errors import friendly
from speechrnn.core.machine import keep_freed_memory
from speechrnn.inference.backends import load_backend
from speechrnn.inference.detect import (RecognizeCommands, add_smoothing_args, detect_events, is_keyword, read_calibration,
                                        smoothing_from_args)
from speechrnn.inference.transcription import STDIN, StreamMeter, expand_inputs, stream_chunks, transcribe

EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, the status of a command stopped by Ctrl-C


def stream(backend, sources: list[str], fmt: str, chunk_ms: float, smoothing: dict,
           meter: StreamMeter) -> tuple[int, list[str], bool]:
    """Print each keyword of each source as it is found; returns (events, error lines, stopped by Ctrl-C).

    ``meter`` times the work and counts the audio, for the real-time factor."""
    count, errors = 0, []
    chunk = max(1, round(chunk_ms * backend.rate / 1000))
    if fmt != "json":
        print("path,label,score,start,end" if fmt == "csv" else f"{'path':<30} {'label':<10} {'score':>6}  time")
    try:
        for source in sources:
            recognizer = RecognizeCommands(backend.labels, **smoothing)
            try:
                audio = meter.audio(stream_chunks(source, backend.rate, chunk))
                for e in meter.results(detect_events(backend.spotter(), audio, recognizer)):
                    count += 1
                    print(render_event(source, e, fmt), flush=True)
            except AudioError as err:
                errors.append(str(err))
    except KeyboardInterrupt:  # how a live stream (a microphone on stdin) is ended: what was heard stays reported
        return count, errors, True
    return count, errors, False


def shown(label: str) -> str:
    """A detection's label as the table prints it: ``_unknown_ (not a keyword)`` (``--show-unknown``)."""
    return label if is_keyword(label) else f"{label} (not a keyword)"


def render_event(path: str, e: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(dict(path=path, **e))
    if fmt == "csv":
        return f"{path},{e['label']},{e['score']},{e['start']},{e['end']}"
    return f"{path:<30} {e['label']:<10} {e['score']:6.3f}  {e['start']:.2f}-{e['end']:.2f}s" + \
        " (not a keyword)" * (not is_keyword(e["label"]))


def render(results: list[dict], fmt: str) -> str:
    """All records as a table, JSON lines or CSV."""
    if fmt == "json":
        return "\n".join(json.dumps(r) for r in results)
    events = [" ".join(f"{shown(d['label'])}@{d['start']:.2f}-{d['end']:.2f}s" for d in r.get("detections", []))
              for r in results]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label", "score", "topk", "detections"])
        for r, ev in zip(results, events):
            topk = " ".join(f"{t['label']}:{t['score']}" for t in r["topk"])
            writer.writerow([r["path"], r["label"], r["score"], topk, ev])
        return buf.getvalue().rstrip("\n")
    width = max([len(r["path"]) for r in results] + [4])
    lines = [f"{'path':<{width}}  {'label':<10} {'score':>6}  top-k / detections"]
    for r, ev in zip(results, events):
        alt = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["topk"][1:])
        lines.append(f"{r['path']:<{width}}  {r['label']:<10} {r['score']:6.3f}  {ev if 'detections' in r else alt}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m speechrnn.transcribe", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("model", help="a .ckpt written by python -m speechrnn.train, or a model.onnx or model.pt "
                                 "from speechrnn.export")
    p.add_argument("inputs", nargs="+", help="audio files, folders (recursive), glob patterns, or - for PCM on stdin")
    p.add_argument("--top-k", type=int, default=3, help="labels listed per clip (default 3)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="below this best score a clip is _unknown_ (default 0: always the best label)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--batch-size", type=int, default=256, help="clips per forward pass (default 256)")
    p.add_argument("--workers", type=int, default=4, help="threads reading files (default 4)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the per-step ops are small, and on a busy CPU "
                        "extra threads mostly spin, up to 20x slower when streaming)")
    p.add_argument("--stream", action="store_true", help="print keywords as they are found, reading in chunks")
    p.add_argument("--chunk-ms", type=float, default=100.0, help="chunk read per step when streaming (default 100)")
    add_smoothing_args(p)
    p.add_argument("--max-fa-per-hour", type=float,
                   help="the threshold calibrated for this budget of false accepts per hour on noise "
                        "(from <model>.threshold.json; see python -m speechrnn.streamtest --calibrate)")
    p.add_argument("--show-unknown", action="store_true",
                   help="also show _unknown_ detections in long recordings, marked as not keywords")
    args = p.parse_args(argv)
    if args.max_fa_per_hour is not None and args.detection_threshold is not None:
        p.error("give --detection-threshold or --max-fa-per-hour, not both")
    if min(args.top_k, args.batch_size, args.workers, args.threads) < 1 or args.chunk_ms <= 0:
        p.error("--top-k, --batch-size, --workers, --threads and --chunk-ms must be positive")
    return args


@friendly
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    keep_freed_memory()
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    backend = load_backend(args.model, args.batch_size)
    smoothing = smoothing_from_args(args) | dict(report_unknown=args.show_unknown)
    if args.detection_threshold is None:
        threshold, note = read_calibration(args.model, args.max_fa_per_hour)
        smoothing["threshold"] = smoothing["threshold"] if threshold is None else threshold
        if note:
            print(note, file=sys.stderr)
    try:
        RecognizeCommands(backend.labels, **smoothing)  # bad settings fail before any audio is read
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    files, errors = expand_inputs([i for i in args.inputs if i != STDIN])
    stopped, meter = False, StreamMeter(backend.rate)
    if args.stream or STDIN in args.inputs:
        sources = [STDIN] * (STDIN in args.inputs) + [str(f) for f in files]
        count, failed, stopped = stream(backend, sources, args.format, args.chunk_ms, smoothing, meter)
        done = f"{count} keywords found in {len(sources) - len(failed)} streams" + " (stopped by Ctrl-C)" * stopped
    else:
        results, failed = transcribe(backend, files, args.top_k, args.threshold, args.batch_size, smoothing,
                                     args.workers)
        if results:
            print(render(results, args.format))
        counts = Counter(r["label"] for r in results if "detections" not in r).most_common()
        done = f"{len(results)} classified" + (f" ({', '.join(f'{k} {n}' for k, n in counts)})" if counts else "")
    errors += failed
    for line in errors:
        print(f"error: {' '.join(line.split())}", file=sys.stderr)
    if meter.samples:
        print(meter.report(args.threads), file=sys.stderr)
    seconds = time.perf_counter() - start
    print(f"{done}, {len(errors)} failed in {seconds:.1f} s ({backend.name})", file=sys.stderr)
    if stopped:
        return EXIT_INTERRUPTED
    return 1 if errors or not (files or STDIN in args.inputs) else 0


if __name__ == "__main__":
    sys.exit(main())
