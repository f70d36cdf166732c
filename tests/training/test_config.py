"""Every Hydra preset composes and instantiates; config mistakes give a clear error."""

import json
import re
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from speechrnn.training.config import compose, conf_dir
from speechrnn.data.synthetic import synthetic_dir
from speechrnn.data.labels import WORDS_V2
from speechrnn.data.synthetic import MARKER

from helpers import ROOT



def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml") if not p.stem.startswith("_"))


def compose_train(overrides: list[str]):
    return compose("train", overrides)


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("data", "task", "model", "trainer", "features")
                                      for o in options(g)] + [f"experiment={o}" for o in options("experiment")])
def test_every_preset_composes_and_instantiates(override, tmp_path):
    overrides = [override, f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path}/data"]
    if override == "data=folder":
        overrides.append(f"data.root={tmp_path}")
    if override == "task=custom":
        overrides.append("data.words=[up,down]")
    cfg = compose_train(overrides)
    data = instantiate(cfg.data)
    module = instantiate(cfg.model, labels=data.labels, features=cfg.features, _recursive_=False)
    assert module(torch.zeros(1, 16000)).shape == (1, len(data.labels))
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"  # the preset's other settings are still checked; tests never need a GPU
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.gradient_clip_val == cfg.trainer.gradient_clip_val


def test_clipping_is_configured_in_conf():
    cfg = compose_train([])
    assert cfg.trainer.gradient_clip_algorithm == "norm" and cfg.trainer.gradient_clip_val > 0
    assert compose_train(["trainer.gradient_clip_algorithm=value"]).trainer.gradient_clip_algorithm == "value"


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["trainer.max_epochz=3"], "Could not override 'trainer.max_epochz'"),
    (["model=transformer"], "Could not find 'model/transformer'"),
])
def test_config_mistakes_are_reported_without_a_traceback(args, message):
    run = subprocess.run([sys.executable, "-m", "speechrnn.train", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_help_offers_every_encoder_and_no_private_config():
    run = subprocess.run([sys.executable, "-m", "speechrnn.train", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    groups = dict(line.split(": ", 1) for line in run.stdout.split("== Configuration groups ==")[1]
                  .split("== Config ==")[0].splitlines() if ": " in line)
    assert groups["model"].split(", ") == ["gru", "lstm", "rnn"]  # model=_base does not compose a model


@pytest.mark.slow
def test_missing_checkpoint_path_is_a_clear_error():
    run = subprocess.run([sys.executable, "-m", "speechrnn.evaluate"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "ckpt_path" in run.stderr and "Traceback" not in run.stderr


def test_a_frontend_rate_the_data_pipeline_does_not_produce_is_refused(tmp_path):
    from speechrnn.core.errors import ConfigError
    from speechrnn.training.fit import train
    cfg = compose_train(["features.sample_rate=8000", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="features.sample_rate=8000"):
        train(cfg)


def test_trainer_gpu_without_a_cuda_device_is_one_line_before_any_work(tmp_path, monkeypatch):
    from speechrnn.core.errors import ConfigError
    from speechrnn.training.fit import train
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train(["trainer=gpu", f"paths.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"^trainer.accelerator=gpu \(trainer=gpu\): torch sees no CUDA device"):
        train(cfg)
    assert not (tmp_path / "run").exists()


SMALL_SYNTH = ["data.synth.num_speakers=3", "data.synth.val_speakers=1", "data.synth.test_speakers=1",
               "data.synth.neural_speakers=1", "+data.synth.noise_seconds=1", "+data.synth.progress=false"]


def test_custom_keywords_get_a_synthetic_corpus_of_their_own_with_the_other_words_as_fillers(tmp_path):
    cfg = compose_train(["task=custom", "data.words=[yes,hello]", f"paths.data_dir={tmp_path}", *SMALL_SYNTH])
    instantiate(cfg.data).prepare_data()
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-yes-hello"]  # and no data/synthetic
    words = json.loads((tmp_path / "synthetic-yes-hello" / MARKER).read_text())["params"]["words"]
    assert words[:2] == ["yes", "hello"] and sorted(words[2:]) == sorted(set(WORDS_V2) - {"yes"})


def test_custom_keywords_without_unknown_get_a_corpus_of_only_those_words(tmp_path):
    cfg = compose_train(["task=custom", "data.words=[yes,hello]", "+data.unknown=false", f"paths.data_dir={tmp_path}"])
    assert cfg.data.root == f"{tmp_path}/synthetic-yes-hello-only"
    assert list(cfg.data.synth.words) == ["yes", "hello"]


def test_a_long_keyword_list_names_its_corpus_by_a_hash():
    words = [f"keyword{i}" for i in range(12)]
    name = synthetic_dir("custom", words)
    assert re.fullmatch(r"synthetic-[0-9a-f]{10}", name)
    assert synthetic_dir("custom", words[::-1]) != name


@pytest.mark.parametrize("task", ["kws12", "kws35"])
def test_the_standard_tasks_keep_the_default_corpus(task, tmp_path):
    cfg = compose_train([f"task={task}", f"paths.data_dir={tmp_path}"])
    assert cfg.data.root == f"{tmp_path}/synthetic"
    assert list(cfg.data.synth.words) == list(WORDS_V2)  # generate_corpus's default: existing corpora stay valid
