"""Benchmark: ``python -m speechrnn.bench [--quick] [--out runs/bench.json]``.

One run measures, side by side and as ratios, so that every figure shares the
machine's load of the moment:

- **RNN training step:** ``ElmanRNN`` against ``torch.nn.RNN`` (cuDNN on a GPU),
  forward+backward at B=256, for the default config's T (stacked frames) and the
  unstacked T=98, H=128 and H=256;
- **against the machine:** the RNN's GEMM FLOP/s as a fraction of the peak GEMM
  rate (a large square matmul) and of the rate of its own GEMM shapes, all
  measured in the same run;
- **inference:** one-clip latency of the whole model, and the streaming step
  (``ElmanRNN.step`` at H=128, B=1, its lean inference path) against ``nn.RNNCell``,
  on one thread as the product streams;
- **frontend:** MFCC clips/s;
- **data and epochs:** a short Lightning fit on the embedded corpus (or random
  clips when ``<data-dir>/synthetic`` is absent) timing each batch's wait for its data
  (the loading and augmentation, or with a loader worker what is left of them) against its
  training step, medians of both, and whole epochs end to end, the basic RNN
  (through CUDA graphs on a GPU, ``speechrnn.training.graphs``) against the GRU (cuDNN there).

Contenders run interleaved, round by round, and each keeps its best round
(best-of-N): on a shared machine the minimum is the least disturbed estimate,
and interleaving gives both sides the same disturbances. The table prints each
measure, what it is compared with, the ratio, the target and pass/miss; the JSON
holds the same rows and the raw timings. The header names the machine (CPU model and
count, torch's BLAS, its CPU kernels' instruction set, oneDNN, the peak GEMM rate), since
the ratios differ between machines (an Intel and an AMD 2-core machine, README "Speed").
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import soundfile as sf
import torch
from hydra.utils import instantiate
from torch import Tensor, nn

from speechrnn.core.cli import version_line
from speechrnn.core.atomic import atomic_write_json
from speechrnn.core.machine import cpuinfo_field, keep_freed_memory, torch_threads, usable_cpus
from speechrnn.core.timing import race
from speechrnn.data.layout import task_labels
from speechrnn.model.features import MFCC
from speechrnn.data.labels import BACKGROUND_NOISE_DIR, COMMANDS
from speechrnn.model.rnn import ElmanRNN
from speechrnn.training.config import compose
from speechrnn.training.fit import fitting
from speechrnn.training.graphs import GraphedEncoder

CLIP_SAMPLES = 16000


def rnn_gemms(B: int, T: int, I: int, H: int) -> dict[str, tuple[int, int, int, int]]:
    """The GEMMs of one Elman layer's forward+backward (no input gradient): name -> (m, k, n, calls)."""
    return {
        "input projection (TB,I)x(I,H)": (T * B, I, H, 1),  # forward, hoisted out of the loop
        "recurrence (B,H)x(H,H)": (B, H, H, 2 * T - 1),  # T forward steps, T-1 backward steps
        "dW_hh (H,TB)x(TB,H)": (H, T * B, H, 1),
        "dW_xh (H,TB)x(TB,I)": (H, T * B, I, 1),
    }


def gemm_flops(shapes: dict[str, tuple[int, int, int, int]]) -> int:
    """2mkn per call; elementwise work (tanh, its derivative, the bias) is not counted."""
    return sum(2 * m * k * n * calls for m, k, n, calls in shapes.values())


def _matmul(m: int, k: int, n: int, device: torch.device) -> Callable[[], Tensor]:
    a, b, out = torch.randn(m, k, device=device), torch.randn(k, n, device=device), torch.empty(m, n, device=device)
    return lambda: torch.mm(a, b, out=out)


def _train_step(rnn: nn.Module, x: Tensor, grad: Tensor, encode: Callable | None = None) -> Callable[[], None]:
    """Forward+backward of ``rnn`` (through ``encode`` when given) on ``x``, with ``grad`` as dL/dhs."""
    def step():
        for p in rnn.parameters():
            p.grad = None
        hs, _ = (encode or rnn)(x)  # (B, T, H)
        hs.backward(grad)
    return step


def bench_rnn(configs: list[tuple[int, int, int]], B: int, peak_n: int, seconds: float, device: torch.device,
              sync: Callable[[], None]) -> list[dict]:
    """Per (T, I, H): forward+backward of ElmanRNN vs torch.nn.RNN, raced with the GEMMs it is held to."""
    baseline = "cuDNN nn.RNN" if device.type == "cuda" else "torch.nn.RNN"
    peak = _matmul(peak_n, peak_n, peak_n, device)
    results = []
    for T, I, H in configs:
        x, grad = torch.randn(B, T, I, device=device), torch.randn(B, T, H, device=device)
        ours, ref = ElmanRNN(I, H).to(device), nn.RNN(I, H, batch_first=True).to(device)
        rnns = {"ElmanRNN": _train_step(ours, x, grad), baseline: _train_step(ref, x, grad)}
        if device.type == "cuda":
            rnns.update(_graphed(ours, x, grad))
        gemms = rnn_gemms(B, T, I, H)
        s = race({**rnns, **{name: _matmul(m, k, n, device) for name, (m, k, n, _) in gemms.items()},
                  "peak GEMM": peak}, sync, seconds)
        flops, t = gemm_flops(gemms), s["ElmanRNN"]
        peak_rate = 2 * peak_n ** 3 / s["peak GEMM"]
        bound = sum(calls * s[name] for name, (_, _, _, calls) in gemms.items())  # the GEMMs alone, back to back
        results.append(dict(
            B=B, T=T, I=I, H=H, baseline=baseline, seconds={k: s[k] for k in rnns}, speedup=s[baseline] / t,
            gemm_flops=flops, flops_per_s=flops / t, peak_gemm_shape=[peak_n] * 3, peak_gemm_flops_per_s=peak_rate,
            frac_gemm_peak=flops / t / peak_rate, gemm_flops_per_s={
                name: 2 * m * k * n / s[name] for name, (m, k, n, _) in gemms.items()},
            gemm_bound_s=bound, frac_gemm_bound=bound / t))
    return results


def _graphed(rnn: ElmanRNN, x: Tensor, grad: Tensor) -> dict[str, Callable[[], None]]:
    """ElmanRNN's forward+backward replayed as CUDA graphs: training's GPU path (``GraphedEncoder``).

    Optional: if capture fails, or the graphed output differs from eager, it is left out of
    the race with a warning and the rest still runs. On an H200 it beat cuDNN 2.0-2.7x at
    T=12 but not at T=98 (README, Speed).
    """
    try:
        model = copy.deepcopy(rnn)
        graphed = GraphedEncoder(model)
        if not torch.allclose(graphed(x)[0], rnn(x)[0], atol=1e-5):
            raise RuntimeError("its output differs from eager ElmanRNN")
    except Exception as err:  # an optional contender: say why it is absent, keep the rest
        logging.getLogger(__name__).warning("CUDA-graph ElmanRNN left out: %s: %s", type(err).__name__, err)
        return {}
    return {"ElmanRNN, CUDA graph": _train_step(model, x, grad, encode=graphed)}


def bench_inference(model: nn.Module, H: int, seconds: float, device: torch.device, sync: Callable[[], None]) -> dict:
    """One-clip latency of the model (B=1, MFCC included) and one streaming step of an ElmanRNN (B=1, H)."""
    model = model.to(device).eval()
    rnn, wave = ElmanRNN(model.frontend.dim, H).to(device).eval(), torch.randn(1, CLIP_SAMPLES, device=device)
    x_t = torch.randn(1, rnn.input_size, device=device)
    cell = nn.RNNCell(rnn.input_size, rnn.hidden_size).to(device)
    state = {"step": None, "cell": torch.zeros(1, rnn.hidden_size, device=device)}

    def step():
        state["step"] = rnn.step(x_t, state["step"])[1]

    def cell_step():
        state["cell"] = cell(x_t, state["cell"])

    with torch.inference_mode():
        clip = race({"model": lambda: model(wave), "frontend": lambda: model.frontend(wave)}, sync, seconds)
        with torch_threads(1):  # as transcribe and streamtest stream (their --threads 1)
            stream = race({"ElmanRNN.step": step, "nn.RNNCell": cell_step}, sync, seconds)
    return dict(clip_latency_s=clip["model"], frontend_latency_s=clip["frontend"], stream_step_s=stream,
                input_size=rnn.input_size, hidden_size=rnn.hidden_size)


def bench_frontend(features: dict, B: int, seconds: float, device: torch.device, sync: Callable[[], None]) -> dict:
    mfcc, wave = MFCC(**features).to(device), torch.randn(B, CLIP_SAMPLES, device=device)
    with torch.no_grad():
        s = race({"mfcc": lambda: mfcc(wave)}, sync, seconds)["mfcc"]
    return dict(batch=B, seconds=s, clips_per_s=B / s)


class StepTimer(L.Callback):
    """Times each training batch's step (hook start to end) and the gap before it.

    With ``num_workers=0`` the gap is the loader (index, int16 to float, collate and the wave
    augmentation of ``AugmentingCollate``) and the transfer, plus a little loop bookkeeping, so
    data and training are timed batch by batch under the same load; with loader workers it is
    what the step still waits for.
    """

    def __init__(self, sync: Callable[[], None]):
        self.sync, self.steps, self.gaps, self.clips, self.epochs = sync, [], [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.sync()
        self._epoch_start, self._epoch_clips = time.perf_counter(), 0
        self._end = self._epoch_start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sync()
        self._start = time.perf_counter()
        self.gaps.append(self._start - self._end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.sync()
        self._end = time.perf_counter()
        self.steps.append(self._end - self._start)
        self.clips.append(len(batch[1]))
        self._epoch_clips += len(batch[1])

    def on_train_epoch_end(self, trainer, pl_module):
        self.sync()
        self.epochs.append((time.perf_counter() - self._epoch_start, self._epoch_clips))


def _random_corpus(root: Path, clips: int) -> None:
    """Noise clips in the Speech Commands layout, for a bench where the embedded corpus is absent."""
    rng = np.random.default_rng(0)
    for i in range(clips):
        path = root / COMMANDS[i % len(COMMANDS)] / f"{i:08x}_nohash_0.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), rng.uniform(-0.3, 0.3, CLIP_SAMPLES).astype(np.float32), CLIP_SAMPLES, subtype="PCM_16")
    (root / BACKGROUND_NOISE_DIR).mkdir(parents=True)
    noise = rng.uniform(-0.1, 0.1, 3 * CLIP_SAMPLES).astype(np.float32)
    sf.write(str(root / BACKGROUND_NOISE_DIR / "noise.wav"), noise, CLIP_SAMPLES, subtype="PCM_16")


def _data(cfg, data_dir: Path, tmp: Path, clips: int):
    """The configured data module on ``<data_dir>/synthetic``, or on random clips when that is absent."""
    root, cache, source = Path(cfg.data.root), Path(cfg.data.cache_dir), None
    if not root.is_dir():
        root, cache = tmp / "random", tmp / "cache"
        if not root.is_dir():  # made once, for the RNN's fit and then the GRU's
            _random_corpus(root, clips)
        source = f"random noise clips in the Speech Commands layout ({data_dir / 'synthetic'} absent)"
    # the bench measures: it never synthesises or downloads
    data = instantiate(cfg.data, root=str(root), cache_dir=str(cache), synth=None, download=False)
    data.setup("fit")
    return data, source or f"{root} ({len(data.splits['training'])} training clips)"


def bench_fit(cfg, data_dir: Path, tmp: Path, device: torch.device, sync: Callable[[], None]) -> dict:
    """A short fit of the default Lightning training: data vs step per batch, and epochs end to end."""
    data, source = _data(cfg, data_dir, tmp, clips=5 * cfg.data.batch_size)  # ~4 training batches if random
    module = instantiate(cfg.model, labels=data.labels, features=cfg.features, _recursive_=False)
    timer = StepTimer(sync)
    trainer = instantiate(cfg.trainer, callbacks=[timer])
    with fitting(cfg.data.num_workers):  # as python -m speechrnn.train
        trainer.fit(module, datamodule=data)
    # medians: with a loader worker the best gap is a batch that was ready (~0 s), not the loader's pace
    gap, step = float(np.median(timer.gaps)), float(np.median(timer.steps))
    B = max(timer.clips)
    return dict(source=source, batch_size=B, batches=len(timer.steps), num_workers=cfg.data.num_workers,
                loader_clips_per_s=B / gap, train_step_clips_per_s=B / step, data_vs_train=step / gap,
                epochs=[dict(seconds=s, clips=n) for s, n in timer.epochs],
                epoch_clips_per_s=max(n / s for s, n in timer.epochs))


def rows(res: dict) -> list[dict]:
    """The table: measure, value, what it is compared with, ratio, target and pass/miss/info."""
    out = []

    def row(measure, value, against, ratio, target=None, ok=None):
        out.append(dict(measure=measure, value=value, against=against, ratio=ratio, target=target,
                        status="info" if ok is None else ("pass" if ok else "miss")))

    gpu = res["meta"]["device"] == "cuda"
    for r in res["rnn"]:
        shape = f"B={r['B']} T={r['T']} I={r['I']} H={r['H']}"
        ms = {k: f"{v * 1e3:.2f} ms" for k, v in r["seconds"].items()}
        row(f"RNN fwd+bwd {shape}", ms["ElmanRNN"], f"{r['baseline']} {ms[r['baseline']]}", r["speedup"],
            ">= 1.0x" if gpu else ">= 1.2x", r["speedup"] >= (1.0 if gpu else 1.2))
        if "ElmanRNN, CUDA graph" in r["seconds"]:
            sp = r["seconds"][r["baseline"]] / r["seconds"]["ElmanRNN, CUDA graph"]
            row(f"  CUDA graph {shape}", ms["ElmanRNN, CUDA graph"], f"{r['baseline']} {ms[r['baseline']]}", sp,
                ">= 1.0x", sp >= 1.0)
    for r in res["rnn"]:
        shape = f"T={r['T']} H={r['H']}"
        target = r["H"] == 256
        row(f"RNN GEMM FLOP/s {shape}, of peak GEMM", f"{r['flops_per_s'] / 1e9:.1f} GFLOP/s",
            f"peak {r['peak_gemm_flops_per_s'] / 1e9:.1f} GFLOP/s", r["frac_gemm_peak"],
            ">= 50%" if target else None, r["frac_gemm_peak"] >= 0.5 if target else None)
        row(f"  of its own GEMMs {shape}", f"{r['seconds']['ElmanRNN'] * 1e3:.2f} ms",
            f"GEMMs alone {r['gemm_bound_s'] * 1e3:.2f} ms", r["frac_gemm_bound"])
    inf = res["inference"]
    st = inf["stream_step_s"]
    size = f"H={inf['hidden_size']} I={inf['input_size']} B=1, 1 thread"
    step_speedup = st["nn.RNNCell"] / st["ElmanRNN.step"]
    row(f"streaming ElmanRNN.step {size}", f"{st['ElmanRNN.step'] * 1e6:.1f} us",
        f"nn.RNNCell {st['nn.RNNCell'] * 1e6:.1f} us", step_speedup, ">= 1.5x", step_speedup >= 1.5)
    row("one-clip latency (MFCC + RNN), B=1", f"{inf['clip_latency_s'] * 1e3:.2f} ms",
        f"MFCC alone {inf['frontend_latency_s'] * 1e3:.2f} ms", inf["frontend_latency_s"] / inf["clip_latency_s"])
    fe = res["frontend"]
    row(f"MFCC frontend, B={fe['batch']}", f"{fe['clips_per_s']:.0f} clips/s", None, None)
    d = res["data"]
    row(f"data loader + augment, B={d['batch_size']}, workers={d['num_workers']}, medians",
        f"{d['loader_clips_per_s']:.0f} clips/s", f"training step {d['train_step_clips_per_s']:.0f} clips/s",
        d["data_vs_train"], ">= 3x", d["data_vs_train"] >= 3)
    g = res["data_gru"]
    engine = "CUDA graphs" if gpu else "eager"
    row(f"whole epochs (Lightning fit), basic RNN ({engine})", f"{d['epoch_clips_per_s']:.0f} clips/s",
        f"GRU {g['epoch_clips_per_s']:.0f} clips/s", d["epoch_clips_per_s"] / g["epoch_clips_per_s"])
    return out


def format_table(table: list[dict]) -> str:
    cells = [("measure", "value", "against", "ratio", "target", "status")]
    for r in table:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        cells.append((r["measure"], r["value"], r["against"] or "", ratio, r["target"] or "", r["status"]))
    widths = [max(len(c[i]) for c in cells) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def cpu_model() -> str:
    """The CPU's name: /proc/cpuinfo's ``model name`` on Linux, else what ``platform`` knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def machine() -> dict:
    """What the CPU figures depend on: CPU model and count, torch's BLAS, its kernels' instruction set, oneDNN.

    The BLAS (``mkl``, ``open`` for OpenBLAS, ...) and its version come from ``torch.__config__.show()``:
    one torch build may run other BLAS and oneDNN code paths on an AMD CPU than on an Intel one.
    """
    config = torch.__config__.show()

    def found(pattern: str) -> str | None:
        match = re.search(pattern, config)
        return match.group(1) if match else None

    blas = found(r"BLAS_INFO=([^,\s]+)") or "unknown"
    return dict(cpu=cpu_model(), cpu_count=os.cpu_count(),
                blas=" ".join(filter(None, (blas, found(r"Math Kernel Library Version ([\d.]+)")))),
                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                mkldnn=(found(r"MKL-DNN (v[\d.]+)") or "yes") if torch.backends.mkldnn.is_available() else "no")


def _cpu_sample() -> tuple[float, float, float] | None:
    """(wall s, CPU s busy on the whole machine, CPU s of this process and its ended children), or None
    without /proc/stat. The children are the fits' loader workers (``data.num_workers``): theirs is the
    bench's own load, not another process's."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except OSError:
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    return time.perf_counter(), busy, sum(os.times()[:4])  # user, system, children user, children system


def run(quick: bool = False, device: str | None = None, data_dir: str = "data", threads: int | None = None) -> dict:
    """Every measurement of the module docstring; returns the JSON-ready results."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = threads or usable_cpus()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    seconds, B = (0.0, 16) if quick else (4.0, 256)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [  # the default config; the fit is short and writes nothing
            f"paths.data_dir={data_dir}", f"paths.output_dir={tmp}",
            f"trainer={'gpu' if dev.type == 'cuda' else 'default'}", f"trainer.max_epochs={2 if quick else 4}",
            f"+trainer.limit_train_batches={3 if quick else 40}", "+trainer.limit_val_batches=0",
            "+trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "+trainer.logger=false",
            "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false",
            *(["data.batch_size=16"] if quick else [])]
        cfg = compose("train", overrides)
        features = dict(cfg.features)
        stacked, plain = MFCC(**features), MFCC(**{**features, "stack": 1})
        configs = [(m.num_frames(CLIP_SAMPLES), m.dim, H) for m in (stacked, plain) for H in (128, 256)]
        meta = dict(device=dev.type, device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda"
                    else platform.processor() or platform.machine(), **machine(), threads=threads, quick=quick,
                    torch=torch.__version__, statistic=f"best of interleaved rounds, >= {seconds:g} s per race")
        start = _cpu_sample()
        res = {"meta": meta}
        peak_n = 256 if quick else (8192 if dev.type == "cuda" else 1024)
        res["rnn"] = bench_rnn(configs, B, peak_n, seconds, dev, sync)
        meta["peak_gemm_shape"] = [peak_n] * 3  # raced in every RNN race; the least disturbed of them
        meta["peak_gemm_flops_per_s"] = max(r["peak_gemm_flops_per_s"] for r in res["rnn"])
        labels = task_labels(cfg.data.task, cfg.data.version)
        model = instantiate(cfg.model, labels=labels, features=cfg.features, _recursive_=False).model
        res["inference"] = bench_inference(model, 128, seconds, dev, sync)
        res["frontend"] = bench_frontend(features, cfg.data.batch_size, seconds, dev, sync)
        res["data"] = bench_fit(cfg, Path(data_dir), Path(tmp), dev, sync)
        res["data_gru"] = bench_fit(compose("train", [*overrides, "model=gru"]), Path(data_dir), Path(tmp), dev, sync)
    end = _cpu_sample()
    # CPUs that other processes kept busy while the bench ran, on average: its figures are
    # the machine's only when this is ~0
    meta["other_cpus"] = None if start is None else max(0.0, (end[1] - start[1] - (end[2] - start[2]))
                                                               / (end[0] - start[0]))
    res["rows"] = rows(res)
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m speechrnn.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 3 rounds: checks it runs (seconds)")
    parser.add_argument("--out", default="runs/bench.json", help="JSON results (default: runs/bench.json)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--data-dir", default="data", help="folder holding synthetic/ and cache/ (default: data)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the CPUs this process may use)")
    args = parser.parse_args(argv)
    kept = keep_freed_memory()
    res = run(args.quick, args.device, args.data_dir, args.threads)
    m = res["meta"]
    m["freed_memory_kept"] = kept
    others = "unknown" if m["other_cpus"] is None else f"{m['other_cpus']:.2f}"
    print(f"speechrnn.bench on {m['device']} ({m['device_name']}), {m['threads']} threads, torch {m['torch']}, "
          f"{m['statistic']}; other processes used {others} CPUs meanwhile")
    print(f"machine: {m['cpu']}, {m['cpu_count']} CPUs; BLAS {m['blas']}, CPU kernels {m['cpu_capability']}, "
          f"oneDNN {m['mkldnn']}; peak GEMM {m['peak_gemm_flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"({'x'.join(map(str, m['peak_gemm_shape']))}); malloc "
          f"{'keeps freed blocks (keep_freed_memory)' if kept else 'as the system set it'}")
    if m["other_cpus"] is not None and m["other_cpus"] > 0.2:
        print(f"warning: other processes used {m['other_cpus']:.2f} CPUs during the bench; multi-threaded GEMMs "
              "slow down far more than that share when a thread is preempted: rerun on a quiet machine (or with "
              "--threads 1) before quoting figures")
    print(f"data: {res['data']['source']}")
    print(format_table(res["rows"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, res)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
