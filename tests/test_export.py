"""Export: TorchScript and ONNX give the PyTorch logits; the ONNX model transcribes on its own."""

import json

import numpy as np
import pytest
import torch

from speechrnn.model.checkpoint import load_model
from speechrnn.export import TOLERANCE, export, main as export_main
from speechrnn.model.spotter import KeywordSpotter
from speechrnn.transcribe import main as transcribe_main

from conftest import tone, write_wav

ort = pytest.importorskip("onnxruntime")
RATE = 16000
LABELS = ["yes", "no", "_silence_", "_unknown_"]


def save_checkpoint(path, kind: str, deltas: int, seed: int = 0):
    """A checkpoint as ``speechrnn.train`` writes it, of an untrained two-layer model."""
    torch.manual_seed(seed)
    hparams = dict(labels=LABELS, features=dict(n_mfcc=13, n_mels=20, deltas=deltas, stack=4),
                   encoder=dict(kind=kind, hidden_size=16, num_layers=2))
    model = KeywordSpotter(**hparams)
    model.frontend.fit_normalization([0.1 * torch.randn(2, RATE)])
    torch.save({"hyper_parameters": hparams, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               path)
    return path


def fresh_clips(n: int = 3) -> torch.Tensor:
    """Clips unlike the exporter's own checks: noisy tones and speech-band noise, another batch size."""
    g = torch.Generator().manual_seed(7)
    t = torch.arange(RATE) / RATE
    return torch.stack([0.2 * torch.sin(2 * torch.pi * (200 + 400 * k) * t) + 0.02 * torch.randn(RATE, generator=g)
                        for k in range(n)])


@pytest.fixture(scope="module", params=[("rnn", 1), ("gru", 0)], ids=["rnn-deltas", "gru"])
def exported(request, tmp_path_factory):
    kind, deltas = request.param
    base = tmp_path_factory.mktemp(f"export_{kind}")
    ckpt = save_checkpoint(base / "model.ckpt", kind, deltas)
    return ckpt, base / "out", export(ckpt, base / "out")


def test_export_writes_both_formats_within_tolerance(exported):
    _, out, diffs = exported
    assert set(diffs) == {"model.pt", "model.onnx"} and (out / "model.pt").is_file() and (out / "model.onnx").is_file()
    assert all(0 <= d <= TOLERANCE for d in diffs.values())


def test_torchscript_and_onnx_match_pytorch_on_new_clips(exported):
    ckpt, out, _ = exported
    model, x = load_model(ckpt), fresh_clips()
    with torch.no_grad():
        ref = model(x)  # (3, C)
    extra = {"meta.json": ""}
    ts = torch.jit.load(str(out / "model.pt"), _extra_files=extra)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = torch.from_numpy(session.run(None, {"wave": x.numpy()})[0])
    with torch.no_grad():
        assert (ts(x) - ref).abs().max() <= TOLERANCE
    assert (onnx_logits - ref).abs().max() <= TOLERANCE
    assert json.loads(json.loads(extra["meta.json"])["speechrnn.labels"]) == LABELS


@pytest.mark.parametrize("export_file,backend", [("model.onnx", "onnx"), ("model.pt", "torchscript")])
def test_exported_model_transcribes_like_the_checkpoint(exported, tmp_path, capsys, export_file, backend):
    ckpt, out, _ = exported
    clips = [write_wav(tmp_path / f"{k}.wav", tone(300 + 500 * k, seed=k)) for k in range(3)]
    long = np.concatenate([0.01 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32), tone(700)] * 2)
    clips.append(write_wav(tmp_path / "long.wav", long))
    records = []
    for model_file in (ckpt, out / export_file):
        argv = [str(model_file), *map(str, clips), "--format", "json", "--detection-threshold", "0"]
        assert transcribe_main(argv) == 0
        out_text, err = capsys.readouterr()
        records.append([json.loads(line) for line in out_text.splitlines()])
        assert (f"({backend})" in err) == (model_file.name == export_file)
    for a, b in zip(*records):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-3)
    assert records[0][-1]["detections"] and \
        [e["start"] for e in records[0][-1]["detections"]] == [e["start"] for e in records[1][-1]["detections"]]


def test_export_command_prints_the_differences_and_fails_beyond_tolerance(tmp_path, capsys, monkeypatch):
    ckpt = save_checkpoint(tmp_path / "model.ckpt", "rnn", 0)
    assert export_main([str(ckpt), "--out", str(tmp_path / "ts"), "--format", "torchscript"]) == 0
    printed = capsys.readouterr().out
    assert "model.pt: max |logit - PyTorch| = " in printed and "model.onnx" not in printed
    monkeypatch.setattr("speechrnn.export.TOLERANCE", -1.0)  # no difference is small enough
    assert export_main([str(ckpt), "--out", str(tmp_path / "ts2"), "--format", "torchscript"]) == 1
    assert capsys.readouterr().err.startswith("error: exports differ from PyTorch")


def test_export_of_a_foreign_checkpoint_is_one_line(tmp_path, capsys):
    path = tmp_path / "other.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(SystemExit) as exit:
        export_main([str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "not a speechrnn checkpoint" in err
