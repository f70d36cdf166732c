"""Streaming: chunked features and RNN states equal the offline pass; smoothing; streaming accuracy."""

import csv
import itertools
import json
import shutil

import numpy as np
import pytest
import torch

from speechrnn.inference.detect import (RecognizeCommands, calibrate, calibration_path, detect_events, pick_threshold,
                              read_calibration, sweep, window_posteriors)
from speechrnn.data.layout import load_noise_dir
from speechrnn.model.spotter import KeywordSpotter
from speechrnn.inference.backends import TorchBackend
from speechrnn.inference.streaming import (EncoderStream, FeatureStream, RunningMean, StreamingSpotter, WindowedSpotter,
                                          window_geometry)
from speechrnn.evaluation.stream_score import NOISE_RMS, build_recording, field_score, score, window_probs
from speechrnn import streamtest
from speechrnn.streamtest import main as streamtest_main

from helpers import tone, write_wav

RATE = 16000
TONES = {"yes": 300.0, "no": 700.0, "up": 1500.0, "bed": 2500.0}  # as conftest's tone_folder
LABELS = ["yes", "no", "up", "_silence_", "_unknown_"]


pytestmark = pytest.mark.usefixtures("one_thread")


def spotter_model(kind: str = "rnn", deltas: int = 0, stack: int = 3, seed: int = 0,
                  cmn: bool | str = False) -> KeywordSpotter:
    """An untrained two-layer model with non-trivial normalisation statistics."""
    torch.manual_seed(seed)
    model = KeywordSpotter(LABELS, dict(n_mfcc=13, n_mels=20, deltas=deltas, stack=stack, cmn=cmn),
                           dict(kind=kind, hidden_size=16, num_layers=2))
    model.frontend.fit_normalization([0.1 * torch.randn(2, RATE)])
    return model.eval()


def chunks(wave: torch.Tensor, size: int) -> list[torch.Tensor]:
    return list(wave.split(size))


@pytest.mark.parametrize("deltas", [0, 1, 2])
@pytest.mark.parametrize("size", [37, 1000])
def test_feature_stream_equals_the_offline_frontend(deltas, size):
    mfcc = spotter_model(deltas=deltas).frontend
    wave = 0.1 * torch.randn(12_345)
    fs = FeatureStream(mfcc)
    streamed = torch.cat([fs.push(c) for c in chunks(wave, size)] + [fs.flush()])  # (T, F)
    offline = mfcc(wave[None])[0]
    assert streamed.shape == offline.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("deltas", [0, 2])
@pytest.mark.parametrize("size", [37, 1000])
def test_feature_stream_then_a_running_mean_equals_the_causal_frontend(deltas, size):
    mfcc = spotter_model(deltas=deltas, cmn="causal").frontend
    wave = 0.1 * torch.randn(12_345)
    fs, means = FeatureStream(mfcc), RunningMean(mfcc)
    steps = [fs.push(c) for c in chunks(wave, size)] + [fs.flush()]
    streamed = torch.cat([means.push(x[None])[0] for x in steps])  # (T, F), each chunk's as it comes
    torch.testing.assert_close(streamed, mfcc(wave[None])[0], atol=1e-5, rtol=0)


def test_feature_stream_computes_each_frame_once_and_keeps_under_a_window(monkeypatch):
    mfcc = spotter_model().frontend
    computed, cepstra = [], mfcc.cepstra
    monkeypatch.setattr(mfcc, "cepstra", lambda w: computed.append(cepstra(w)) or computed[-1])
    fs = FeatureStream(mfcc)
    wave = 0.1 * torch.randn(20_000)
    for c in chunks(wave, 333):
        fs.push(c)
        assert len(fs.tail) < mfcc.win_length  # only samples after the last complete frame are kept
    assert sum(c.shape[1] for c in computed) == 1 + (len(wave) - mfcc.win_length) // mfcc.hop_length


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("size", [37, 1000, 5000])
def test_streaming_hidden_states_equal_the_offline_forward_pass(kind, size):
    model = spotter_model(kind)
    wave = 0.1 * torch.randn(30_000)
    fs, states = FeatureStream(model.frontend), EncoderStream(model.encoder)
    hs = [states.step(x_t[None])[0] for c in chunks(wave, size) for x_t in fs.push(c)]
    hs += [states.step(x_t[None])[0] for x_t in fs.flush()]
    with torch.no_grad():
        offline_hs, _ = model.encoder(model.frontend(wave[None]))  # (1, T, H)
        offline_out = model.encoder.readout(offline_hs[0])
    streamed = torch.stack(hs)  # (T, H)
    assert streamed.shape == offline_hs[0].shape
    torch.testing.assert_close(streamed, offline_hs[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encoder.readout(streamed), offline_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cmn", [False, "causal"])
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("size", [37, 1000, 5000])
def test_staggered_states_give_the_offline_posterior_of_every_window(kind, size, cmn):
    """With cmn=causal each state also restarts its own running mean, so each window's frames are the offline clip's."""
    model = spotter_model(kind, stack=4, cmn=cmn)
    wave = 0.1 * torch.randn(40_000)
    spotter = StreamingSpotter(model)
    starts, probs = map(torch.cat, zip(*[spotter.push(c) for c in chunks(wave, size)], spotter.flush(pad=False)))
    assert starts.tolist() == list(range(0, len(starts) * spotter.stride, spotter.stride))
    assert starts[-1] + spotter.context <= len(wave) < starts[-1] + spotter.stride + spotter.context
    windows = torch.stack([torch.nn.functional.pad(wave[s: s + RATE], (0, max(0, s + RATE - len(wave))))
                           for s in starts.tolist()])
    with torch.no_grad():
        offline = model(windows).softmax(-1)  # (P, C)
    torch.testing.assert_close(probs, offline, atol=1e-5, rtol=0)


def test_windowed_spotter_gives_the_streaming_posteriors():
    model = spotter_model()
    backend = TorchBackend(model)
    wave = 0.1 * torch.randn(25_000)
    streaming = StreamingSpotter(model)
    windowed = WindowedSpotter(backend.predict, len(LABELS), RATE, RATE, streaming.stride, streaming.context)
    results = []
    for spotter in (streaming, windowed):
        results.append(list(map(torch.cat, zip(*[spotter.push(c) for c in chunks(wave, 2001)], spotter.flush()))))
    assert results[0][0].tolist() == results[1][0].tolist()
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cmn", [True, "clip"])
def test_a_per_clip_mean_model_streams_by_whole_windows_with_the_offline_posteriors(cmn):
    model = spotter_model(cmn=cmn)
    with pytest.raises(ValueError, match="features.cmn"):
        StreamingSpotter(model)
    spotter = TorchBackend(model).spotter()
    assert isinstance(spotter, WindowedSpotter)
    wave = 0.1 * torch.randn(25_000)
    starts, probs = map(torch.cat, zip(*[spotter.push(c) for c in chunks(wave, 3001)], spotter.flush(pad=False)))
    windows = torch.stack([torch.nn.functional.pad(wave[s: s + RATE], (0, max(0, s + RATE - len(wave))))
                           for s in starts.tolist()])
    with torch.no_grad():
        torch.testing.assert_close(probs, model(windows).softmax(-1), atol=1e-5, rtol=0)


def test_a_causal_mean_model_streams_frame_by_frame():
    spotter = TorchBackend(spotter_model(cmn="causal")).spotter()
    assert isinstance(spotter, StreamingSpotter) and spotter.means.total.shape == (spotter.window, 1, 13)


def onehot(label: str) -> torch.Tensor:
    p = torch.full((len(LABELS),), 0.02)
    p[LABELS.index(label)] = 1 - 0.02 * (len(LABELS) - 1)
    return p


def test_recognizer_fires_once_per_command_after_minimum_count():
    rc = RecognizeCommands(LABELS, average_window_ms=500, threshold=0.7, suppression_ms=500, minimum_count=3)
    fired = [rc.process(t, onehot("yes")) for t in range(0, 1000, 100)]
    assert fired[:2] == [None, None]  # fewer than 3 results, and under a quarter window
    assert [f[0] for f in fired if f] == ["yes"]  # the same label does not fire twice in a row
    assert fired[2] is not None and fired[2][1] > 0.7


def feed(rc: RecognizeCommands, label: str, t0: int, t1: int, step: int = 50) -> list[tuple[str, int]]:
    """Posteriors of ``label`` every ``step`` ms in [t0, t1); the commands fired, with their times."""
    return [(f[0], t) for t in range(t0, t1, step) if (f := rc.process(t, onehot(label)))]


def mix(scores: dict[str, float]) -> torch.Tensor:
    """A posterior with the given scores, the rest spread evenly over the other labels."""
    rest = (1 - sum(scores.values())) / (len(LABELS) - len(scores))
    return torch.tensor([scores.get(label, rest) for label in LABELS])


def recognise(rc: RecognizeCommands, posteriors: list[torch.Tensor], step_ms: int = 80) -> list[tuple[str, int]]:
    """Posteriors one window every ``step_ms`` (as the spotter gives them); the detections, with their times."""
    return [(f[0], t) for t, p in zip(range(0, step_ms * len(posteriors), step_ms), posteriors)
            if (f := rc.process(t, p))]


def test_one_word_whose_top_label_flips_between_two_keywords_gives_one_detection():
    """2.4 s of windows overlap one word; their top label goes yes, no, yes. Then a lull, then the next word."""
    silence, yes, no = mix({"_silence_": 0.9}), mix({"yes": 0.7, "no": 0.2}), mix({"no": 0.7, "yes": 0.2})
    word = [yes] * 10 + [no] * 10 + [yes] * 10  # 30 windows, 80 ms apart
    found = recognise(RecognizeCommands(LABELS), [silence] * 10 + word + [silence] * 10 + [no] * 10 + [silence] * 5)
    assert [label for label, _ in found] == ["yes", "no"]
    assert 800 <= found[0][1] < 800 + 2400 <= found[1][1]  # the first during the word, the second after it


def test_unknown_and_silence_are_not_keywords_and_shown_only_when_asked():
    silence, unknown, yes = mix({"_silence_": 0.9}), mix({"_unknown_": 0.9}), mix({"yes": 0.9})
    stream = [silence] * 10 + [unknown] * 8 + [yes] * 8 + [silence] * 20 + [unknown] * 10
    found = recognise(RecognizeCommands(LABELS), stream)
    assert [label for label, _ in found] == ["yes"]
    shown = recognise(RecognizeCommands(LABELS, report_unknown=True), stream)
    assert [label for label, _ in shown] == ["_unknown_", "yes", "_unknown_"]
    assert [d for d in shown if d[0] == "yes"] == found  # an unknown onset does not hide the keyword


def test_windows_mostly_padding_give_no_detection_and_the_rest_of_the_tail_is_covered():
    """A stand-in model that, as trained ones did, calls sound followed by digital silence a word."""
    def predict(clips):  # (B, clip) -> (B, C): "yes" where the window's second half is padding
        padded = (clips[:, RATE // 2:] == 0).all(-1)
        return torch.stack([onehot("yes") if p else onehot("_silence_") for p in padded])

    clip_samples, _, stride, context = window_geometry(spotter_model(stack=8).frontend)
    spotter = WindowedSpotter(predict, len(LABELS), RATE, clip_samples, stride, context)
    wave = 0.01 * torch.randn(round(3.3 * RATE))  # a recording that ends in noise
    assert list(detect_events(spotter, wave.split(1600), RecognizeCommands(LABELS))) == []
    starts = torch.cat([s for s, _, _ in window_posteriors(spotter, wave.split(1600))])
    assert len(wave) - 0.75 * RATE - stride < starts[-1] <= len(wave) - 0.75 * RATE


def test_recognizer_validates_its_settings():
    with pytest.raises(ValueError, match="threshold"):
        RecognizeCommands(LABELS, threshold=1.5)
    with pytest.raises(ValueError, match="minimum_count"):
        RecognizeCommands(LABELS, minimum_count=0)


def test_score_matches_detections_within_the_tolerance():
    truth = [("yes", 1.0), ("no", 4.0), ("up", 8.0)]
    found = [("yes", 1.5), ("yes", 1.6), ("down", 4.2), ("go", 6.0)]
    s = score(truth, found, tolerance_s=0.75)
    assert (s["matched"], s["correct"], s["wrong"], s["false_alarms"]) == (2, 1, 1, 2)
    assert s["matched_pct"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert s["false_alarms_pct"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert score(truth, [("yes", 1.8)], tolerance_s=0.75)["false_alarms"] == 1  # 0.8 s away


def test_field_score_counts_correct_wrong_missed_and_false_accepts_per_hour():
    truth = [("yes", 1.0), ("no", 4.0), ("_unknown_", 6.0), ("up", 8.0), ("yes", 12.0)]
    found = [("yes", 1.2),  # correct
             ("yes", 1.5),  # a second detection of a word already taken: false accept
             ("up", 4.1),  # wrong
             ("no", 6.1),  # on a word that is no keyword: false accept
             ("no", 10.0)]  # on noise: false accept
    s = field_score(truth, found, seconds=360, tolerance_s=0.75)
    assert (s["keywords"], s["correct"], s["wrong"], s["missed"], s["false_accepts"]) == (4, 1, 1, 2, 3)
    assert s["fa_per_hour"] == pytest.approx(3 * 3600 / 360)
    assert s["miss_rate"] == pytest.approx(1 - 1 / 4)  # a keyword heard as another is missed too


def noise_folder(tmp_path, seconds: float = 20.0):
    """A folder of two noise recordings, neither of them digital silence."""
    g = np.random.default_rng(5)
    write_wav(tmp_path / "noise" / "white.wav", (0.2 * g.standard_normal(int(seconds * RATE))).astype(np.float32))
    hum = 0.05 * np.sin(2 * np.pi * 120 * np.arange(int(seconds * RATE)) / RATE)
    write_wav(tmp_path / "noise" / "hum.wav", hum.astype(np.float32))
    return tmp_path / "noise"


def test_the_same_seed_gives_the_same_recording_over_real_noise(tone_folder, tmp_path):
    noises = load_noise_dir(noise_folder(tmp_path))

    def recording(seed):
        return build_recording(tone_folder, LABELS, 30, np.random.default_rng(seed), noises=noises, snr_db=(5, 15))

    (a, truth_a), (b, truth_b), (c, truth_c) = recording(0), recording(0), recording(1)
    assert truth_a == truth_b and np.array_equal(a, b)
    assert truth_a != truth_c and not np.array_equal(a, c)


def test_words_are_mixed_at_the_signal_to_noise_ratio_asked(tone_folder, tmp_path):
    """SNR = speech RMS (over the word's active frames) over noise RMS, the noise held at -40 dBFS."""
    wave, truth = build_recording(tone_folder, LABELS, 30, np.random.default_rng(0),
                                  noises=load_noise_dir(noise_folder(tmp_path)), snr_db=(10, 10))
    speech = np.zeros(len(wave), bool)
    for _, t in truth:
        speech[round(t * RATE): round(t * RATE) + RATE] = True
    noise_power = np.mean(wave[~speech].astype(np.float64) ** 2)
    assert 10 * np.log10(noise_power / NOISE_RMS ** 2) == pytest.approx(0, abs=1.5)
    for _, t in truth:  # the tones fill their clip: the word's middle is active speech plus noise
        middle = wave[round(t * RATE) + 2000: round(t * RATE) + RATE - 2000].astype(np.float64)
        assert 10 * np.log10(np.mean(middle ** 2) / noise_power - 1) == pytest.approx(10, abs=1.5)


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.argmax(spectrum) * RATE / len(x))


def test_recording_skips_an_unreadable_noise_file_and_uses_the_good_ones(tone_folder, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(tone_folder, root)
    (root / "_background_noise_" / "broken.wav").write_text("not audio")
    wave, _ = build_recording(root, LABELS, 10, np.random.default_rng(0), split="testing",
                              word_gap_ms=1000, unknown_percentage=0, background_volume=0.5)
    assert "broken.wav" in caplog.text and "skipping background noise" in caplog.text
    assert np.abs(wave[: RATE // 2]).max() > 0  # noise from the readable file before the first word


def test_recording_puts_each_labelled_word_at_its_time(tone_folder):
    wave, truth = build_recording(tone_folder, LABELS, 40, np.random.default_rng(0), split="testing",
                                  word_gap_ms=1000, unknown_percentage=30, background_volume=0.0)
    assert len(wave) == 40 * RATE and len(truth) == 20
    assert {label for label, _ in truth} >= {"_unknown_", "yes"}
    speech = np.zeros(len(wave), bool)
    for label, t in truth:
        i = round(t * RATE)
        speech[i: i + RATE] = True
        base = TONES["bed" if label == "_unknown_" else label]
        assert abs(dominant_hz(wave[i + 1000: i + RATE - 1000]) / base - 1.05) < 0.03  # test speakers: +4 %, +6 %
    assert not wave[~speech].any()  # no background asked for: silence between words


@pytest.fixture(scope="module")
def tone_model(tmp_path_factory):
    """A model trained (a plain loop, ~2 s) to spot tones of any length at any offset; its checkpoint."""
    torch.manual_seed(0)
    model = spotter_model(stack=8)
    g = np.random.default_rng(0)

    def clip(label: str) -> torch.Tensor:
        x = 0.01 * g.standard_normal(RATE)
        if label != "_silence_":
            n = int(g.uniform(0.4, 1.0) * RATE)
            start = int(g.integers(0, RATE - n + 1))
            f = TONES["bed" if label == "_unknown_" else label] * g.uniform(0.95, 1.1)
            x[start: start + n] += tone(f, seed=int(g.integers(1000)))[:n]
        return torch.from_numpy(x.astype(np.float32))

    model.frontend.fit_normalization([torch.stack([clip(lb) for lb in LABELS * 4])])
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(120):
        y = torch.from_numpy(g.integers(0, len(LABELS), 32))
        x = torch.stack([clip(LABELS[i]) for i in y.tolist()])
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("tone_model") / "tones.ckpt"
    hparams = dict(labels=LABELS, features=dict(n_mfcc=13, n_mels=20, deltas=0, stack=8),
                   encoder=dict(kind="rnn", hidden_size=16, num_layers=2))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path, model.eval()


def test_detector_finds_keywords_when_they_occur(tone_model):
    _, model = tone_model
    wave = 0.01 * np.random.default_rng(1).standard_normal(10 * RATE).astype(np.float32)
    placed = [("yes", 1.0), ("up", 4.0), ("no", 7.0)]
    for label, t in placed:
        wave[int(t * RATE): int(t * RATE) + RATE] += tone(TONES[label] * 1.04, seed=3)
    events = list(detect_events(StreamingSpotter(model), torch.from_numpy(wave).split(1600),
                                RecognizeCommands(LABELS, threshold=0.6)))
    assert [e["label"] for e in events] == [label for label, _ in placed]
    for e, (_, t) in zip(events, placed):
        assert abs(e["start"] - t) <= 0.75 and e["end"] == pytest.approx(e["start"] + 1.0)


def test_streamtest_writes_recording_labels_and_report(tone_model, tone_folder, tmp_path, capsys):
    ckpt, _ = tone_model
    args = ["--model", str(ckpt), "--data", str(tone_folder), "--minutes", "1", "--detection-threshold", "0.6"]
    assert streamtest_main([*args, "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "a" / "labels.csv")))
    streaming = report["models"][0]["streaming"]
    assert report["words"] == streaming["words"] == len(rows) == 20
    assert streaming["correct"] + streaming["wrong"] == streaming["matched"]
    assert streaming["correct_pct"] == pytest.approx(100 * streaming["correct"] / streaming["words"], abs=0.01)
    at = {q["threshold"]: q for q in report["models"][0]["points"]}[0.6]  # the detection threshold is on the curve
    assert at["correct_pct"] >= 75 and at["fa_per_hour"] <= 120  # tones are easy; the model is tiny
    assert "% matched" in capsys.readouterr().out
    # the written pair evaluates to the same figures
    assert streamtest_main([*args, "--out", str(tmp_path / "b"), "--wav", str(tmp_path / "a" / "stream.wav"),
                            "--labels", str(tmp_path / "a" / "labels.csv")]) == 0
    again = json.loads((tmp_path / "b" / "report.json").read_text())["models"][0]
    assert again["streaming"] == streaming and again["points"] == report["models"][0]["points"]


def test_streamtest_reports_each_models_real_time_factor(tone_model, tone_folder, tmp_path, capsys, monkeypatch):
    """A fake clock: the pass over 30 s of audio takes 1.5 s of processing, a real-time factor of 0.05."""
    ckpt, _ = tone_model
    monkeypatch.setattr(streamtest, "perf_counter", itertools.count(100.0, 1.5).__next__)
    assert streamtest_main(["--model", str(ckpt), "--data", str(tone_folder), "--minutes", "0.5", "--threads", "1",
                            "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["seconds"] == 30 and report["threads"] == 1
    assert report["models"][0]["processing_seconds"] == 1.5 and report["models"][0]["real_time_factor"] == 0.05
    assert "streamed 30.0 s of audio in 1.50 s of processing: real-time factor 0.050 on 1 thread(s)" in \
        capsys.readouterr().out


def test_the_sweep_replays_the_live_detector_at_each_threshold(tone_model, tone_folder):
    """Posteriors computed once, decisions replayed per threshold: what the streaming detector finds at each."""
    ckpt, model = tone_model
    wave, _ = build_recording(tone_folder, LABELS, 30, np.random.default_rng(0), word_gap_ms=1000)
    backend = TorchBackend(model)
    times, probs = window_probs(backend, wave)
    found = sweep(times, probs, LABELS, [0.4, 0.7, 0.9], dict(threshold=0.5, suppression_ms=1000))
    for threshold, detections in found.items():
        live = detect_events(backend.spotter(), torch.from_numpy(wave).split(1600),
                             RecognizeCommands(LABELS, threshold=threshold))
        assert [(label, round(ms / 1000, 3)) for label, ms in detections] == [(e["label"], e["start"]) for e in live]
    assert len(found[0.4]) >= 5  # the recording's keywords are found


def test_the_default_sweeps_are_finest_where_always_on_budgets_sit():
    """Even steps in log-odds: under 0.001 apart above 0.99, where the scores of a budget of a false accept an
    hour crowd, and no coarser than 0.02 around the default threshold."""
    for grid, low in ((streamtest.THRESHOLDS, 0.3), (streamtest.CALIBRATION_THRESHOLDS, 0.05)):
        t = np.array(grid)
        assert t[0] == low and t[-1] == 0.9999 and np.all(np.diff(t) > 0)
        np.testing.assert_allclose(np.diff(np.log(t / (1 - t))), np.log(t[1] / (1 - t[1])) - np.log(low / (1 - low)),
                                   rtol=0.01)  # to the rounding of 8 decimals
        assert np.diff(t[t >= 0.99]).max() < 1e-3 and np.diff(t[(t > 0.4) & (t < 0.6)]).max() < 0.02


def test_streamtest_sweeps_each_model_once_and_draws_their_curves(tone_model, tone_folder, tmp_path, monkeypatch):
    ckpt, _ = tone_model
    models = [shutil.copy(ckpt, tmp_path / name) for name in ("a.ckpt", "b.ckpt")]
    runs = []
    spotter = TorchBackend.spotter
    monkeypatch.setattr(TorchBackend, "spotter", lambda self: runs.append(1) or spotter(self))
    args = ["--data", str(tone_folder), "--noise", str(noise_folder(tmp_path)), "--snr-db", "10", "--minutes", "0.5",
            "--thresholds", "0.5", "0.7", "0.9", "--out", str(tmp_path / "out")]
    assert streamtest_main([*args, "--model", str(models[0]), "--model", str(models[1])]) == 0
    assert len(runs) == 2  # the model runs once per model, not once per threshold
    curves = json.loads((tmp_path / "out" / "curve.json").read_text())["curves"]
    assert list(curves) == [str(m) for m in models]
    assert [[q["threshold"] for q in points] for points in curves.values()] == [[0.5, 0.7, 0.9]] * 2
    assert (tmp_path / "out" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_streamtest_writes_its_table_command_and_curve_into_the_readme(tone_model, tone_folder, tmp_path):
    ckpt, _ = tone_model
    readme = tmp_path / "README.md"
    readme.write_text("# R\n<!-- streamtest:begin -->\nan earlier table\n<!-- streamtest:end -->\nafter\n")
    args = ["--model", str(ckpt), "--data", str(tone_folder), "--minutes", "0.5", "--seed", "3",
            "--out", str(tmp_path / "out"), "--readme", str(readme)]
    assert streamtest_main(args) == 0
    text = readme.read_text()
    table = text.split("<!-- streamtest:begin -->\n")[1].split("<!-- streamtest:end -->")[0]
    report = json.loads((tmp_path / "out" / "report.json").read_text())["models"][0]
    at_1 = report["operating_points"]["1"]
    row = [line for line in table.splitlines() if line.startswith(f"| {ckpt} |")]
    assert row and f"{at_1['correct_pct']:.1f} %" in row[0].split(" | ")[3]  # the <= 1 FA/hour column
    assert "0.5 minutes" in table and "seed 3" in table and "earlier" not in table and text.endswith("after\n")
    assert f"`python -m speechrnn.streamtest {' '.join(args)}`" in table
    assert (tmp_path / "docs" / "streaming-curve.png").read_bytes() == (tmp_path / "out" / "curve.png").read_bytes()
    assert "](docs/streaming-curve.png)" in table


def test_streamtest_refuses_a_readme_without_its_markers_before_running(tone_model, tone_folder, tmp_path, capsys):
    ckpt, _ = tone_model
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit) as exit_:
        streamtest_main(["--model", str(ckpt), "--data", str(tone_folder), "--out", str(tmp_path / "out"),
                         "--readme", str(readme)])
    assert exit_.value.code == 2 and "<!-- streamtest:begin -->" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_calibration_picks_the_lowest_threshold_from_which_every_higher_one_keeps_the_budget():
    detections = {0.3: [], 0.4: [("yes", 0)] * 5, 0.5: [("yes", 0)] * 2, 0.6: [("no", 0)], 0.7: []}  # in one hour
    points = calibrate(detections, seconds=3600)
    assert [q["fa_per_hour"] for q in points] == [0, 5, 2, 1, 0]
    assert pick_threshold(points, 1)["threshold"] == 0.6  # not 0.3, whose detector stayed disarmed in noise
    assert pick_threshold(points, 2)["threshold"] == 0.5
    assert pick_threshold(points, 0)["threshold"] == 0.7
    assert pick_threshold(calibrate({0.9: [("yes", 0)]}, 3600), 0.5) is None


def test_calibrate_on_noise_writes_the_side_file_transcribe_reads(tone_model, tmp_path, capsys):
    ckpt, _ = tone_model
    model = shutil.copy(ckpt, tmp_path / "model.ckpt")
    assert streamtest_main(["--model", str(model), "--calibrate", "--noise", str(noise_folder(tmp_path)),
                            "--minutes", "0.5", "--max-fa-per-hour", "10"]) == 0
    record = json.loads(calibration_path(model).read_text())
    assert record["threshold"] == pick_threshold(record["points"], 10)["threshold"]
    assert all(q["fa_per_hour"] == pytest.approx(q["false_accepts"] * 120) for q in record["points"])
    assert read_calibration(model)[0] == record["threshold"]
    assert str(calibration_path(model)) in capsys.readouterr().out


def test_a_noise_folder_without_recordings_is_one_line(tone_model, tone_folder, tmp_path, capsys):
    ckpt, _ = tone_model
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit:
        streamtest_main(["--model", str(ckpt), "--data", str(tone_folder), "--noise", str(tmp_path / "empty"),
                         "--minutes", "0.5", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'empty'}: --noise has no readable .wav recordings")
