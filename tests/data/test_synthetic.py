"""data/synthetic.py, data/neural_voice.py and the synth command: an espeak-ng (and neural-voice) corpus in the
exact Speech Commands layout, deterministic and built once."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from speechrnn.data import synthetic as synth
from speechrnn.data.layout import DatasetError
from speechrnn.data.noise import NOISES
from speechrnn.data.neural_voice import NeuralVoice, sample_neural_voices, speak_phonemes
from speechrnn.data.synthetic import MARKER, Voice, generate_corpus, phonemes, sample_speakers, synthesize
from speechrnn.synth import main
from speechrnn.training.config import compose

from helpers import killed_writers_leftover, needs_posix_signals

SMALL = dict(words=("yes", "no", "up"), num_speakers=6, val_speakers=1, test_speakers=1, neural_speakers=2,
             noise_seconds=1.0, progress=False)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def speakers_of(names) -> set[str]:
    return {Path(n).name.split("_nohash_")[0] for n in names}


def train_clips(root: Path) -> set[str]:
    held_out = set((root / "validation_list.txt").read_text().split()) | set((root / "testing_list.txt").read_text().split())
    return {f"{p.parent.name}/{p.name}" for p in root.glob("*/*_nohash_*.wav")} - held_out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return generate_corpus(tmp_path_factory.mktemp("synth") / "sc", seed=0, **SMALL)


def test_layout_and_wav_format_match_speech_commands(corpus):
    assert sorted(p.name for p in corpus.iterdir() if p.is_dir()) == ["_background_noise_", "no", "up", "yes"]
    clips = sorted(corpus.glob("*/*_nohash_*.wav"))
    assert len(clips) == 3 * (6 + 2)  # 6 espeak-ng speakers and 2 neural ones
    for path in clips:
        assert re.fullmatch(r"[0-9a-f]{8}_nohash_0\.wav", path.name)
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
    assert sorted(p.stem for p in (corpus / "_background_noise_").glob("*.wav")) == sorted(NOISES)
    for path in (corpus / "_background_noise_").glob("*.wav"):
        x, rate = sf.read(path, dtype="float32")
        assert rate == 16000 and len(x) == 16000 and 0.01 < x.std() < 0.2
    assert (corpus / "README.md").read_text().startswith(synth.README_TITLE)
    assert json.loads((corpus / MARKER).read_text())["params"]["seed"] == 0


def test_lists_name_existing_clips_of_held_out_speakers(corpus):
    val = (corpus / "validation_list.txt").read_text().splitlines()
    test = (corpus / "testing_list.txt").read_text().splitlines()
    assert len(val) == len(test) == 3  # one speaker x three words each
    assert all((corpus / name).is_file() for name in val + test)
    train = speakers_of(train_clips(corpus))
    assert len(train) == 4 + 2  # the neural speakers train only: they are all one person
    assert not speakers_of(val) & train and not speakers_of(test) & train and not speakers_of(val) & speakers_of(test)
    neural = {v.speaker_id for v in sample_neural_voices(2, 0, synth.ACCENTS)}
    assert neural < train


def test_a_corpus_without_neural_speakers_keeps_the_marker_it_had(tmp_path):
    params = json.loads((generate_corpus(tmp_path / "sc", seed=0, **(SMALL | dict(neural_speakers=0))) / MARKER)
                        .read_text())["params"]
    assert not {"neural_speakers", "neural_voice", "neural_noise"} & params.keys()  # corpora made before stay valid


def test_held_out_speakers_use_voices_no_training_speaker_uses():
    split = sample_speakers(200, 20, 20, seed=3)
    pairs = {s: {(v.accent, v.variant) for v in voices} for s, voices in split.items()}
    assert [len(v) for v in split.values()] == [160, 20, 20]
    assert not pairs["training"] & pairs["validation"] and not pairs["training"] & pairs["testing"]
    assert not pairs["validation"] & pairs["testing"]
    ids = [v.speaker_id for voices in split.values() for v in voices]
    assert len(set(ids)) == len(ids)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(corpus, tmp_path):
    synthesize("marvin", Voice("en-gb-scotland", "klatt", 150))  # leave espeak in a used state first
    again = generate_corpus(tmp_path / "again", seed=0, **SMALL)
    assert tree(again) == tree(corpus)
    other = tree(generate_corpus(tmp_path / "other", seed=1, **SMALL))
    assert other.keys() != tree(corpus).keys()  # new speakers, so new file names
    assert other["_background_noise_/white_noise.wav"] != tree(corpus)["_background_noise_/white_noise.wav"]


@pytest.mark.slow  # spawns two processes, each importing torch
def test_worker_processes_write_the_same_corpus_as_one(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "PARALLEL_MIN_CLIPS", 1)  # a small corpus takes the process pool too
    spawned = []
    real_pool = synth.ProcessPoolExecutor
    monkeypatch.setattr(synth, "ProcessPoolExecutor", lambda n, **kw: spawned.append(n) or real_pool(n, **kw))
    assert tree(generate_corpus(tmp_path / "two", seed=0, workers=2, **SMALL)) == tree(corpus)
    assert spawned == [2]


def test_second_call_reuses_the_corpus_untouched(tmp_path):
    root = generate_corpus(tmp_path / "sc", seed=0, **SMALL)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    assert generate_corpus(root, seed=0, **SMALL) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == mtimes


def test_a_corpus_made_with_other_parameters_is_refused_and_left_untouched(corpus):
    before = tree(corpus)
    with pytest.raises(DatasetError, match=r"other parameters \(words: 3 there, 3 asked \(adds \[go\], drops \[up\]\); "
                                           r"seed: 0 there, 1 asked\).*new data.root=.*delete the folder yourself"):
        generate_corpus(corpus, seed=1, **{**SMALL, "words": ("yes", "no", "go")})
    assert tree(corpus) == before
    assert not list(corpus.parent.glob(".sc.*"))  # nothing was built beside it either


def test_a_folder_with_a_users_file_is_refused_and_left_untouched_even_if_it_looks_like_a_corpus(corpus, tmp_path):
    root = tmp_path / "sc"
    shutil.copytree(corpus, root)
    (root / MARKER).unlink()  # a corpus's README and clips, but no marker: whose it is cannot be told
    (root / "yes" / "my_recording.wav").write_bytes(b"RIFF mine")
    before = tree(root)
    with pytest.raises(DatasetError, match="not a complete synthetic corpus.*data=folder"):
        generate_corpus(root, seed=0, **SMALL)
    assert tree(root) == before


def test_interrupted_generation_leaves_no_corpus_and_the_next_run_completes_it(tmp_path, monkeypatch):
    root = tmp_path / "sc"
    calls = []

    def dies_on_fifth(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return render(*args)

    render = synth.render_clip
    monkeypatch.setattr(synth, "render_clip", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(root, seed=1, **SMALL)
    assert not root.exists()  # only the hidden staging folder holds the half-built corpus
    monkeypatch.setattr(synth, "render_clip", render)
    generate_corpus(root, seed=1, **SMALL)
    assert json.loads((root / MARKER).read_text())["params"]["seed"] == 1
    assert not list(tmp_path.glob(".sc.*"))


@needs_posix_signals
def test_what_a_killed_generation_left_is_swept_by_the_next(tmp_path):
    stage, old = killed_writers_leftover(tmp_path / "sc", ".partial"), killed_writers_leftover(tmp_path / "sc", ".old")
    generate_corpus(tmp_path / "sc", seed=0, **SMALL)
    assert not stage.exists() and not old.exists()


def test_refuses_to_overwrite_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a complete synthetic corpus"):
        generate_corpus(tmp_path, **SMALL)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def speech_seconds(wave: np.ndarray, rate: int, floor_db: float = -45) -> float:
    """Seconds of 10 ms frames louder than floor_db relative to the loudest frame."""
    hop = rate // 100
    frames = wave[: len(wave) // hop * hop].astype(np.float64).reshape(-1, hop)
    rms = np.sqrt((frames ** 2).mean(axis=1)) + 1e-9
    return float((20 * np.log10(rms / rms.max()) > floor_db).sum() / 100)


def high_band_share(wave: np.ndarray, rate: int) -> float:
    """Share of the energy above 3 kHz: large for fricatives (s, ks), small for nasals and vowels."""
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    return float(power[np.fft.rfftfreq(len(wave), 1 / rate) > 3000].sum() / power.sum())


def test_synthesized_word_is_speech_not_silence():
    wave, rate = synthesize("seven", Voice("en-us", "m3"))
    assert rate == 22050 and wave.dtype == np.int16
    assert np.sqrt(np.mean(wave.astype(np.float64) ** 2)) > 1000  # about -30 dBFS or louder
    assert 0.3 < speech_seconds(wave, rate) < 1.0


def test_different_words_sound_different():
    voice = Voice("en-gb-x-rp", "f2", 160)
    six, rate = synthesize("six", voice)
    no, _ = synthesize("no", voice)
    assert high_band_share(six, rate) > 5 * high_band_share(no, rate)  # /s/ and /ks/ against a nasal and a vowel


def test_synthesis_is_independent_of_what_came_before():
    voice = Voice("en-029", "m7", 170, 40, 60)
    first, _ = synthesize("happy", voice)
    for word in ("backward", "sheila", "zero"):
        synthesize(word, Voice("en-us-nyc", "grandma", 140))
    assert np.array_equal(synthesize("happy", voice)[0], first)


def test_clips_hold_the_word_inside_the_second(corpus):
    for path in sorted(corpus.glob("*/*_nohash_*.wav")):
        x, _ = sf.read(path, dtype="float32")
        assert 0.1 < speech_seconds(x, 16000, floor_db=-30) < 0.95  # the noise floor is >= 38 dB down
        assert np.abs(x[:160]).max() < 0.01 and np.abs(x[-160:]).max() < 0.01  # faint noise at the edges
        assert np.abs(x).max() > 0.1


def test_phonemes_are_espeaks_ipa_and_follow_the_accent():
    assert phonemes("yes", "en-us") == "jˈɛs"
    assert phonemes("right", "en-us") != phonemes("right", "en-gb-scotland")  # ɹ against a trilled r
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        phonemes("yes", "xx-nowhere")


def spectral_centroid(wave: np.ndarray, rate: int = 16000) -> float:
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    return float((power * np.fft.rfftfreq(len(wave), 1 / rate)).sum() / power.sum())


def test_a_neural_voice_speaks_a_pure_function_of_its_generator():
    ipa, voice = phonemes("seven", "en-us"), NeuralVoice("en-us", vtl=1.1, noise=0.8)
    first = speak_phonemes(ipa, voice, np.random.default_rng(1))
    assert first.dtype == np.float32 and first.ndim == 1
    assert 0.3 < speech_seconds(first, 16000, floor_db=-30) < 0.9
    assert np.array_equal(speak_phonemes(ipa, voice, np.random.default_rng(1)), first)
    other = speak_phonemes(ipa, voice, np.random.default_rng(2))  # the model's noise: another rendering
    assert other.shape != first.shape or not np.array_equal(other, first)


def test_a_larger_vtl_moves_the_spectrum_up_and_keeps_the_tempo():
    ipa = phonemes("marvin", "en-us")
    low, high = (speak_phonemes(ipa, NeuralVoice("en-us", vtl=v), np.random.default_rng(0)) for v in (0.85, 1.25))
    assert spectral_centroid(high) > 1.3 * spectral_centroid(low)
    assert 0.8 < len(high) / len(low) < 1.25


def test_the_slowest_neural_voice_speaks_a_long_phrase():
    # the model's noise inputs must cover every frame it speaks: a fixed buffer sized for single words
    # failed inside onnxruntime (a Reshape) on a phrase at the slowest tempo and longest vocal tract
    ipa = phonemes("turn the kitchen lights off and close the windows", "en-us")
    speech = speak_phonemes(ipa, NeuralVoice("en-us", vtl=1.4, length=2.0), np.random.default_rng(0), tempo=1.07)
    assert len(speech) > 4 * 16000  # over 6 s from the model, played 1.4 times faster: many times a keyword


def test_neural_voice_rejects_bad_values():
    with pytest.raises(ValueError, match="vtl"):
        NeuralVoice("en-us", vtl=2.0)
    with pytest.raises(ValueError, match="accent"):
        NeuralVoice("en-us+m3")
    voices = sample_neural_voices(20, 0, ("en-us", "en"))
    assert len({v.speaker_id for v in voices}) == 20 and {v.accent for v in voices} == {"en-us", "en"}
    assert re.fullmatch(r"[0-9a-f]{8}", voices[0].speaker_id)


def test_voice_rejects_bad_values():
    with pytest.raises(ValueError, match="variant 'robot9'"):
        Voice("en-us", "robot9")
    with pytest.raises(ValueError, match="rate"):
        Voice("en-us", "m3", rate=20)
    with pytest.raises(ValueError, match=r"pitch must be an int in \[0, 99\], got 50.5"):
        Voice("en-us", "m3", pitch=50.5)
    with pytest.raises(ValueError, match="accent"):
        Voice("en-us+m3", "m3")
    with pytest.raises(ValueError, match="no voice 'xx-nowhere'"):
        synthesize("yes", Voice("xx-nowhere", "m3"))
    assert re.fullmatch(r"[0-9a-f]{8}", Voice("en-us", "m3").speaker_id)
    assert Voice("en-us", "m3").speaker_id != Voice("en-us", "m3", pitch=51).speaker_id


def test_cli_generates_and_summarises(tmp_path, capsys):
    main(["--root", str(tmp_path / "cli"), "--words", "yes,no", "--num-speakers", "4", "--val-speakers", "1",
          "--test-speakers", "1", "--neural-speakers", "0", "--noise-seconds", "1"])
    out = capsys.readouterr().out
    assert "8 clips, 4 speakers (2 train / 1 val / 1 test)" in out, out
    assert len(list((tmp_path / "cli").glob("*/*_nohash_*.wav"))) == 8
    main(["--root", str(tmp_path / "cli"), "--words", "yes,no", "--num-speakers", "4", "--val-speakers", "1",
          "--test-speakers", "1", "--neural-speakers", "0", "--noise-seconds", "1"])
    assert "reused" in capsys.readouterr().out
    main(["--root", str(tmp_path / "neural"), "--words", "yes", "--num-speakers", "3", "--val-speakers", "1",
          "--test-speakers", "1", "--neural-speakers", "2", "--noise-seconds", "1"])
    assert "5 clips, 3 speakers (1 train / 1 val / 1 test) + 2 neural speakers (train)" in capsys.readouterr().out


def test_cli_without_arguments_builds_the_corpus_training_would_synthesise(tmp_path, monkeypatch, capsys):
    calls = []

    def recorded(root, **kwargs):  # stands in for the minutes of synthesis: what was asked, and a marker
        calls.append((str(root), kwargs))
        Path(root).mkdir(parents=True)
        (Path(root) / MARKER).write_text(json.dumps({"clips": 0}))
        return Path(root)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("speechrnn.synth.generate_corpus", recorded)
    main([])
    data = compose("train").data  # SpeechCommandsData.prepare_data calls generate_corpus(data.root, **data.synth)
    root, kwargs = calls[0]
    assert root == data.root
    assert {k: kwargs[k] for k in data.synth} == OmegaConf.to_container(data.synth, resolve=True)
