"""``trainer=ddp``: two CPU processes (gloo) share each epoch and train to the same weights as one process.

Same global batch on both sides: one process with batch 2b, or two with b each, and
DDP averages the two halves' gradients into the whole batch's gradient. The data
module's ``EpochSampler`` gives rank r of w the positions r, r + w, ... of the epoch's
one permutation, so the two ranks' clips of a step are the one process's batch. Each
epoch is one global batch (the 24 training clips; 2b = 24, no padding) and random
augmentation is off (each rank draws its own, by design), so what is left is the order
of float additions: ~1e-7.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechrnn.data.datamodule import EpochSampler
from speechrnn.training.module import KeywordModule

from helpers import ROOT, subprocess_env, tone, write_wav

pytestmark = pytest.mark.slow  # two training subprocesses, shared by the module's tests
WORDS = {"yes": 300.0, "no": 700.0, "up": 1500.0, "down": 2500.0}
B, EPOCHS, CLIPS = 12, 3, 24  # per-process batch; 24 training clips -> 1 step of 2B per epoch
SEED = 7  # data.seed: the epochs' order
TOL = 1e-5  # max |weight difference|; float reordering gives ~1e-7, the weights move by ~1e-2


def _folder(base: Path) -> Path:
    """4 command words x 8 speakers; speaker 0 validates, speaker 1 tests: 24 training clips."""
    root = base / "tones"
    for word, f in WORDS.items():
        for k in range(8):
            write_wav(root / word / f"{k:08x}_nohash_0.wav", tone(f * (1 + 0.02 * k), seed=k))
    (root / "validation_list.txt").write_text("".join(f"{w}/00000000_nohash_0.wav\n" for w in WORDS))
    (root / "testing_list.txt").write_text("".join(f"{w}/00000001_nohash_0.wav\n" for w in WORDS))
    return root


def _train(base: Path, name: str, *overrides: str) -> tuple[str, dict]:
    """``python -m speechrnn.train`` in a subprocess, recording its batches in ``base/name``; returns its stderr and last checkpoint."""
    (base / name).mkdir()
    cmd = [sys.executable, "-m", "speechrnn.train", "data=folder", f"data.root={base / 'tones'}",
           f"paths.data_dir={base / 'data'}", f"hydra.run.dir={base / name}", "data.augment=null",
           "+data.silence_percentage=0", f"+data.seed={SEED}", "model.specaugment=null", "model.scheduler=null",
           "model.encoder.hidden_size=16", f"trainer.max_epochs={EPOCHS}", "trainer.enable_progress_bar=false",
           "test=false", "callbacks.model_checkpoint.monitor=null",  # monitor=null: last.ckpt every epoch
           "+callbacks.record._target_=helpers.RecordBatches", f"+callbacks.record.folder={base / name}", *overrides]
    env = subprocess_env()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr, torch.load(base / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def _batches(run: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (run / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same training as one process of batch 2B and as two gloo processes of batch B: (base, one, ddp log, ddp)."""
    base = tmp_path_factory.mktemp("ddp")
    _folder(base)
    _, one = _train(base, "one", f"data.batch_size={2 * B}")
    log, two = _train(base, "ddp", "trainer=ddp", "trainer.devices=2", f"data.batch_size={B}")
    return base, one, log, two


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(runs):
    _, one, log, two = runs
    assert "MEMBER: 2/2" in log and "distributed_backend=gloo" in log

    steps = EPOCHS * CLIPS // (2 * B)
    assert one["global_step"] == two["global_step"] == steps
    torch.manual_seed(0)  # train.py seeds with seed=0 before building the module
    init = KeywordModule(**one["hyper_parameters"]).state_dict()
    for key, w in one["state_dict"].items():
        assert torch.allclose(w, two["state_dict"][key], rtol=0, atol=TOL), \
            f"{key}: 1 vs 2 processes differ by {(w - two['state_dict'][key]).abs().max():.2e}"
    moved = max((w - init[k]).abs().max().item() for k, w in one["state_dict"].items() if "encoder" in k)
    assert moved > 100 * TOL  # the runs trained: agreement is not both standing still


def test_the_ranks_take_turns_through_each_epochs_one_order(runs):
    base, *_ = runs
    ranks = [_batches(base / "ddp", r) for r in range(2)]
    for epoch in range(EPOCHS):
        order = EpochSampler(CLIPS, SEED)
        order.set_epoch(epoch)
        (zero,), (one,) = ([b["clips"] for b in batches if b["epoch"] == epoch] for batches in ranks)
        assert [clip for pair in zip(zero, one) for clip in pair] == list(order), epoch  # disjoint, the whole epoch


def test_each_rank_seeds_its_random_draws_differently(runs):
    base, *_ = runs
    zero, one = ({b["seed"] for b in _batches(base / "ddp", r)} for r in range(2))
    assert len(zero) == len(one) == EPOCHS and not zero & one


def test_checkpoints_count_the_clips_of_every_rank(runs):
    _, one, _, two = runs
    assert two["SpeechCommandsData"] == one["SpeechCommandsData"] == {"epoch": EPOCHS - 1, "consumed": CLIPS}
