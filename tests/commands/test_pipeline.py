"""End to end on a tiny folder: train writes its records; evaluate and transcribe use them."""

import csv
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from speechrnn.training.config import compose
from speechrnn.model.checkpoint import load_model
from speechrnn.evaluate import evaluate
from speechrnn.info import main as info_main
from speechrnn.inference.predict import predict_proba, predict_steps
from speechrnn.evaluation.report import read_curves
from speechrnn.training.fit import train

from helpers import ROOT, tone, tone_corpus, write_wav



def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


def tone_training(base: Path, *overrides: str):
    """The train config of a small model on a tone folder made under ``base``, its run in ``base``/run."""
    return compose("train", [
        "data=folder", f"data.root={tone_corpus(base / 'tones')}", f"paths.data_dir={base}/data",
        f"paths.output_dir={base}/run", "data.batch_size=8", "trainer.enable_progress_bar=false",
        "model.encoder.hidden_size=32", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few epochs on the tone folder; returns (run dir, data root)."""
    base = tmp_path_factory.mktemp("pipeline")
    metrics = train(tone_training(base, "trainer.max_epochs=3", "trainer.log_every_n_steps=1"))
    return base / "run", base / "tones", metrics


def test_train_writes_checkpoint_config_metrics_and_report(trained):
    out, _, metrics = trained
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "config.yaml").is_file() and (out / "logs" / "metrics.csv").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    report = json.loads((out / "test" / "report.json").read_text())
    assert saved["test/acc"] == report["accuracy"] == metrics["test/acc"]
    assert (out / "test" / "confusion_matrix.png").stat().st_size > 1000
    predictions = list(csv.DictReader((out / "test" / "predictions.csv").open()))
    assert len(predictions) == report["num_samples"]
    assert sum(p["label"] == p["predicted"] for p in predictions) / len(predictions) == pytest.approx(report["accuracy"])
    files = [p["path"] for p in predictions if p["path"] != "<silence cut>"]
    assert files and all(Path(f).is_file() for f in files)
    assert len(files) < len(predictions)  # kws12's _silence_ clips are cut from background noise, not files
    header = (out / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "grad/norm_pre_clip" in header and "train/loss_step" in header


def test_a_fit_hides_lightnings_pytree_deprecation_and_no_other_warning(tmp_path):
    cfg = tone_training(tmp_path, "trainer.max_epochs=1", "test=false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    assert caught, "Lightning's other warnings (e.g. fewer batches than the logging interval) still pass"


def test_train_draws_its_curves_beside_metrics_csv(trained):
    out, _, _ = trained
    assert (out / "logs" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(sorted(epochs) == [0, 1, 2] for epochs in read_curves(out / "logs").values())  # what it draws


def test_best_checkpoint_holds_the_weight_average_and_the_raw_weights_to_resume(trained):
    out, _, _ = trained
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    key = "model.encoder.layers.0.W_hh"
    average, raw = best["state_dict"][key], best["current_model_state"][key]
    assert not torch.equal(average, raw)  # the default callbacks average the weights (callbacks.ema)
    model = load_model(out / "checkpoints" / "best.ckpt")
    assert torch.equal(dict(model.named_parameters())[key.removeprefix("model.")], average)


def test_report_gives_the_accuracy_of_every_steps_output_and_the_last_is_the_prediction(trained):
    out, _, _ = trained
    report = json.loads((out / "test" / "report.json").read_text())
    steps = load_model(out / "checkpoints" / "best.ckpt").frontend.num_frames(16000)
    assert len(report["step_accuracy"]) == steps == 12
    assert report["step_accuracy"][-1] == pytest.approx(report["accuracy"])  # the model reads h_T
    assert all(0 <= a <= 1 for a in report["step_accuracy"])


def test_predict_steps_scores_like_predict_proba_and_its_last_step_is_the_prediction(trained):
    out, _, _ = trained
    model = load_model(out / "checkpoints" / "best.ckpt")
    waves = np.stack([tone(f, seconds=1.0, seed=9) for f in (300.0, 700.0, 1500.0, 2500.0, 5000.0)])  # (5, 16000)
    probs, steps = predict_steps(model, waves, batch_size=2)
    assert torch.equal(probs, predict_proba(model, waves, batch_size=2))  # the same computation, bit for bit
    assert steps.shape == (5, 12) and torch.equal(steps[:, -1], probs.argmax(-1))


def test_checkpoint_is_self_contained(trained):
    out, _, _ = trained
    model = load_model(out / "checkpoints" / "best.ckpt")
    assert model.labels[-2:] == ["_silence_", "_unknown_"]
    assert model.frontend.std.ne(1).any()  # the training statistics came with it


@pytest.mark.slow
def test_evaluate_writes_report_and_png_and_is_repeatable(trained, tmp_path):
    out, root, _ = trained
    ckpt = out / "checkpoints" / "best.ckpt"
    reports = []
    for k in range(2):
        res = run("speechrnn.evaluate", f"ckpt_path={ckpt}", f"folder={root}", f"cache_dir={tmp_path}/cache",
                  f"hydra.run.dir={tmp_path}/eval{k}")
        assert res.returncode == 0, res.stderr
        reports.append(json.loads((tmp_path / f"eval{k}" / "report.json").read_text()))
        assert (tmp_path / f"eval{k}" / "confusion_matrix.png").is_file()
        assert (tmp_path / f"eval{k}" / "confusion_matrix.csv").is_file()
    assert reports[0]["accuracy"] == reports[1]["accuracy"]
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]
    assert set(reports[0]["per_class"]["yes"]) >= {"precision", "recall", "f1"}
    printed = next(line for line in res.stdout.splitlines() if line.startswith("accuracy at each step"))
    assert printed.split(": ")[1].split() == [f"{100 * a:.1f}" for a in reports[1]["step_accuracy"]]


def test_evaluate_shows_a_bar_over_the_clips_while_classifying_on_a_terminal(trained, tmp_path, capsys, monkeypatch):
    out, root, _ = trained
    cfg = compose("evaluate", [f"ckpt_path={out / 'checkpoints' / 'best.ckpt'}", f"folder={root}",
                                         f"cache_dir={tmp_path}/cache", f"out_dir={tmp_path}/eval", "batch_size=4"])
    evaluate(cfg)  # decodes the folder into the cache: the second run is the silent one
    assert "classifying" not in capsys.readouterr().err  # no bar in a pipe or a log
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # what tqdm asks before it draws
    clips = evaluate(cfg)["num_samples"]
    assert re.search(rf"classifying: +0%.*\| 0/{clips} \[", capsys.readouterr().err)  # a bar over every clip


@pytest.mark.slow
def test_evaluate_lays_short_clips_where_align_says(trained, tmp_path):
    out, _, _ = trained
    short = tmp_path / "short"
    write_wav(short / "yes" / "00000000_nohash_0.wav", tone(300, seconds=0.3))
    ckpt = out / "checkpoints" / "best.ckpt"
    for align in ("start", "centre", "end"):
        res = run("speechrnn.evaluate", f"ckpt_path={ckpt}", f"folder={short}", f"cache_dir={tmp_path}/cache",
                  f"align={align}", f"hydra.run.dir={tmp_path}/{align}")
        assert res.returncode == 0, res.stderr
        assert json.loads((tmp_path / align / "report.json").read_text())["align"] == align
    heard = sorted(tuple(np.flatnonzero(np.load(f)[0])[[0, -1]]) for f in (tmp_path / "cache").glob("*.npy"))
    assert heard == [(0, 4799), (5600, 10399), (11200, 15999)]  # 4,800 samples at the start, centre, end
    res = run("speechrnn.evaluate", f"ckpt_path={ckpt}", f"folder={short}", "align=middle")
    assert res.returncode == 2 and "align must be one of start, centre, end, got 'middle'" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_evaluate_reports_a_corrupt_clip_and_exits_nonzero(trained, tmp_path):
    out, root, _ = trained
    bad = tmp_path / "mixed"
    write_wav(bad / "yes" / "00000000_nohash_0.wav", tone(300))
    (bad / "no").mkdir()
    (bad / "no" / "broken_nohash_0.wav").write_bytes(b"RIFF\x00\x00")
    res = run("speechrnn.evaluate", f"ckpt_path={out / 'checkpoints' / 'best.ckpt'}", f"folder={bad}",
              f"cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/eval")
    assert res.returncode == 1
    assert "broken_nohash_0.wav" in res.stderr and "Traceback" not in res.stderr
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["num_samples"] == 1


def test_transcribe_prints_one_line_per_clip(trained):
    out, root, _ = trained
    clips = sorted((root / "yes").glob("*.wav"))[:3]
    res = run("speechrnn.transcribe", str(out / "checkpoints" / "best.ckpt"), *map(str, clips))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()[1:]
    assert len(lines) == 3 and all(str(c) in line for c, line in zip(clips, lines))


def _info(capsys, *args) -> str:
    assert info_main([*map(str, args)]) == 0
    return capsys.readouterr().out


def test_info_tells_what_a_checkpoint_and_its_run_know(trained, capsys):
    out, root, metrics = trained
    info = json.loads(_info(capsys, out / "checkpoints" / "best.ckpt", "--format", "json"))
    model = load_model(out / "checkpoints" / "best.ckpt")
    assert info["labels"] == model.labels and info["features"]["n_mfcc"] == model.frontend.n_mfcc
    assert info["encoder"]["kind"] == "rnn" and info["encoder"]["hidden_size"] == 32
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert (info["training"]["root"], info["training"]["task"], info["training"]["seed"]) == (str(root), "kws12", 0)
    assert info["metrics"]["test/acc"] == metrics["test/acc"]
    saved = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert (info["epoch"], info["step"]) == (saved["epoch"], saved["global_step"]) and info["step"] > 0
    text = _info(capsys, out / "checkpoints" / "best.ckpt").splitlines()
    assert [line.split()[0] for line in text] == ["checkpoint", "labels", "features", "encoder", "training", "test"]
    assert f"{metrics['test/acc']:.4f} of this checkpoint" in text[-1]
    assert f"{metrics['test/acc']:.4f} of the run's best.ckpt, not last.ckpt" in _info(
        capsys, out / "checkpoints" / "last.ckpt")  # the test accuracy is the best checkpoint's


def test_info_of_a_checkpoint_moved_out_of_its_run_still_tells_the_model(trained, tmp_path, capsys):
    out, _, _ = trained
    moved = tmp_path / "checkpoints" / "model.ckpt"  # a checkpoints folder, but no run around it
    moved.parent.mkdir()
    moved.write_bytes((out / "checkpoints" / "best.ckpt").read_bytes())
    info = json.loads(_info(capsys, moved, "--format", "json"))
    assert info["labels"] == load_model(moved).labels
    assert info["training"] is None and info["metrics"] is None
    assert "training    unknown" in _info(capsys, moved)


@pytest.mark.parametrize("make, reason", [(lambda p: None, "checkpoint not found"),
                                          (lambda p: p.write_text("not a checkpoint"), "not a readable PyTorch")])
def test_info_of_a_missing_or_non_checkpoint_file_is_one_line(tmp_path, capsys, make, reason):
    path = tmp_path / "best.ckpt"
    make(path)
    with pytest.raises(SystemExit) as done:
        info_main([str(path)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith(f"error: {path}: {reason}") and err.count("\n") == 1


@pytest.mark.slow
def test_a_multirun_ends_with_one_table_of_its_runs(tone_folder, tmp_path):
    sweep = tmp_path / "sweep"
    res = run("speechrnn.train", "-m", "model=rnn,gru", "data=folder", f"data.root={tone_folder}",
              f"paths.data_dir={tmp_path}/data", "trainer=debug", "trainer.enable_progress_bar=false",
              "data.batch_size=8", "model.encoder.hidden_size=16", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr
    summary = json.loads((sweep / "summary.json").read_text())
    assert [row["overrides"] for row in summary["runs"]] == ["model=rnn", "model=gru"]
    for row in summary["runs"]:
        saved = json.loads((sweep / row["run"] / "metrics.json").read_text())
        assert (row["test/acc"], row["val/acc"]) == (saved["test/acc"], saved["val/acc"])
        assert Path(row["best_checkpoint"]).is_file()
    table = (sweep / "summary.md").read_text()
    assert table.count("\n| ") == 2 + 1 and table.strip() in res.stdout  # header and two runs, also printed
    assert len(list(csv.reader((sweep / "summary.csv").open()))) == 1 + 2


@pytest.mark.slow
def test_missing_dataset_is_one_line(tmp_path):
    res = run("speechrnn.train", "data=folder", f"data.root={tmp_path}/nothing", f"paths.data_dir={tmp_path}",
              f"hydra.run.dir={tmp_path}/run")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "nothing" in res.stderr
    assert "Traceback" not in res.stderr
