"""Entry point: ``python -m speechrnn.transcribe CKPT INPUT... [--top-k K] [--format table|json|csv]``.

Inputs are any mix of files, folders (searched recursively) and glob patterns, in
any format, rate and channel count soundfile reads; audio is resampled and
downmixed exactly as in training. A clip of up to ``--max-clip`` seconds is
classified as a whole (padded to 1 s); a longer recording is scanned for keywords
(``speechrnn.detect``) and reported with start and end times, never cropped.
Unreadable inputs get one line each on stderr and exit status 1; every good file
is still reported.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import sys
import time
from pathlib import Path

import torch

from speechrnn.audio import AudioError, find_audio, fix_length, load_audio
from speechrnn.checkpoint import load_model
from speechrnn.detect import detect
from speechrnn.errors import friendly
from speechrnn.labels import UNKNOWN
from speechrnn.predict import predict_proba


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


def classify(model, waves: list[torch.Tensor], top_k: int, threshold: float, batch_size: int) -> list[dict]:
    """Top-k labels of 1 s clips; a best score under ``threshold`` answers ``_unknown_``."""
    if not waves:
        return []
    probs = predict_proba(model, torch.stack(waves), batch_size)  # (N, C)
    scores, idx = probs.topk(min(top_k, probs.shape[1]), dim=-1)
    results = []
    for s, i in zip(scores.tolist(), idx.tolist()):
        topk = [{"label": model.labels[j], "score": round(v, 4)} for v, j in zip(s, i)]
        label = topk[0]["label"] if s[0] >= threshold else UNKNOWN
        results.append({"label": label, "score": round(s[0], 4), "topk": topk})
    return results


def transcribe(ckpt: str, inputs: list[str], top_k: int = 3, threshold: float = 0.0, batch_size: int = 256,
               max_clip: float = 1.25) -> tuple[list[dict], list[str]]:
    """Results for every readable input and error lines for the rest."""
    model = load_model(ckpt)
    rate = model.frontend.sample_rate
    files, errors = expand_inputs(inputs)
    short, short_paths, results = [], [], {}
    for path in files:
        try:
            wave = load_audio(path, rate)
        except AudioError as err:
            errors.append(str(err))
            continue
        if len(wave) <= max_clip * rate:
            short.append(fix_length(wave, rate))
            short_paths.append(path)
        else:
            results[path] = detect(model, wave, threshold=max(threshold, 0.5))
    for path, res in zip(short_paths, classify(model, short, top_k, threshold, batch_size)):
        results[path] = res
    return [dict(path=str(p), **results[p]) for p in files if p in results], errors


def render(results: list[dict], fmt: str) -> str:
    if fmt == "json":
        return "\n".join(json.dumps(r) for r in results)
    if fmt == "csv":
        import io
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "label", "score", "topk", "detections"])
        for r in results:
            writer.writerow([r["path"], r["label"], r["score"], " ".join(f"{t['label']}:{t['score']}" for t in r["topk"]),
                             " ".join(f"{d['label']}@{d['start']:.2f}-{d['end']:.2f}" for d in r.get("detections", []))])
        return buf.getvalue().rstrip("\n")
    width = max([len(r["path"]) for r in results] + [4])
    lines = [f"{'path':<{width}}  {'label':<10} {'score':>6}  top-k"]
    for r in results:
        alt = ", ".join(f"{t['label']} {t['score']:.2f}" for t in r["topk"][1:])
        events = " ".join(f"{d['label']}@{d['start']:.2f}-{d['end']:.2f}s" for d in r.get("detections", []))
        lines.append(f"{r['path']:<{width}}  {r['label']:<10} {r['score']:6.3f}  {events or alt}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m speechrnn.transcribe", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a .ckpt written by python -m speechrnn.train")
    p.add_argument("inputs", nargs="+", help="audio files, folders (recursive) or glob patterns")
    p.add_argument("--top-k", type=int, default=3, help="labels listed per clip (default 3)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="below this best score the answer is _unknown_ (default 0: always the best label)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--max-clip", type=float, default=1.25,
                   help="longer inputs (seconds) are scanned for keywords instead of classified whole")
    return p.parse_args(argv)


@friendly
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    results, errors = transcribe(args.checkpoint, args.inputs, args.top_k, args.threshold, args.batch_size,
                                 args.max_clip)
    if results:
        print(render(results, args.format))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    print(f"{len(results)} classified, {len(errors)} failed in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    return 1 if errors or not results else 0


if __name__ == "__main__":
    sys.exit(main())
