"""Fine-tuning from a checkpoint (``train init_from=<ckpt>``), on tiny tone folders.

A checkpoint trained on the words yes/no is fine-tuned on another folder labelled no/up:
the encoder and the rows of the shared labels (no, _silence_, _unknown_) come from the
checkpoint, up's row is the new model's own, and the run starts anew. ``Probe`` records
the module as training is about to start, before any optimiser step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from speechrnn.training.config import compose
from speechrnn.model.checkpoint import CheckpointError
from speechrnn.core.errors import ConfigError
from speechrnn.model.features import MFCC
from speechrnn.training.finetune import Source, _check_settings, init_weights
from speechrnn.model.spotter import KeywordSpotter
from speechrnn.training.fit import train

from helpers import tone, write_wav

TINY = ["data=folder", "data.batch_size=8", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
        "model.encoder.hidden_size=16", "test=false", "task=custom"]
SOURCE_WORDS, NEW_WORDS = ["yes", "no"], ["no", "up"]
SHARED = ["no", "_silence_", "_unknown_"]


def corpus(root: Path, words: dict[str, float], volume: float = 1.0) -> Path:
    """Tones in the Speech Commands layout, 6 speakers a word: speaker 0 validates, speaker 1 tests."""
    for word, f in words.items():
        for k in range(6):
            write_wav(root / word / f"{k:08x}_nohash_0.wav", volume * tone(f * (1 + 0.02 * k), seed=k))
    (root / "validation_list.txt").write_text("".join(f"{w}/00000000_nohash_0.wav\n" for w in words))
    (root / "testing_list.txt").write_text("".join(f"{w}/00000001_nohash_0.wav\n" for w in words))
    write_wav(root / "_background_noise_" / "white.wav",
              (0.1 * np.random.default_rng(1).standard_normal(48000)).astype(np.float32))
    return root


def config(base: Path, folder: str, words: list[str], run: str, *extra: str):
    return compose("train", [*TINY, f"data.words=[{','.join(words)}]", f"data.root={base / folder}",
                                       f"paths.data_dir={base / 'data'}", f"paths.output_dir={base / run}",
                                       *extra])


def fine_tune(base: Path, run: str, *extra: str) -> tuple[dict, str]:
    """Fine-tune the source checkpoint on folder b: (what Probe saw, the fine-tuning log line)."""
    lines, logger = [], logging.getLogger("speechrnn.training.finetune")
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        train(config(base, "b", NEW_WORDS, run, f"init_from={base / 'source/checkpoints/best.ckpt'}",
                     "+callbacks.probe._target_=helpers.Probe", f"+callbacks.probe.out={base / run}.pt", *extra))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return torch.load(f"{base / run}.pt"), "\n".join(lines)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """Folder a (yes, no, bed), folder b (no, up, cat: other tones, 10x quieter) and a checkpoint trained on a."""
    base = tmp_path_factory.mktemp("finetune")
    corpus(base / "a", {"yes": 300.0, "no": 700.0, "bed": 2500.0})
    corpus(base / "b", {"no": 750.0, "up": 1500.0, "cat": 3500.0}, volume=0.1)
    train(config(base, "a", SOURCE_WORDS, "source"))
    return base


@pytest.fixture(scope="module")
def source(base) -> dict:
    return torch.load(base / "source/checkpoints/best.ckpt", weights_only=False)


@pytest.fixture(scope="module")
def kept(base) -> tuple[dict, str]:
    return fine_tune(base, "kept")


@pytest.fixture(scope="module")
def refitted(base) -> tuple[dict, str]:
    return fine_tune(base, "refitted", "init_normalization=refit")


def readout(state: dict, prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    return state[f"{prefix}encoder.W_hy"], state[f"{prefix}encoder.b_y"]  # (C, H), (C,)


def test_the_encoder_and_the_shared_labels_readout_rows_come_from_the_checkpoint(source, kept):
    seen, _ = kept
    old_labels = source["hyper_parameters"]["labels"]
    for name, value in seen["state"].items():
        if name.startswith("encoder.layers."):
            assert torch.equal(value, source["state_dict"][f"model.{name}"]), name
    for new, old in zip(readout(seen["state"]), readout(source["state_dict"], "model.")):
        for label in SHARED:
            assert torch.equal(new[seen["labels"].index(label)], old[old_labels.index(label)]), label


def test_a_label_the_checkpoint_lacks_starts_from_a_fresh_row_and_the_log_says_what_was_carried(source, kept):
    seen, log = kept
    assert seen["labels"] == [*NEW_WORDS, "_silence_", "_unknown_"]
    W_new, b_new = readout(seen["state"])
    W_old, b_old = readout(source["state_dict"], "model.")
    up = seen["labels"].index("up")
    assert not any(torch.equal(W_new[up], row) for row in W_old) and b_new[up] not in b_old
    assert f"readout rows of the 3 shared labels {SHARED} carried over; new labels ['up'] start fresh" in log
    assert "the checkpoint's other labels ['yes'] dropped; normalisation kept" in log


def test_a_gru_carries_the_rows_of_its_out_layer_for_the_shared_labels():
    features, encoder = {"n_mfcc": 13, "stack": 8}, {"kind": "gru", "hidden_size": 8}
    old = KeywordSpotter(SOURCE_WORDS, features, encoder)
    new = KeywordSpotter(NEW_WORDS, features, encoder)
    init_weights(new, Source(Path("old.ckpt"), old.labels, old.state_dict(), "keep"), waves=[])
    assert torch.equal(new.encoder.rnn.weight_hh_l0, old.encoder.rnn.weight_hh_l0)
    for new_param, old_param in zip(new.encoder.out.parameters(), old.encoder.out.parameters()):  # weight, bias
        assert torch.equal(new_param[NEW_WORDS.index("no")], old_param[SOURCE_WORDS.index("no")])
        assert not any(torch.equal(new_param[NEW_WORDS.index("up")], row) for row in old_param)


def test_kept_normalisation_is_the_checkpoints(source, kept):
    seen, _ = kept
    for name in ("frontend.mean", "frontend.std"):
        assert torch.equal(seen["state"][name], source["state_dict"][f"model.{name}"]), name


def test_refitted_normalisation_is_fitted_on_the_new_training_data(base, source, refitted):
    seen, log = refitted
    data = instantiate(config(base, "b", NEW_WORDS, "unused").data)
    data.setup()
    fresh = MFCC(**source["hyper_parameters"]["features"])
    fresh.fit_normalization(data.train_waves())
    # to float rounding: the sums over batches need not be bitwise alike in two places
    torch.testing.assert_close(seen["state"]["frontend.mean"], fresh.mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen["state"]["frontend.std"], fresh.std, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fresh.mean, source["state_dict"]["model.frontend.mean"], rtol=1e-2)
    assert "normalisation refitted on the training data" in log


def test_fine_tuning_starts_a_new_run_not_a_resume(source, kept):
    seen, _ = kept
    assert source["global_step"] > 0
    assert (seen["global_step"], seen["epoch"], seen["optimizer_state"]) == (0, 0, 0)


@pytest.mark.parametrize("case", ["with ckpt_path", "missing", "not a checkpoint", "other encoder", "other features"])
def test_init_from_mistakes_are_one_line_errors_before_any_work(base, tmp_path, case):
    ckpt = base / "source/checkpoints/best.ckpt"
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    init_from, extra, error, message = {
        "with ckpt_path": (ckpt, [f"ckpt_path={ckpt}"], ConfigError, "init_from and ckpt_path: .* give one"),
        "missing": (tmp_path / "gone.ckpt", [], CheckpointError, "gone.ckpt: checkpoint not found"),
        "not a checkpoint": (tmp_path / "notes.ckpt", [], CheckpointError, "notes.ckpt: not a readable PyTorch"),
        "other encoder": (ckpt, ["model=gru"], ConfigError,
                          r"config's model.encoder.kind=gru, model.encoder.num_layers=1 differ; "
                          r"pass model=rnn model.encoder.num_layers=2$"),
        "other features": (ckpt, ["features.n_mfcc=20"], ConfigError,
                           "config's features.n_mfcc=20 differ; pass features.n_mfcc=13$"),
    }[case]
    cfg = config(base, "b", NEW_WORDS, f"mistake-{tmp_path.name}", f"init_from={init_from}", *extra)
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (base / f"mistake-{tmp_path.name}").exists()


@pytest.mark.parametrize("asked,refused", [("clip", False), (True, False), ("causal", True), (False, True)])
def test_the_two_spellings_of_the_whole_clip_mean_are_one_setting(asked, refused):
    encoder = {"kind": "rnn", "hidden_size": 8, "num_layers": 1}
    hparams = {"features": {"n_mfcc": 13, "cmn": True}, "encoder": encoder}
    check = lambda: _check_settings("a.ckpt", hparams, OmegaConf.create({"n_mfcc": 13, "cmn": asked}),
                                    OmegaConf.create(encoder))
    if refused:
        with pytest.raises(ConfigError, match=f"features.cmn={asked} differ; pass features.cmn=True$"):
            check()
    else:
        check()


def test_callbacks_final_keeps_the_final_model_as_best_ckpt(base):
    """``callbacks=final``: best.ckpt is the model as training ends, not the epoch that validated best."""
    metrics = train(config(base, "b", NEW_WORDS, "final", f"init_from={base / 'source/checkpoints/best.ckpt'}",
                           "callbacks=final", "trainer.max_epochs=4"))
    best = torch.load(metrics["best_checkpoint"], weights_only=False)
    last = torch.load(base / "final/checkpoints/last.ckpt", weights_only=False)
    assert best["epoch"] == 3
    for name, weights in last["state_dict"].items():
        assert torch.equal(best["state_dict"][name], weights), name
