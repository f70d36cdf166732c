"""A plain (non-editable) install runs: the wheel carries conf/, and a command finds it from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and trains a tiny model from a fresh corpus


def test_a_wheel_installed_elsewhere_trains_from_an_empty_folder(tmp_path):
    source, wheels, site, empty = tmp_path / "source", tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    # built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
    top_level = {".git", ".venv", "data", "runs", "build", "multirun", "outputs"}
    shutil.copytree(ROOT, source, ignore=lambda folder, names: (top_level & set(names)) if Path(folder) == ROOT else
                    [n for n in names if n.endswith(".egg-info") or n == "__pycache__"])
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("speechrnn-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy only, not this checkout
    where = subprocess.run([sys.executable, "-c", "import speechrnn; print(speechrnn.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site))
    # speechrnn-train trainer=debug on the embedded corpus, made small so the test stays short
    res = subprocess.run([str(site / "bin" / "speechrnn-train"), "trainer=debug", "data.synth.num_speakers=12",
                          "data.synth.val_speakers=2", "data.synth.test_speakers=2", "data.synth.neural_speakers=2",
                          "+data.synth.noise_seconds=2", "trainer.enable_progress_bar=false", "hydra.run.dir=run"],
                         cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test accuracy" in res.stdout
    assert (empty / "run" / "checkpoints" / "best.ckpt").is_file() and (empty / "data" / "synthetic").is_dir()
