"""The transcription CLI: inputs of every kind, output formats, long recordings, streams, bad input."""

import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechrnn.training.config import compose
from speechrnn.core.audio import load_audio
from speechrnn.data.cache import decode_split
from speechrnn.data.layout import Item
from speechrnn.model.checkpoint import load_model
from speechrnn.inference.detect import RecognizeCommands, calibration_path, detect_events, summarize, write_calibration
from speechrnn.inference.predict import predict_proba
from speechrnn.inference.backends import TorchBackend
from speechrnn.inference import transcription
from speechrnn.training.fit import train
from speechrnn import transcribe as transcribe_command
from speechrnn.transcribe import main

from helpers import ROOT, SHARED_DATA, tone, write_wav

RATE = 16000


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A Lightning checkpoint of a tiny model, one epoch on tones (what it predicts does not matter here)."""
    base = tmp_path_factory.mktemp("transcribe")
    root = base / "tones"
    for word, f in {"yes": 300.0, "no": 700.0, "up": 1500.0, "bed": 2500.0}.items():
        for k in range(4):
            write_wav(root / word / f"{k:08x}_nohash_0.wav", tone(f * (1 + 0.02 * k), seed=k))
    (root / "validation_list.txt").write_text("".join(f"{w}/00000000_nohash_0.wav\n" for w in ("yes", "no", "up")))
    (root / "testing_list.txt").write_text("".join(f"{w}/00000001_nohash_0.wav\n" for w in ("yes", "no", "up")))
    cfg = compose("train", [
        "data=folder", f"data.root={root}", f"paths.data_dir={base}/data", f"paths.output_dir={base}/run",
        "data.batch_size=8", "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "test=false",
        "model.encoder.hidden_size=16"])
    train(cfg)
    return base / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture
def clips(tmp_path):
    """Three 1 s clips, one in a nested folder."""
    return [write_wav(tmp_path / "clips" / "a.wav", tone(300)),
            write_wav(tmp_path / "clips" / "b.wav", tone(1500, seed=1)),
            write_wav(tmp_path / "clips" / "deep" / "c.wav", tone(700, seed=2))]


def run_main(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def expected(ckpt, paths) -> torch.Tensor:
    """Probabilities the model gives the clips as training and evaluation read them: through the decoded cache."""
    model = load_model(ckpt)
    with tempfile.TemporaryDirectory() as cache_dir:
        clips = decode_split([Item(model.labels[0], Path(p)) for p in paths], model.labels, cache_dir)
        return predict_proba(model, clips.waves)


def test_json_gives_one_object_per_clip_with_topk(ckpt, clips, capsys):
    code, out, err = run_main(capsys, ckpt, clips[0].parent, "--format", "json", "--top-k", "2")
    assert code == 0, err
    records = json_lines(out)
    assert [r["path"] for r in records] == [str(p) for p in clips]  # the folder was searched recursively
    probs = expected(ckpt, clips)
    labels = load_model(ckpt).labels
    for r, p in zip(records, probs):
        assert r["label"] == labels[int(p.argmax())] == r["topk"][0]["label"]
        assert r["score"] == pytest.approx(float(p.max()), abs=1e-4) and len(r["topk"]) == 2
        assert r["topk"][0]["score"] >= r["topk"][1]["score"]


def test_table_and_csv_list_every_clip(ckpt, clips, capsys):
    code, out, _ = run_main(capsys, ckpt, *clips)
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("path") and len(lines) == 4
    assert all(str(c) in line for c, line in zip(clips, lines[1:]))
    code, out, _ = run_main(capsys, ckpt, *clips, "--format", "csv")
    rows = out.strip().splitlines()
    assert rows[0] == "path,label,score,topk,detections"
    assert [r.split(",")[0] for r in rows[1:]] == list(map(str, clips))


def test_globs_and_repeats_give_each_file_once(ckpt, clips, capsys):
    code, out, _ = run_main(capsys, ckpt, str(clips[0].parent / "**" / "*.wav"), clips[0], "--format", "json")
    assert code == 0 and sorted(r["path"] for r in json_lines(out)) == sorted(map(str, clips))


def test_threshold_turns_a_weak_best_score_into_unknown(ckpt, clips, capsys):
    scores = expected(ckpt, clips).max(-1).values
    cut = float(scores.min() + scores.max()) / 2
    assert scores.min() < cut < scores.max()
    code, out, _ = run_main(capsys, ckpt, *clips, "--format", "json", "--threshold", cut)
    records = json_lines(out)
    assert code == 0 and [r["label"] == "_unknown_" for r in records] == (scores < cut).tolist()
    assert all(r["topk"][0]["label"] != "_unknown_" for r in records)  # top-k keeps the model's own ranking


def test_batch_size_does_not_change_results(ckpt, clips, capsys):
    _, one, _ = run_main(capsys, ckpt, *clips, "--format", "json", "--batch-size", "1")
    _, many, _ = run_main(capsys, ckpt, *clips, "--format", "json", "--batch-size", "64")
    for a, b in zip(json_lines(one), json_lines(many)):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_any_rate_and_channel_count_is_resampled_and_downmixed(ckpt, tmp_path, capsys):
    mono = tone(700, seconds=0.8, rate=8000)
    path = tmp_path / "stereo8k.flac"
    sf.write(path, np.stack([mono, mono], 1), 8000)
    code, out, _ = run_main(capsys, ckpt, path, "--format", "json")
    wave = load_audio(path)
    assert code == 0 and len(wave) == round(0.8 * RATE)
    assert json_lines(out)[0]["score"] == pytest.approx(float(expected(ckpt, [path]).max()), abs=1e-4)


def test_a_resampled_clip_gets_the_scores_evaluation_gives_it(ckpt, tmp_path, capsys):
    """An 8 kHz clip resampled in float has an empty 4-8 kHz band far below int16 rounding: transcription
    must round it as the training cache does, or its features (and scores) differ from evaluation's."""
    path = write_wav(tmp_path / "quiet8k.wav", 0.05 * tone(440, seconds=0.6, rate=8000), rate=8000)
    labels = load_model(ckpt).labels
    code, out, _ = run_main(capsys, ckpt, path, "--format", "json", "--top-k", len(labels))
    scores = {t["label"]: t["score"] for t in json_lines(out)[0]["topk"]}
    assert code == 0
    assert [scores[label] for label in labels] == pytest.approx(expected(ckpt, [path])[0].tolist(), abs=1e-4)


def test_bad_inputs_get_one_line_each_and_the_rest_is_reported(ckpt, clips, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not audio")
    (bad / "empty.wav").write_bytes(b"")
    (bad / "cut.wav").write_bytes(b"RIFF\x00\x00")
    (bad / "no_audio_here").mkdir()
    nan = tone(300)
    nan[100] = np.nan
    sf.write(bad / "nan.wav", nan, RATE, subtype="FLOAT")
    inputs = [bad / "notes.txt", bad / "empty.wav", bad / "cut.wav", bad / "no_audio_here", bad / "nan.wav",
              bad / "missing.wav"]
    code, out, err = run_main(capsys, ckpt, clips[0], *inputs, clips[1], "--format", "json")
    assert code == 1
    assert [r["path"] for r in json_lines(out)] == [str(clips[0]), str(clips[1])]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(inputs) and "Traceback" not in err
    for path in inputs:
        assert sum(path.name in line for line in errors) == 1


@pytest.mark.parametrize("kind", ["missing", "foreign_state_dict", "lightning_without_hparams", "text"])
def test_unusable_checkpoint_is_one_line_and_exit_2(kind, clips, tmp_path, capsys):
    path = tmp_path / "model.ckpt"
    if kind == "foreign_state_dict":
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    elif kind == "lightning_without_hparams":
        torch.save({"state_dict": torch.nn.Linear(3, 2).state_dict(), "hyper_parameters": {"lr": 0.1},
                    "pytorch-lightning_version": "2.4.0"}, path)
    elif kind == "text":
        path.write_text("hello")
    code, out, err = run_main(capsys, path, *clips)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err


# an untrained model's posteriors are near uniform: these options report its first keyword and every rise
# of _unknown_ to the top
EVERY_RISE = ["--detection-threshold", "0", "--suppression-ms", "0", "--show-unknown"]


def long_recording(path: Path, seconds: float) -> Path:
    wave = 0.01 * np.random.default_rng(0).standard_normal(int(seconds * RATE)).astype(np.float32)
    wave[RATE: 2 * RATE] += tone(300)
    return write_wav(path, wave)


def test_long_recordings_are_scanned_whole_never_cropped(ckpt, clips, tmp_path, capsys):
    long = long_recording(tmp_path / "long.wav", 3.5)
    just_over = write_wav(tmp_path / "over.wav", np.concatenate([tone(300), np.zeros(1, np.float32)]))
    code, out, _ = run_main(capsys, ckpt, clips[0], long, just_over, "--format", "json", *EVERY_RISE)
    short, scanned, over = json_lines(out)
    assert code == 0 and "detections" not in short
    assert scanned["duration"] == 3.5 and over["duration"] == pytest.approx((RATE + 1) / RATE, abs=1e-3)
    model = load_model(ckpt)
    events = list(detect_events(TorchBackend(model).spotter(), load_audio(long).split(RATE),
                                RecognizeCommands(model.labels, threshold=0.0, suppression_ms=0, report_unknown=True)))
    assert len(events) >= 2 and scanned["detections"] == events and scanned["label"] == summarize(events, 3)["label"]
    assert all(0 <= e["start"] < e["end"] <= 3.5 for e in events)


def test_stdin_pcm_and_stream_mode_report_the_events_of_batch_mode(ckpt, tmp_path, capsys, monkeypatch):
    long = long_recording(tmp_path / "long.wav", 4.0)
    opts = ["--format", "json", *EVERY_RISE, "--chunk-ms", "37"]
    _, out, _ = run_main(capsys, ckpt, long, *opts)
    batch = json_lines(out)[0]["detections"]
    assert len(batch) >= 2
    _, out, _ = run_main(capsys, ckpt, long, "--stream", *opts)
    assert [{k: e[k] for k in ("label", "start", "end", "score")} for e in json_lines(out)] == batch
    pcm, _ = sf.read(long, dtype="int16")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm.tobytes())))
    code, out, _ = run_main(capsys, ckpt, "-", *opts)
    events = json_lines(out)
    assert code == 0 and all(e["path"] == "-" for e in events)
    assert [(e["label"], e["start"]) for e in events] == [(e["label"], e["start"]) for e in batch]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGINT and select on pipes")
def test_ctrl_c_stops_a_live_stream_with_what_was_heard_and_status_130(ckpt, tmp_path):
    """``arecord ... | transcribe CKPT - --stream``, ended by Ctrl-C while it waits for more audio."""
    pcm, _ = sf.read(long_recording(tmp_path / "long.wav", 4.0), dtype="int16")
    proc = subprocess.Popen([sys.executable, "-m", "speechrnn.transcribe", str(ckpt), "-", "--stream",
                             "--format", "json", "--detection-threshold", "0"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(pcm.tobytes())
        proc.stdin.flush()  # and left open, as a microphone's stream is
        assert select.select([proc.stdout], [], [], 120)[0], "no keyword reported within 120 s"
        heard = [proc.stdout.readline()]  # a keyword was printed: the command is listening
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    heard += proc.stdout.read().splitlines()
    err = proc.stderr.read().decode()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert all(json.loads(line)["path"] == "-" for line in heard)
    lines = err.splitlines()
    assert lines[-1].startswith(f"{len(heard)} keywords found in 1 streams (stopped by Ctrl-C)")
    assert lines[-2].startswith("streamed ") and "real-time factor" in lines[-2]


def test_a_stream_ends_with_its_real_time_factor_not_counting_the_wait_for_audio(ckpt, capsys, monkeypatch):
    """A fake clock: each read of stdin waits 5 s (a microphone's pace), processing takes 0.02 s per s of audio."""
    now = [0.0]

    class Microphone(io.BytesIO):
        def read(self, size=-1):
            now[0] += 5.0
            return super().read(size)

    def working(chunks):
        for c in chunks:
            now[0] += 0.02 * len(c) / RATE
            yield c

    detect = transcribe_command.detect_events
    monkeypatch.setattr(transcription, "perf_counter", lambda: now[0])
    monkeypatch.setattr(transcribe_command, "detect_events",
                        lambda spotter, chunks, recognizer: detect(spotter, working(chunks), recognizer))
    pcm = (1000 * np.random.default_rng(0).standard_normal(int(3.3 * RATE))).astype("<i2")  # 3.3 s
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Microphone(pcm.tobytes())))
    code, _, err = run_main(capsys, ckpt, "-", "--stream", "--format", "json")
    lines = err.splitlines()
    assert code == 0 and lines[-2] == ("streamed 3.3 s of audio in 0.07 s of processing: real-time factor 0.020 "
                                       "on 1 thread(s)"), err


def run_on_stdin(capsys, monkeypatch, data: bytes, *argv) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    return run_main(capsys, *argv, "-")


@pytest.mark.parametrize("rate,channels,streamed", [(RATE, 1, False), (8000, 2, False), (RATE, 1, True)],
                         ids=["16k-mono", "8k-stereo", "16k-mono-length-unknown"])
def test_a_wav_on_stdin_is_read_like_the_same_file_given_by_path(ckpt, tmp_path, capsys, monkeypatch, rate, channels,
                                                                 streamed):
    """``cat clip.wav | transcribe CKPT -``: the header is not audio, the rate and channels are the file's."""
    rng = np.random.default_rng(0)
    wave = 0.01 * rng.standard_normal((int(3.5 * rate), channels)).astype(np.float32)
    wave[rate: 2 * rate] += tone(300, rate=rate)[:, None]
    path = write_wav(tmp_path / "clip.wav", wave, rate)
    opts = ["--format", "json", "--detection-threshold", "0"]
    _, out, _ = run_main(capsys, ckpt, path, *opts)
    by_path = json_lines(out)[0]["detections"]
    data = path.read_bytes()
    if streamed:  # a recorder writing a wav to a pipe cannot know its length: it declares 0 (or 0xFFFFFFFF)
        at = data.index(b"data") + 4
        data = data[:at] + bytes(4) + data[at + 4:]
    code, out, err = run_on_stdin(capsys, monkeypatch, data, ckpt, *opts)
    assert code == 0 and by_path, err
    assert [{k: e[k] for k in ("label", "start", "end", "score")} for e in json_lines(out)] == by_path


def test_a_wav_on_stdin_that_is_not_16_bit_is_one_line(ckpt, tmp_path, capsys, monkeypatch):
    path = write_wav(tmp_path / "float.wav", tone(300, seconds=2), subtype="FLOAT")
    code, out, err = run_on_stdin(capsys, monkeypatch, path.read_bytes(), ckpt, "--format", "json")
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and out == "" and len(errors) == 1 and "16-bit PCM" in errors[0]
def test_unknown_detections_are_shown_only_when_asked_and_marked_not_keywords(ckpt, tmp_path, capsys):
    long = long_recording(tmp_path / "long.wav", 4.0)
    opts = [opt for opt in EVERY_RISE if opt != "--show-unknown"]
    _, out, _ = run_main(capsys, ckpt, long, "--format", "json", *opts)
    assert all(d["label"] != "_unknown_" for d in json_lines(out)[0]["detections"])
    _, out, _ = run_main(capsys, ckpt, long, "--format", "json", *EVERY_RISE)
    record = json_lines(out)[0]
    assert any(d["label"] == "_unknown_" for d in record["detections"])
    assert "_unknown_" not in record["label"].split()  # not among the keywords found
    _, out, _ = run_main(capsys, ckpt, long, *EVERY_RISE)
    assert "_unknown_ (not a keyword)@" in out


def calibrated(ckpt, tmp_path, points: list[tuple[float, float]], budget: float) -> Path:
    """A copy of the checkpoint with a side file of (threshold, false accepts per hour) points."""
    model = Path(shutil.copy(ckpt, tmp_path / "model.ckpt"))
    write_calibration(model, [dict(threshold=t, false_accepts=int(fa), fa_per_hour=fa) for t, fa in points], budget)
    return model


def test_transcribe_uses_the_calibrated_threshold_and_says_so(ckpt, tmp_path, capsys):
    long = long_recording(tmp_path / "long.wav", 4.0)
    model = calibrated(ckpt, tmp_path, [(0.0, 50.0), (0.99, 0.0)], budget=1)
    opts = ["--format", "json", "--suppression-ms", "0", "--show-unknown"]
    code, out, err = run_main(capsys, model, long, *opts)
    assert code == 0 and f"detection threshold 0.99 from {calibration_path(model)}" in err
    assert json_lines(out)[0]["detections"] == []  # nothing reaches 0.99 on an untrained model
    code, out, err = run_main(capsys, model, long, *opts, "--max-fa-per-hour", "100")  # another budget, same file
    assert code == 0 and "detection threshold 0 from" in err and len(json_lines(out)[0]["detections"]) >= 2
    _, _, err = run_main(capsys, model, long, *opts, "--detection-threshold", "0.5")  # an explicit one wins
    assert "from" not in err


def test_a_calibration_of_other_weights_is_ignored_and_a_missing_one_is_a_clear_error(ckpt, tmp_path, capsys):
    long = long_recording(tmp_path / "long.wav", 4.0)
    model = calibrated(ckpt, tmp_path, [(0.0, 50.0), (0.99, 0.0)], budget=1)
    record = json.loads(calibration_path(model).read_text())
    calibration_path(model).write_text(json.dumps(record | {"sha256": "0" * 64}))  # measured on another model
    code, _, err = run_main(capsys, model, long)
    assert code == 0 and f"ignoring {calibration_path(model)}: calibrated on other weights" in err
    calibration_path(model).unlink()
    code, out, err = run_main(capsys, model, long, "--max-fa-per-hour", "1")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: {calibration_path(model)}: no calibration for --max-fa-per-hour")


def test_a_budget_no_calibrated_threshold_meets_is_one_line(ckpt, tmp_path, capsys):
    model = calibrated(ckpt, tmp_path, [(0.5, 30.0), (0.99, 4.0)], budget=10)
    code, out, err = run_main(capsys, model, long_recording(tmp_path / "long.wav", 4.0), "--max-fa-per-hour", "1")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: --max-fa-per-hour 1: no threshold keeps") and "allow more false accepts" in err


def test_transcription_needs_nothing_but_the_checkpoint(ckpt, clips, tmp_path):
    """Only the .ckpt is copied; the training run and its data are moved away; the CLI runs elsewhere."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(ckpt, alone / "model.ckpt")
    expected_labels = [load_model(ckpt).labels[int(p.argmax())] for p in expected(ckpt, clips)]
    base = ckpt.parents[2]
    hidden = base.with_name(base.name + "_away")
    base.rename(hidden)
    try:
        res = subprocess.run([sys.executable, "-m", "speechrnn.transcribe", str(alone / "model.ckpt"),
                              *map(str, clips), "--format", "json"], cwd=alone, capture_output=True, text=True,
                             timeout=300)
    finally:
        hidden.rename(base)
    assert res.returncode == 0, res.stderr
    assert [r["label"] for r in json_lines(res.stdout)] == expected_labels


@pytest.mark.slow
@pytest.mark.parametrize("unbuffered", [False, True], ids=["output-flushed-at-exit", "output-written-at-once"])
def test_output_to_a_closed_pipe_ends_quietly(ckpt, clips, unbuffered):
    """``transcribe ... | head -2``: once the reader is gone the command stops, no traceback, status 141 (SIGPIPE)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:  # each print is written at once, and fails there
        env["PYTHONUNBUFFERED"] = "1"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line is written
    try:
        res = subprocess.run([sys.executable, "-m", "speechrnn.transcribe", str(ckpt), *map(str, clips)],
                             cwd=ROOT, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True,
                             timeout=300)
    finally:
        os.close(write_end)
    assert res.returncode == 141 and "BrokenPipeError" not in res.stderr, res.stderr


@pytest.mark.skipif(not (SHARED_DATA / "speech_commands_v2_test_A").is_dir(), reason="shared real clips absent")
def test_real_clips_with_odd_names_are_all_classified(ckpt, capsys):
    folder = SHARED_DATA / "speech_commands_v2_test_A"
    clips = sorted((folder / "_unknown_").glob("*.wav.wav"))[:40]
    code, out, err = run_main(capsys, ckpt, *clips, "--format", "json")
    assert code == 0, err
    assert len(json_lines(out)) == len(clips)
