"""Speech Commands protocol: splits, task labels, unknown/silence proportions, odd layouts, extra noise."""

import itertools
import logging
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from speechrnn.core.audio import as_float, fix_length
from speechrnn.data.layout import DatasetError, hash_split, label_items, scan, speaker_of, split_clips, task_labels
from speechrnn.evaluation.evaluate import folder_clips
from speechrnn.data.labels import COMMANDS, SILENCE, UNKNOWN, WORDS_V1, WORDS_V2

from helpers import tone, write_wav


def test_fix_length_crops_to_the_first_samples_or_pads_where_align_says():
    wave = torch.arange(1.0, 5.0)  # (4,)
    assert fix_length(wave, 6).tolist() == [1, 2, 3, 4, 0, 0]
    assert fix_length(wave, 7, "centre").tolist() == [0, 1, 2, 3, 4, 0, 0]
    assert fix_length(wave, 6, "end").tolist() == [0, 0, 1, 2, 3, 4]
    assert fix_length(wave, 3, "end").tolist() == [1, 2, 3]  # a long clip keeps its first samples
    with pytest.raises(ValueError, match="align"):
        fix_length(wave, 6, "middle")


def test_task_labels():
    assert task_labels("kws12") == list(COMMANDS) + [SILENCE, UNKNOWN]
    assert task_labels("kws35", "v0.02") == list(WORDS_V2) and len(WORDS_V2) == 35
    assert len(task_labels("kws35", "v0.01")) == len(WORDS_V1) == 30
    assert task_labels("custom", words=["up", "down"], silence=False) == ["up", "down", UNKNOWN]
    with pytest.raises(DatasetError, match="data.words"):
        task_labels("custom")


def test_hash_split_keeps_a_speaker_together_and_has_the_reference_proportions():
    assert {hash_split(f"abcd1234_nohash_{n}.wav") for n in range(5)} == {hash_split("abcd1234_nohash_0.wav")}
    # the canonical test set's unknown clips keep the same rule on <word>_<speaker>
    splits = [hash_split(f"{i:08x}_nohash_0.wav") for i in range(4000)]
    share = {s: splits.count(s) / len(splits) for s in ("training", "validation", "testing")}
    assert abs(share["validation"] - 0.1) < 0.02 and abs(share["testing"] - 0.1) < 0.02


def test_list_files_decide_the_split(tone_folder):
    splits = split_clips(tone_folder, scan(tone_folder))
    speakers = {s: {p.name.split("_")[0] for clips in by.values() for p in clips} for s, by in splits.items()}
    assert speakers["validation"] == {"00000000", "00000001"}
    assert speakers["testing"] == {"00000002", "00000003"}
    assert not speakers["training"] & (speakers["validation"] | speakers["testing"])


def test_list_file_naming_a_missing_clip_is_a_clear_error(tone_folder):
    with open(tone_folder / "testing_list.txt", "a") as f:
        f.write("yes/gone_nohash_0.wav\n")
    with pytest.raises(DatasetError, match=r"testing_list.txt names 1 clips that do not exist.*yes/gone_nohash_0"):
        split_clips(tone_folder, scan(tone_folder))


def test_folder_without_labels_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no label folders with audio"):
        scan(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        scan(tmp_path / "nowhere")


def test_a_file_given_as_the_dataset_folder_is_called_a_file(tmp_path):
    clip = write_wav(tmp_path / "clip.wav", tone(300))
    with pytest.raises(DatasetError, match=r"clip.wav: is a file, not a folder; set folder to a folder") as err:
        folder_clips(clip, task_labels("kws12"), tmp_path / "cache")  # python -m speechrnn.evaluate folder=clip.wav
    assert "does not exist" not in str(err.value)


def test_kws12_draws_unknown_and_silence_at_ten_percent_of_known():
    folders = {w: [Path(f"{w}/{i:08x}_nohash_0.wav") for i in range(50)] for w in ("yes", "no", "bed", "cat", "dog")}
    items = label_items(folders, task_labels("kws12"), sample=True, noise_lengths=[48000], seed=1)
    labels = [it.label for it in items]
    known = labels.count("yes") + labels.count("no")
    assert known == 100
    assert labels.count(UNKNOWN) == math.ceil(0.1 * known)
    assert labels.count(SILENCE) == math.ceil(0.1 * known)
    assert {it.path.parts[0] for it in items if it.label == UNKNOWN} <= {"bed", "cat", "dog"}
    silence = [it for it in items if it.label == SILENCE]
    assert all(it.path is None and 0 <= it.offset <= 48000 - 16000 for it in silence)
    again = label_items(folders, task_labels("kws12"), sample=True, noise_lengths=[48000], seed=1)
    assert again == items  # deterministic for a seed


def test_canonical_test_set_layout_uses_every_clip(tmp_path):
    root = tmp_path / "speech_commands_test_set_v0.02"
    write_wav(root / "yes" / "0a1b2c3d_nohash_0.wav", tone(300))
    write_wav(root / "_unknown_" / "bed_0a1b2c3d_nohash_0.wav.wav", tone(900))
    write_wav(root / "_unknown_" / "cat_9f9f9f9f_nohash_1.wav.wav", tone(1200, rate=8000), rate=8000)
    write_wav(root / "_silence_" / "0.wav", np.zeros(16000, np.float32))
    items = label_items(scan(root), task_labels("kws12"), sample=False)
    assert sorted(it.label for it in items) == [SILENCE, UNKNOWN, UNKNOWN, "yes"]


def test_named_speakers_split_fsdd_style_speaker_disjoint(tmp_path):
    root = tmp_path / "fsdd"
    for spk in ("george", "jackson", "lucas", "nicolas", "theo", "yweweler"):
        for n in range(10):
            write_wav(root / "zero" / f"{spk}_nohash_{n}.wav", tone(300, seconds=0.3, rate=8000), rate=8000)
    splits = split_clips(root, scan(root), testing_speakers=["theo", "yweweler"])
    speakers = {s: {p.name.split("_")[0] for clips in by.values() for p in clips} for s, by in splits.items()}
    assert speakers["testing"] == {"theo", "yweweler"}
    assert speakers["training"] == {"george", "jackson", "lucas", "nicolas"}
    assert speakers["validation"] <= speakers["training"]  # validation only picks the checkpoint
    assert 0 < sum(map(len, splits["validation"].values())) < 20


def test_speaker_of_reads_canonical_unknown_names():
    from speechrnn.data.layout import speaker_of
    assert speaker_of("bed_0a1b2c3d_nohash_0.wav.wav") == speaker_of("0a1b2c3d_nohash_3.wav") == "0a1b2c3d"


def test_normalisation_clips_are_drawn_from_every_label_not_the_sorted_head(tone_folder, tmp_path):
    import torch

    from speechrnn.data.datamodule import SpeechCommandsData
    data = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4)
    data.setup()
    split = data.splits["training"]
    drawn = torch.cat(list(data.train_waves(clips=8)))  # (8, S)
    rows = torch.from_numpy(split.waves.astype("float32") / 32768.0)
    labels = {int(split.labels[int((rows == w).all(1).nonzero()[0])]) for w in drawn}
    head = {int(x) for x in split.labels[:8]}  # the split is sorted by label: its head is two words
    assert len(drawn) == 8 and len(head) == 2 and len(labels) > len(head)


# --- the epoch's order, shared by DDP ranks ---------------------------------------------------

def shares(num_clips: int, world_size: int, *, epoch: int = 0, consumed: int = 0) -> list[list[int]]:
    """What each rank of ``world_size`` trains on in ``epoch`` after the first ``consumed`` positions."""
    from speechrnn.data.datamodule import EpochSampler
    samplers = [EpochSampler(num_clips, seed=5, rank=r, world_size=world_size) for r in range(world_size)]
    for s in samplers:
        s.resume_at(epoch, consumed)
    return [list(s) for s in samplers]


def test_ranks_take_turns_through_the_one_permutation_of_the_epoch():
    (whole,) = shares(24, 1, epoch=3)
    ranks = shares(24, 3, epoch=3)
    assert sorted(whole) == list(range(24)) and whole != list(range(24))  # shuffled
    assert [ranks[k % 3][k // 3] for k in range(24)] == whole  # rank r: positions r, r + 3, ...


def test_ranks_get_equal_shares_padded_with_the_first_clips_of_the_order():
    (whole,) = shares(10, 1)
    ranks = shares(10, 4)
    assert [len(r) for r in ranks] == [3, 3, 3, 3]  # ceil(10 / 4): every rank takes the same steps
    assert sorted(sum(ranks, [])) == sorted(whole + whole[:2])  # every clip, the first two twice


def test_a_resumed_epoch_skips_exactly_the_positions_every_rank_trained_on():
    ranks = shares(24, 2)
    resumed = shares(24, 2, consumed=2 * 3 * 2)  # killed after 2 steps of batch 3 on each of 2 ranks
    assert resumed == [r[2 * 3:] for r in ranks]


def test_resumed_with_other_ranks_the_rest_of_the_epoch_is_shared_level():
    (whole,) = shares(24, 1)
    resumed = shares(24, 3, consumed=2 * 3 * 2)  # the killed run had 2 ranks, the resumed one 3
    assert [len(r) for r in resumed] == [4, 4, 4] and sorted(sum(resumed, [])) == sorted(whole[12:])
def folder_hashing_to_testing(root: Path, speakers: int = 20) -> Path:
    """``speakers`` speakers x yes/no, every id one the reference hash sends to testing, as in a folder
    that is itself a test split. The clips are empty files: splitting reads only their names."""
    ids = (f"{i:08x}" for i in itertools.count())
    for spk in itertools.islice((i for i in ids if hash_split(f"{i}_nohash_0.wav") == "testing"), speakers):
        for word in ("yes", "no"):
            (root / word).mkdir(parents=True, exist_ok=True)
            (root / word / f"{spk}_nohash_0.wav").touch()
    return root


def speakers_by_split(splits: dict) -> dict[str, set[str]]:
    return {s: {speaker_of(p.name) for clips in by.values() for p in clips} for s, by in splits.items()}


def test_a_hash_split_far_from_its_shares_is_one_warning_naming_the_splits_and_the_way_out(tmp_path, caplog):
    root = folder_hashing_to_testing(tmp_path / "test_set")
    with caplog.at_level(logging.WARNING, logger="speechrnn.data.layout"):
        split_clips(root, scan(root))
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(root) in warning
    assert "training 0.0 % (intended 80 %)" in warning and "testing 100.0 % (intended 10 %)" in warning
    assert "data.split=speaker_fraction" in warning


def test_speaker_fraction_deals_whole_speakers_by_the_percentages_for_a_seed(tmp_path):
    root = folder_hashing_to_testing(tmp_path / "test_set")
    splits = split_clips(root, scan(root), split="speaker_fraction", seed=1)
    sizes = {s: sum(map(len, by.values())) for s, by in splits.items()}
    assert sizes == {"training": 32, "validation": 4, "testing": 4}  # 80/10/10 % of 20 speakers x 2 clips
    speakers = speakers_by_split(splits)
    assert sum(map(len, speakers.values())) == 20  # no speaker in two splits
    assert speakers_by_split(split_clips(root, scan(root), split="speaker_fraction", seed=1)) == speakers
    assert speakers_by_split(split_clips(root, scan(root), split="speaker_fraction", seed=2)) != speakers


def test_a_split_salt_draws_another_hash_split_with_each_speaker_whole(tmp_path):
    root = folder_hashing_to_testing(tmp_path / "test_set")
    speakers = speakers_by_split(split_clips(root, scan(root), salt="mine"))
    assert speakers["training"] and speakers["testing"]  # unsalted, every speaker is in testing
    assert sum(map(len, speakers.values())) == 20


def test_every_split_is_logged_with_its_clips_per_label(tone_folder, tmp_path, caplog):
    from speechrnn.data.datamodule import SpeechCommandsData
    data = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4)
    with caplog.at_level(logging.INFO, logger="speechrnn.data.datamodule"):
        data.setup()
    lines = [r.getMessage() for r in caplog.records]
    for split, clips in data.splits.items():
        [line] = [ln for ln in lines if ln.startswith(f"{split} split: {len(clips)} clips (")]
        assert f"yes {int((clips.labels == data.labels.index('yes')).sum())}," in line


# --- data.noise_dir: extra noise recordings for augmentation ----------------------------------------

def test_noise_dir_recordings_join_the_datasets_own_noise(tone_folder, tmp_path):
    from speechrnn.data.datamodule import SpeechCommandsData
    extra = [(0.05 * np.random.default_rng(k).standard_normal(32000)).astype(np.float32) for k in (7, 8)]
    for k, x in enumerate(extra):
        write_wav(tmp_path / "noise" / f"n{k}.wav", x)
    (tmp_path / "noise" / "notes.txt").write_text("not a recording")
    own = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4)
    own.setup()
    data = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4,
                              noise_dir=str(tmp_path / "noise"))
    data.setup()
    assert own.noise.shape == (1, 48000) and data.noise.shape == (3, 48000)  # the longest recording's length
    torch.testing.assert_close(data.noise[0], own.noise[0])  # the dataset's own first, whole
    for row, x in zip(data.noise[1:], extra):  # the shorter ones repeated end to end
        torch.testing.assert_close(row, torch.from_numpy(np.tile(x, 2)[:48000]), rtol=0, atol=1 / 32768)  # 16-bit wavs
    assert data.files("training") == own.files("training")  # the splits do not change


@pytest.mark.parametrize("augment, generated", [(dict(noise_prob=0.8, noise_volume=0.1), True),
                                                 (dict(noise_prob=0.0, noise_volume=0.1), False),
                                                 (None, False)], ids=["noise", "no_noise_prob", "no_augment"])
def test_a_folder_without_noise_recordings_trains_with_generated_noise(tone_folder, tmp_path, caplog, augment,
                                                                       generated):
    from speechrnn.data.datamodule import SpeechCommandsData
    from speechrnn.data.noise import NOISES, generated_noise
    shutil.rmtree(tone_folder / "_background_noise_")
    data = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4, augment=augment)
    with caplog.at_level(logging.INFO, logger="speechrnn.data.datamodule"):
        data.setup()
    said = [r.getMessage() for r in caplog.records if "generated noise" in r.getMessage()]
    if not generated:  # nothing to mix in, or nothing would be mixed
        assert data.noise.numel() == 0 and not said
        return
    assert said and str(tone_folder) in said[0] and "data.noise_dir" in said[0]
    assert data.noise.shape == (len(NOISES), 60 * 16000)
    torch.testing.assert_close(data.noise, torch.stack(generated_noise()))
    assert all(0.05 < row.std() < 0.15 for row in data.noise)  # -20 dBFS RMS, as the corpus's recordings


def test_generated_noise_is_the_embedded_corpus_noise_and_the_same_every_time():
    from speechrnn.data.noise import NOISES, generated_noise, noise_recordings
    first, again = generated_noise(2.0), generated_noise(2.0)
    assert len(first) == len(NOISES) and all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(generated_noise(2.0, seed=1)[0], first[0])
    for (kind, pcm), x in zip(noise_recordings(2.0), first):  # what the corpus writes, as float
        assert pcm.dtype == np.int16 and torch.equal(torch.from_numpy(pcm).float() / 32768, x)


def test_noise_shorter_than_a_clip_is_repeated_to_a_clip_and_a_long_one_is_cut():
    from speechrnn.data.datamodule import MAX_NOISE_SECONDS, tile_noise
    assert tile_noise([torch.arange(1.0, 4.0)], clip_samples=8).tolist() == [[1, 2, 3, 1, 2, 3, 1, 2]]
    long = tile_noise([torch.zeros(MAX_NOISE_SECONDS * 100 + 5), torch.ones(10)], clip_samples=8, sample_rate=100)
    assert long.shape == (2, MAX_NOISE_SECONDS * 100) and bool((long[1] == 1).all())


@pytest.mark.parametrize("content, match", [
    (None, "not a folder"), ({"notes.txt": "not a recording"}, "no readable .wav")], ids=["missing", "no_wav"])
def test_a_noise_dir_without_recordings_is_refused_by_name_before_decoding(tone_folder, tmp_path, content, match,
                                                                         monkeypatch):
    from speechrnn.data.datamodule import SpeechCommandsData
    folder = tmp_path / "noise"
    for name, text in (content or {}).items():
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(text)
    data = SpeechCommandsData(str(tone_folder), cache_dir=str(tmp_path / "cache"), batch_size=4, noise_dir=str(folder))
    import speechrnn.data.datamodule as datamodule
    monkeypatch.setattr(datamodule, "decode_split", lambda *a, **k: pytest.fail("decoded before the check"))
    with pytest.raises(DatasetError, match=re.escape(str(folder)) + ".*" + match):
        data.setup()


def test_with_positions_each_clip_comes_with_its_epoch_and_place_in_the_epochs_order():
    from speechrnn.data.datamodule import EpochSampler
    sampler = EpochSampler(24, seed=5, rank=1, world_size=2, positions=True)
    sampler.resume_at(3, 2 * 3 * 2)  # as shares(): killed after 2 steps of batch 3 on each of 2 ranks
    placed = list(sampler)
    assert [c for _, _, c in placed] == shares(24, 2, epoch=3, consumed=12)[1]
    assert [(e, p) for e, p, _ in placed] == [(3, 12 + 1 + 2 * j) for j in range(len(placed))]


# --- where a training batch is augmented ------------------------------------------------------

def training_batches(tones: Path, cache: Path, workers: int, n: int = 3) -> tuple[object, list[tuple]]:
    """The data module and its first ``n`` training batches as the training step gets them (after
    ``on_after_batch_transfer``), each with the next draws of torch's generator (SpecAugment's)."""
    from types import SimpleNamespace

    from hydra.utils import instantiate

    from speechrnn.training.config import compose
    cfg = compose("train", ["data=folder", f"data.root={tones}", f"data.cache_dir={cache}", "data.batch_size=4",
                            f"data.num_workers={workers}", "+data.augment.room={}"])
    torch.manual_seed(7)  # the run's seed: setup takes it as the augmentation seed
    data = instantiate(cfg.data)
    data.setup("fit")
    data.trainer = SimpleNamespace(training=True, global_rank=0, world_size=1)
    out = []
    for batch in itertools.islice(iter(data.train_dataloader()), n):
        wave, label, index = data.on_after_batch_transfer(batch, 0)
        out.append((wave, label, index, torch.rand(4)))
    return data, out


def test_a_loader_worker_gives_the_training_step_the_batches_and_draws_of_the_main_process(tmp_path):
    from helpers import tone_corpus

    from speechrnn.data.datamodule import _mix
    tones = tone_corpus(tmp_path / "tones")
    data, main = training_batches(tones, tmp_path / "cache", workers=0)
    _, worker = training_batches(tones, tmp_path / "cache", workers=1)
    for (w0, y0, i0, r0), (w1, y1, i1, r1) in zip(main, worker):
        assert torch.equal(y0, y1) and torch.equal(i0, i1)
        torch.testing.assert_close(w1, w0, rtol=1e-5, atol=1e-6)
        assert torch.equal(r0, r1)
    assert not torch.equal(main[0][3], main[1][3])  # each batch its own draws
    # the first batch is its clean clips augmented under the seed of its place (epoch 0, position 0),
    # and the training step's draws go on from where the augmentation's stopped
    wave, _, index, draws = main[0]
    clean = as_float(torch.from_numpy(data.splits["training"].waves[index.numpy()]))  # (B, S), as ClipDataset reads
    torch.manual_seed(_mix(data.augment_seed, 0, 0))
    expected = data.augment(clean, data.noise)
    torch.testing.assert_close(wave, expected)
    assert not torch.allclose(wave, clean, atol=1e-3)  # augmented
    assert torch.equal(draws, torch.rand(4))
