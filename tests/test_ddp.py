"""``trainer=ddp``: two CPU processes (gloo) train to the same weights as one process.

Same global batch on both sides: one process with batch 2b, or two with b each, and
DDP averages the two halves' gradients into the whole batch's gradient. Which clips
form a batch is not the same, though: under DDP Lightning wraps the data module's
``EpochSampler`` in a ``DistributedSamplerWrapper`` that shuffles its order again
(seeded by ``PL_GLOBAL_SEED`` and the epoch) before giving each rank every second
clip. So the test makes each epoch one global batch (the 24 training clips; 2b = 24,
no padding), where the order cannot matter, and turns off random augmentation (each
process draws its own). What is left is the order of float additions: ~1e-7.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from speechrnn.module import KeywordModule

from conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]
WORDS = {"yes": 300.0, "no": 700.0, "up": 1500.0, "down": 2500.0}
B, EPOCHS = 12, 3  # per-process batch; 24 training clips -> 1 step of 2B per epoch
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
    """``python -m speechrnn.train`` in a subprocess; returns its stderr and its last checkpoint."""
    cmd = [sys.executable, "-m", "speechrnn.train", "data=folder", f"data.root={base / 'tones'}",
           f"paths.data_dir={base / 'data'}", f"hydra.run.dir={base / name}", "data.augment=null",
           "+data.silence_percentage=0", "model.specaugment=null", "model.scheduler=null",
           "model.encoder.hidden_size=16", f"trainer.max_epochs={EPOCHS}", "trainer.enable_progress_bar=false",
           "test=false", "callbacks.model_checkpoint.monitor=null", *overrides]  # monitor=null: last.ckpt every epoch
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr, torch.load(base / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    _folder(tmp_path)
    _, one = _train(tmp_path, "one", f"data.batch_size={2 * B}")
    log, two = _train(tmp_path, "ddp", "trainer=ddp", "trainer.devices=2", f"data.batch_size={B}")
    assert "MEMBER: 2/2" in log and "distributed_backend=gloo" in log

    steps = EPOCHS * 24 // (2 * B)
    assert one["global_step"] == two["global_step"] == steps
    torch.manual_seed(0)  # train.py seeds with seed=0 before building the module
    init = KeywordModule(**one["hyper_parameters"]).state_dict()
    for key, w in one["state_dict"].items():
        assert torch.allclose(w, two["state_dict"][key], rtol=0, atol=TOL), \
            f"{key}: 1 vs 2 processes differ by {(w - two['state_dict'][key]).abs().max():.2e}"
    moved = max((w - init[k]).abs().max().item() for k, w in one["state_dict"].items() if "encoder" in k)
    assert moved > 100 * TOL  # the runs trained: agreement is not both standing still
