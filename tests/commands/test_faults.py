"""Faults and bad input (the README table "Faults and bad input"), each proved on the smallest data that shows it.

Crash and resume, and determinism, are in test_resume.py.

One corpus is built per module: ``clean`` (tones in the Speech Commands layout) and
``dirty``, the same plus every kind of bad or odd file. Training, evaluation and
transcription are fed ``dirty``; bad files are reported once with their path and
skipped, odd-but-valid ones are used, and the good files' results do not change.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from speechrnn.training.config import compose
from speechrnn.core import atomic
from speechrnn.data.cache import decode_split
from speechrnn.model.checkpoint import load_model
from speechrnn.data.layout import DatasetError, Item
from speechrnn.evaluation.evaluate import folder_clips
from speechrnn.core.errors import friendly
from speechrnn.training.module import NonFiniteLossError
from speechrnn.training.module import KeywordModule
from speechrnn.inference.predict import predict_proba
from speechrnn.evaluation.report import classification_report, write_report
from speechrnn.training.fit import train

from helpers import ROOT, killed_writers_leftover, needs_posix_signals, tone, tone_corpus, write_wav

TINY = ["data=folder", "data.batch_size=8", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "model.encoder.hidden_size=16"]


def _header_only(path: Path) -> None:
    write_wav(path, np.zeros(0, np.float32))


def _truncated(path: Path) -> None:
    whole = write_wav(path, tone(700)).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def _with_nan(path: Path) -> None:
    x = tone(1500)
    x[4000:4100] = np.nan
    write_wav(path, x, subtype="FLOAT")


# Unreadable: reported once with the path and a reason, skipped.
UNREADABLE = {
    "yes/empty_nohash_0.wav": lambda p: p.write_bytes(b""),
    "yes/header_only_nohash_0.wav": _header_only,
    "no/truncated_nohash_0.wav": _truncated,
    "no/notes_nohash_0.wav": lambda p: p.write_text("not audio, only named .wav\n"),
    "up/nan_nohash_0.wav": _with_nan,
}
# Odd but valid: resampled, downmixed, padded or cropped, and used.
ODD = {
    "yes/rate8k_nohash_0.wav": lambda p: write_wav(p, tone(300, rate=8000), rate=8000),
    "yes/rate44k_nohash_0.wav": lambda p: write_wav(p, tone(300, rate=44100), rate=44100),
    "no/stereo_nohash_0.wav": lambda p: write_wav(p, np.stack([tone(700), tone(700, seed=1)], axis=1)),
    "no/pcm24_nohash_0.wav": lambda p: write_wav(p, tone(700), subtype="PCM_24"),
    "up/float_nohash_0.wav": lambda p: write_wav(p, tone(1500), subtype="FLOAT"),
    "up/short_nohash_0.wav": lambda p: write_wav(p, tone(1500, seconds=0.1)),
    "bed/long_nohash_0.wav": lambda p: write_wav(p, tone(2500, seconds=30)),
}
MISNAMED = "Yes/misnamed_nohash_0.wav"  # a keyword folder with a typo in its name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("faults")
    clean = tone_corpus(base / "clean")
    shutil.copytree(clean, base / "dirty")
    for name, make in {**UNREADABLE, **ODD}.items():
        make(base / "dirty" / name)
    write_wav(base / "dirty" / MISNAMED, tone(300, seed=9))
    return base


def cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def compose_train(*overrides: str):
    return compose("train", [*TINY, *overrides])


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def lines_naming(text: str, path: Path) -> list[str]:
    return [line for line in text.splitlines() if str(path) in line]


# --- training on the dirty corpus ------------------------------------------------------------

@pytest.fixture(scope="module")
def dirty_run(corpus):
    """One epoch on the dirty corpus: (metrics, log lines, run folder).

    Every non-keyword clip is drawn as _unknown_ (not the usual 10 %), so the test can see them all used.
    """
    run, lines = corpus / "run", []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger().addHandler(handler)
    try:
        metrics = train(compose_train("++data.unknown_percentage=1000", f"data.root={corpus / 'dirty'}",
                                      f"paths.data_dir={corpus / 'dirty-data'}", f"paths.output_dir={run}"))
    finally:
        logging.getLogger().removeHandler(handler)
    return metrics, "\n".join(lines), run


def test_training_reports_each_bad_clip_once_and_does_not_die(corpus, dirty_run):
    metrics, log, run = dirty_run
    assert "test/acc" in metrics and (run / "checkpoints" / "best.ckpt").is_file()
    for name in UNREADABLE:
        (line,) = lines_naming(log, corpus / "dirty" / name)
        assert line.startswith("skipping ")
    for name in ODD:
        assert not lines_naming(log, corpus / "dirty" / name), name


def test_training_uses_the_odd_but_valid_clips(corpus, dirty_run):
    (index,) = (corpus / "dirty-data" / "cache").glob("training-*.json")
    meta = json.loads(index.read_text())
    used = {Path(p) for p in meta["paths"]}
    assert {corpus / "dirty" / name for name in ODD} | {corpus / "dirty" / MISNAMED} <= used
    assert sorted(s.split(": ")[0] for s in meta["skipped"]) == sorted(str(corpus / "dirty" / n) for n in UNREADABLE)


def test_a_misnamed_label_folder_is_named_once_and_its_clips_become_unknown(corpus, dirty_run):
    _, log, _ = dirty_run
    (line,) = lines_naming(log, corpus / "dirty" / "Yes")
    assert "used as _unknown_" in line


def test_a_folder_with_no_recognisable_labels_is_a_clear_error(tmp_path):
    write_wav(tmp_path / "odd" / "Yes" / "a_nohash_0.wav", tone(300))
    write_wav(tmp_path / "odd" / "Noo" / "a_nohash_0.wav", tone(700))
    with pytest.raises(DatasetError, match=r"no label folder matches the task's labels .* \(found \['Noo', 'Yes'\]\)"):
        train(compose_train(f"data.root={tmp_path / 'odd'}", f"paths.data_dir={tmp_path}",
                            f"paths.output_dir={tmp_path / 'run'}"))


# --- evaluation ------------------------------------------------------------------------------

def test_evaluation_reports_each_bad_clip_in_one_line_finishes_the_rest_and_exits_nonzero(corpus, dirty_run):
    ckpt = dirty_run[2] / "checkpoints" / "best.ckpt"
    code, out, err = finish(cli("speechrnn.evaluate", f"ckpt_path={ckpt}", f"folder={corpus / 'dirty'}",
                                f"cache_dir={corpus / 'eval-cache'}", f"hydra.run.dir={corpus / 'eval'}"))
    assert code == 1 and "Traceback" not in err
    for name in UNREADABLE:
        (line,) = lines_naming(out + err, corpus / "dirty" / name)
        assert line.startswith("skipped: ")
    report = json.loads((corpus / "eval" / "report.json").read_text())
    clean_count = sum(1 for _ in (corpus / "clean").glob("[!_]*/*.wav"))
    assert report["num_samples"] == clean_count + len(ODD) + 1  # + the misnamed folder's clip, as _unknown_
    assert len(report["skipped"]) == len(UNREADABLE)


def test_good_clips_get_the_same_predictions_with_and_without_bad_ones_present(corpus, dirty_run, tmp_path):
    model = load_model(dirty_run[2] / "checkpoints" / "best.ckpt")
    by_path = {}
    for name in ("clean", "dirty"):
        clips = folder_clips(corpus / name, model.labels, tmp_path / name)
        probs = predict_proba(model, clips.waves)
        by_path[name] = {Path(p).relative_to(corpus / name): q for p, q in zip(clips.paths, probs)}
    assert len(by_path["clean"]) > 20
    for rel, p in by_path["clean"].items():
        q = by_path["dirty"][rel]
        assert p.argmax() == q.argmax() and torch.allclose(p, q, atol=1e-6), rel


# --- transcription ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def transcribed(corpus, dirty_run):
    """``transcribe --format json`` on the clean and the dirty folder, run side by side."""
    ckpt = str(dirty_run[2] / "checkpoints" / "best.ckpt")
    procs = {name: cli("speechrnn.transcribe", ckpt, str(corpus / name), "--format", "json")
             for name in ("clean", "dirty")}
    results = {}
    for name, proc in procs.items():
        code, out, err = finish(proc)
        rows = {Path(r["path"]).relative_to(corpus / name): r for r in map(json.loads, out.splitlines())}
        results[name] = code, rows, err
    return results


def test_transcription_reports_each_bad_file_in_one_line_and_exits_nonzero(corpus, transcribed):
    code, rows, err = transcribed["dirty"]
    assert code == 1 and "Traceback" not in err
    for name in UNREADABLE:
        assert len(lines_naming(err, corpus / "dirty" / name)) == 1, name
        assert Path(name) not in rows
    assert set(map(Path, ODD)) | {Path(MISNAMED)} <= set(rows)


def test_transcription_scans_a_long_clip_instead_of_cropping_it(transcribed):
    _, rows, _ = transcribed["dirty"]
    long = rows[Path("bed/long_nohash_0.wav")]
    assert "detections" in long and long.get("duration", 30.0) == pytest.approx(30.0)
    assert rows[Path("up/short_nohash_0.wav")]["topk"]  # 0.1 s is padded and classified


def test_transcription_of_good_files_is_unchanged_by_bad_ones(transcribed):
    code, clean, _ = transcribed["clean"]
    assert code == 0
    _, dirty, _ = transcribed["dirty"]
    for rel, row in clean.items():  # scores are printed to 4 decimals; batches differ, so allow one unit
        assert dirty[rel]["label"] == row["label"] and dirty[rel]["score"] == pytest.approx(row["score"], abs=1e-4), rel


# --- non-finite loss or gradients ------------------------------------------------------------

def test_nan_loss_stops_with_the_step_the_files_and_what_to_try(corpus, tmp_path):
    code, _, err = finish(cli("speechrnn.train", *TINY, "model.optimizer.lr=inf", f"data.root={corpus / 'clean'}",
                              f"paths.data_dir={corpus / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"))
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: step 1: the train loss is nan; batch files [")
    assert str(corpus / "clean") in last and "try a lower model.optimizer.lr" in last


def test_nan_gradient_stops_with_the_step_and_the_files(corpus, tmp_path, monkeypatch):
    step = KeywordModule.training_step

    def nan_gradient(self, batch, batch_idx):
        w = next(self.parameters())
        return step(self, batch, batch_idx) + torch.sqrt(w.sum() * 0)  # adds 0; its gradient is 0 * inf = nan

    monkeypatch.setattr(KeywordModule, "training_step", nan_gradient)
    cfg = compose_train(f"data.root={corpus / 'clean'}", f"paths.data_dir={corpus / 'data'}",
                        f"paths.output_dir={tmp_path}")
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg)
    message = str(err.value)
    assert message.startswith("step 0: the gradient norm is nan; batch files [")
    assert str(corpus / "clean") in message and "try" in message


# --- atomic writes ---------------------------------------------------------------------------

SLOW_CHECKPOINT = textwrap.dedent("""
    import io, sys, time, torch
    from speechrnn.training.callbacks import AtomicCheckpointIO
    saver, path = AtomicCheckpointIO(), sys.argv[1]
    saver.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(1000)}}, path)
    real_save = torch.save
    def slow_save(obj, f):  # half the bytes, then hang: a kill in the middle of torch.save
        buf = io.BytesIO()
        real_save(obj, buf)
        with open(f, "wb") as out:
            out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            out.flush()
            print("writing", flush=True)
            time.sleep(600)
    torch.save = slow_save
    saver.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(1000)}}, path)
""")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CHECKPOINT, str(target)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    kept = torch.load(target, weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(1000))
    (stray,) = [p for p in tmp_path.iterdir() if p != target]  # the half-written new one, never read
    assert stray.name.startswith(".last.") and stray.stat().st_size < target.stat().st_size


@pytest.fixture
def commits(monkeypatch) -> list[Path]:
    """Targets renamed into place by speechrnn.core.atomic, in order."""
    done, commit = [], atomic._commit
    monkeypatch.setattr(atomic, "_commit", lambda tmp, path: (commit(tmp, path), done.append(Path(path))))
    return done


def test_reports_are_written_only_by_temp_and_rename(tmp_path, commits):
    report = classification_report(np.array([0, 1, 1]), np.array([0, 1, 0]), ["yes", "no"])
    write_report(report, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in commits)


def test_cache_files_are_written_by_temp_and_rename_index_last(corpus, tmp_path, commits):
    items = [Item("yes", p) for p in sorted((corpus / "clean" / "yes").glob("*.wav"))]
    decode_split(items, ["yes"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in commits)
    assert [p.suffix for p in commits] == [".npy", ".json"]  # the index, written last, marks it complete


def test_cache_killed_before_its_index_is_decoded_again(corpus, tmp_path, monkeypatch):
    items = [Item("yes", p) for p in sorted((corpus / "clean" / "yes").glob("*.wav"))]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the array, before the index

    monkeypatch.setattr("speechrnn.data.cache.atomic_write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        decode_split(items, ["yes"], tmp_path)
    monkeypatch.undo()
    clips = decode_split(items, ["yes"], tmp_path)
    assert len(clips) == len(items) and clips.waves.any(axis=1).all()


# --- the synthetic corpus and the user's folders ----------------------------------------------

def test_the_synthetic_corpus_is_never_built_over_a_users_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    write_wav(mine / "yes" / "me_nohash_0.wav", tone(300))
    (mine / "notes.txt").write_text("keep me\n")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    cfg = compose("train", [f"data.root={mine}", "trainer=debug", f"paths.data_dir={tmp_path / 'data'}",  # python -m speechrnn.train data.root=mine trainer=debug
                                      f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit:
        friendly(train)(cfg)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit.value.code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {mine}: ") and f"data=folder data.root={mine}" in errors[0]
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".mine*"))  # no half-built corpus beside it
@needs_posix_signals
def test_the_next_run_sweeps_what_writers_killed_in_its_folders_left(corpus, tmp_path):
    run, cache = tmp_path / "run", tmp_path / "data" / "cache"
    for folder in (run, run / "checkpoints", run / "test", cache):
        folder.mkdir(parents=True)
    stray = [killed_writers_leftover(run / "metrics.json"), killed_writers_leftover(run / "checkpoints" / "last.ckpt"),
             killed_writers_leftover(run / "test" / "report.json"), killed_writers_leftover(cache / "training-0.npy")]
    train(compose_train(f"data.root={corpus / 'clean'}", f"paths.data_dir={tmp_path / 'data'}",
                        f"paths.output_dir={run}"))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "test" / "report.json").is_file()
    assert [p for p in stray if p.exists()] == []


# --- config errors ---------------------------------------------------------------------------

CONFIG_MISTAKES = {  # case: (overrides, exit status, what stderr says)
    "wrong type": (["trainer.max_epochs=abc"], 2,
                   "error: trainer.max_epochs='abc' has the wrong type: trainer.max_epochs takes int"),
    "missing required value": (["task=custom"], 2, "error: task=custom needs data.words"),
    "misspelt key, appended with +": (["+model.encoder.hiden_size=64"], 1, "unexpected keyword argument 'hiden_size'"),
}


@pytest.fixture(scope="module")
def config_mistakes(corpus):
    """``python -m speechrnn.train`` with each mistake, run side by side: {case: (returncode, stderr)}."""
    procs = {case: cli("speechrnn.train", *TINY, f"data.root={corpus / 'clean'}", f"paths.data_dir={corpus / 'data'}",
                       f"hydra.run.dir={corpus / 'config' / str(i)}", *overrides)
             for i, (case, (overrides, _, _)) in enumerate(CONFIG_MISTAKES.items())}
    return {case: finish(proc)[::2] for case, proc in procs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", CONFIG_MISTAKES)
def test_config_mistakes_give_a_clear_error_not_a_traceback(case, config_mistakes):
    code, err = config_mistakes[case]
    _, expected_code, expected = CONFIG_MISTAKES[case]
    assert code == expected_code and "Traceback" not in err
    assert expected in err
