"""The benchmark runs and its numbers are sane. Not a timed test: no speed target is asserted."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from speechrnn.bench import _cpu_sample, gemm_flops, rnn_gemms

from helpers import ROOT

pytestmark = pytest.mark.slow  # a quick bench run, shared by the module's tests

SECTIONS = {"meta", "rnn", "inference", "frontend", "data", "data_gru", "rows"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """``python -m speechrnn.bench --quick`` on random clips (no corpus in the data dir); returns (stdout, JSON)."""
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "sub" / "bench.json"
    res = subprocess.run([sys.executable, "-m", "speechrnn.bench", "--quick", "--out", str(out),
                          "--data-dir", str(tmp / "empty")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout, json.loads(out.read_text())


def _numbers(obj):
    """Every measured number (settings such as ``num_workers`` may be 0)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k != "num_workers":
                yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.mark.slow
def test_json_has_every_section_and_the_table(bench):
    stdout, res = bench
    assert set(res) == SECTIONS
    assert res["meta"]["quick"] is True and res["meta"]["device"] in ("cpu", "cuda")
    assert "random noise clips" in res["data"]["source"]
    for row in res["rows"]:
        assert row["measure"] in stdout and row["status"] in ("pass", "miss", "info")
        assert (row["target"] is None) == (row["status"] == "info")
    assert "results:" in stdout


def test_measurements_are_positive_and_finite(bench):
    _, res = bench
    for section in ("rnn", "inference", "frontend", "data", "data_gru"):
        values = list(_numbers(res[section]))
        assert values and all(math.isfinite(v) and v > 0 for v in values), section


def test_rnn_ratios_come_from_the_measured_times(bench):
    _, res = bench
    Ts = {r["T"] for r in res["rnn"]}  # the default config's stacked steps, and 98 unstacked frames
    assert len(Ts) == 2 and 98 in Ts and {r["H"] for r in res["rnn"]} == {128, 256}
    for r in res["rnn"]:
        t = r["seconds"]["ElmanRNN"]
        assert r["speedup"] == pytest.approx(r["seconds"][r["baseline"]] / t)
        assert r["gemm_flops"] == gemm_flops(rnn_gemms(r["B"], r["T"], r["I"], r["H"]))
        assert r["flops_per_s"] == pytest.approx(r["gemm_flops"] / t)
        assert r["frac_gemm_peak"] == pytest.approx(r["flops_per_s"] / r["peak_gemm_flops_per_s"])
        assert r["frac_gemm_bound"] == pytest.approx(r["gemm_bound_s"] / t)


def test_rows_pass_or_miss_by_their_ratio(bench):
    _, res = bench
    rows = {row["measure"]: row for row in res["rows"]}
    for r in res["rnn"]:
        row = rows[f"RNN fwd+bwd B={r['B']} T={r['T']} I={r['I']} H={r['H']}"]
        assert row["ratio"] == pytest.approx(r["speedup"])
        assert row["status"] == ("pass" if r["speedup"] >= (1.0 if r["baseline"].startswith("cuDNN") else 1.2) else "miss")
    d = res["data"]
    assert d["data_vs_train"] == pytest.approx(d["loader_clips_per_s"] / d["train_step_clips_per_s"])
    data_row = next(row for row in res["rows"] if row["measure"].startswith("data loader"))
    assert data_row["status"] == ("pass" if d["data_vs_train"] >= 3 else "miss")
    assert d["epoch_clips_per_s"] == pytest.approx(max(e["clips"] / e["seconds"] for e in d["epochs"]))
    g = res["data_gru"]  # the GRU's fit on the same clips
    assert g["source"] == d["source"] and g["batches"] == d["batches"]
    epochs_row = next(row for row in res["rows"] if row["measure"].startswith("whole epochs"))
    assert epochs_row["ratio"] == pytest.approx(d["epoch_clips_per_s"] / g["epoch_clips_per_s"])


def test_streaming_row_is_the_step_against_nn_rnncell_held_to_1_5x(bench):
    _, res = bench
    st = res["inference"]["stream_step_s"]
    assert set(st) == {"ElmanRNN.step", "nn.RNNCell"}  # the product step is the lean path: no separate contender
    row = next(row for row in res["rows"] if row["measure"].startswith("streaming"))
    assert row["ratio"] == pytest.approx(st["nn.RNNCell"] / st["ElmanRNN.step"])
    assert row["target"] == ">= 1.5x" and row["status"] == ("pass" if row["ratio"] >= 1.5 else "miss")


def test_the_machine_is_in_the_json_and_the_header(bench):
    stdout, res = bench
    m = res["meta"]
    assert m["cpu"] and m["cpu_count"] == os.cpu_count() and m["blas"]
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert (m["mkldnn"] != "no") == torch.backends.mkldnn.is_available()
    assert m["peak_gemm_flops_per_s"] == max(r["peak_gemm_flops_per_s"] for r in res["rnn"])
    header = stdout.split("\ndata: ")[0]
    for text in (m["cpu"], f"{m['cpu_count']} CPUs", f"BLAS {m['blas']}", m["cpu_capability"], m["mkldnn"],
                 f"peak GEMM {m['peak_gemm_flops_per_s'] / 1e9:.1f} GFLOP/s", f"{m['threads']} threads",
                 f"torch {torch.__version__}"):
        assert text in header


def test_the_loader_workers_cpu_is_the_benchs_own_not_another_process():
    """A child that has ended (as the fits' loader workers have when the bench samples the CPU) counts as the
    bench's own CPU: counted as another process's, it read as 0.3 CPUs of load on a quiet machine."""
    start = _cpu_sample()
    if start is None:
        pytest.skip("no /proc/stat on this system")
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    end = _cpu_sample()
    assert end[2] - start[2] >= 0.45
