"""Export: TorchScript and ONNX give the PyTorch logits, the ONNX model transcribes alone, int8 keeps the labels."""

import contextlib
import io
import json
import re

import numpy as np
import pytest
import torch

from speechrnn.model.checkpoint import load_model
from speechrnn.export import main as export_main
from speechrnn.inference.export import TOLERANCE, export, quantize_int8
from speechrnn.inference.backends import OnnxBackend
from speechrnn.model.features import MFCC
from speechrnn.model.spotter import KeywordSpotter
from speechrnn.transcribe import main as transcribe_main

from helpers import tone, write_wav

ort = pytest.importorskip("onnxruntime")
RATE = 16000
LABELS = ["yes", "no", "_silence_", "_unknown_"]


def save_checkpoint(path, kind: str, deltas: int, seed: int = 0, cmn: bool | str = False, hidden: int = 16,
                    layers: int = 2):
    """A checkpoint as ``speechrnn.train`` writes it, of an untrained model (two layers of 16 units unless said)."""
    torch.manual_seed(seed)
    hparams = dict(labels=LABELS, features=dict(n_mfcc=13, n_mels=20, deltas=deltas, stack=4, cmn=cmn),
                   encoder=dict(kind=kind, hidden_size=hidden, num_layers=layers))
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


@pytest.fixture(scope="module", params=[("rnn", 1, False), ("gru", 0, False), ("rnn", 0, "causal")],
                ids=["rnn-deltas", "gru", "rnn-causal-mean"])
def exported(request, tmp_path_factory):
    """An export of each kind; the causal-mean model's checkpoint streams frame by frame, its export by windows."""
    kind, deltas, cmn = request.param
    base = tmp_path_factory.mktemp(f"export_{kind}")
    ckpt = save_checkpoint(base / "model.ckpt", kind, deltas, cmn=cmn)
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
    features = json.loads(json.loads(extra["meta.json"])["speechrnn.features"])
    assert MFCC(**features).settings == model.frontend.settings  # the frontend's own arguments, enough to rebuild it


def test_onnx_holds_each_weight_once(tmp_path):
    """At 64 units the exporter folds W_hh^T into a new constant at each of the 24 traced steps; one copy is kept."""
    import onnx
    from onnx import numpy_helper

    ckpt = save_checkpoint(tmp_path / "model.ckpt", "rnn", 0, hidden=64, layers=1)
    assert export(ckpt, tmp_path / "out", ("onnx",))["model.onnx"] <= TOLERANCE
    values = [numpy_helper.to_array(init) for init in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.initializer]
    contents = [(v.dtype, v.shape, v.tobytes()) for v in values if v.size > 1]
    assert len(contents) == len(set(contents))
    assert sum(v.shape == (64, 64) for v in values) == 1  # W_hh (or its transpose), once


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_that_fails_leaves_the_previous_file_whole(tmp_path, monkeypatch, fmt):
    import onnx

    ckpt = save_checkpoint(tmp_path / "model.ckpt", "rnn", 0, hidden=8, layers=1)
    out = tmp_path / "out"
    export(ckpt, out, (fmt,))
    name = "model.onnx" if fmt == "onnx" else "model.pt"
    before = (out / name).read_bytes()

    def disk_full(obj, f, *args, **kwargs):  # writes part of the file, then the disk is full
        with open(f, "wb") as partial:
            partial.write(b"half a model")
        raise OSError(28, "No space left on device")

    owner = onnx if fmt == "onnx" else torch.jit.ScriptModule
    monkeypatch.setattr(owner, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export(ckpt, out, (fmt,))
    assert (out / name).read_bytes() == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


@pytest.mark.parametrize("export_file,backend", [("model.onnx", "onnx"), ("model.pt", "torchscript")])
def test_exported_model_transcribes_like_the_checkpoint(exported, tmp_path, capsys, export_file, backend):
    ckpt, out, _ = exported
    clips = [write_wav(tmp_path / f"{k}.wav", tone(300 + 500 * k, seed=k)) for k in range(3)]
    long = np.concatenate([0.01 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32), tone(700)] * 2)
    clips.append(write_wav(tmp_path / "long.wav", long))
    records = []
    for model_file in (ckpt, out / export_file):
        argv = [str(model_file), *map(str, clips), "--format", "json", "--detection-threshold", "0", "--show-unknown"]
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
    monkeypatch.setattr("speechrnn.inference.export.TOLERANCE", -1.0)  # no difference is small enough
    assert export_main([str(ckpt), "--out", str(tmp_path / "ts2"), "--format", "torchscript"]) == 1
    assert capsys.readouterr().err.startswith("error: exports differ from PyTorch")


def test_export_of_a_foreign_checkpoint_is_one_line(tmp_path, capsys):
    path = tmp_path / "other.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(SystemExit) as exit:
        export_main([str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and "not a speechrnn checkpoint" in err


TONES = [300.0, 700.0, 1500.0, 2500.0]  # the tone of each label of LABELS


def tone_clips(per_label: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled clips ``(N, RATE)``, ``(N,)``: each label's tone, its pitch drawn within +-5 %."""
    g = torch.Generator().manual_seed(seed)
    pitch = torch.empty(len(TONES), per_label).uniform_(0.95, 1.05, generator=g)
    clips = [torch.from_numpy(tone(f * float(pitch[c, k]), seed=seed * 1000 + k))
             for c, f in enumerate(TONES) for k in range(per_label)]
    return torch.stack(clips), torch.arange(len(TONES)).repeat_interleave(per_label)


def tone_checkpoint(path):
    """A two-layer RNN whose readout is fitted (ridge-penalised logistic regression on its last
    states) to tell the tones apart: labels with margins in a second, where an untrained
    model's are near-ties that any rounding flips."""
    torch.manual_seed(0)
    hparams = dict(labels=LABELS, features=dict(n_mfcc=13, n_mels=20, deltas=0, stack=4),
                   encoder=dict(kind="rnn", hidden_size=32, num_layers=2))
    model = KeywordSpotter(**hparams)
    x, y = tone_clips(16, seed=1)
    model.frontend.fit_normalization([x])
    with torch.no_grad():
        h = model.encoder(model.frontend(x))[0][:, -1]  # (N, H), the state the readout reads
    W, b = model.encoder.W_hy.detach().zero_().requires_grad_(), model.encoder.b_y.detach().zero_().requires_grad_()
    opt = torch.optim.LBFGS([W, b], max_iter=200)

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(h @ W.T + b, y) + 1e-3 * W.square().sum()
        value.backward()
        return value

    opt.step(loss)
    torch.save({"hyper_parameters": hparams, "state_dict": {f"model.{k}": v.detach() for k, v in
                                                             model.state_dict().items()}}, path)
    return path


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    """``export CKPT --format onnx --int8`` of the tone model: (folder, what it printed)."""
    base = tmp_path_factory.mktemp("export_int8")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_main([str(tone_checkpoint(base / "model.ckpt")), "--out", str(base / "out"),
                            "--format", "onnx", "--int8"]) == 0
    return base / "out", printed.getvalue()


def test_int8_model_keeps_the_float_models_labels_and_accuracy(int8_export):
    out, _ = int8_export
    x, y = tone_clips(25, seed=2)  # clips the readout was not fitted on
    float_labels = OnnxBackend(out / "model.onnx").predict(x).argmax(-1)
    int8_labels = OnnxBackend(out / "model.int8.onnx").predict(x).argmax(-1)
    float_acc, int8_acc = (float_labels == y).float().mean(), (int8_labels == y).float().mean()
    assert float_acc >= 0.9  # the float model tells the tones apart, so agreeing with it means something
    assert abs(int8_acc - float_acc) <= 0.01
    assert (int8_labels == float_labels).float().mean() >= 0.99


def test_int8_model_has_int8_weights_a_float_frontend_and_the_same_metadata(int8_export):
    import onnx

    out, _ = int8_export
    float_model, int8_model = onnx.load(str(out / "model.onnx")), onnx.load(str(out / "model.int8.onnx"))
    matrices = {init.name: init.data_type for init in int8_model.graph.initializer if len(init.dims) == 2}
    assert {name for name, kind in matrices.items() if kind == onnx.TensorProto.FLOAT} == {"frontend.fbank",
                                                                                          "frontend.dct"}
    assert sum(kind == onnx.TensorProto.INT8 for kind in matrices.values()) == 2 * 2 + 1  # W_xh, W_hh a layer; W_hy
    float_meta, int8_meta = ({p.key: p.value for p in m.metadata_props} for m in (float_model, int8_model))
    assert float_meta.items() <= int8_meta.items()  # onnxruntime adds a note of its own

    def weight_bytes(model) -> int:  # the recurrence's and classifier's, not the float frontend's
        return sum(len(i.raw_data) for i in model.graph.initializer if not i.name.startswith("frontend."))

    # the file itself need not shrink as much: the unrolled graph quantises each step's input anew
    assert weight_bytes(int8_model) < weight_bytes(float_model) / 2


def test_an_lstm_is_quantised_too_and_its_frontend_stays_float(tmp_path):
    """At 64 units the exporter feeds an LSTM its weights through Slice and Concat; folded first, they quantise."""
    import onnx

    ckpt = save_checkpoint(tmp_path / "model.ckpt", "lstm", 0, hidden=64, layers=1)
    export(ckpt, tmp_path, ("onnx",))
    quantize_int8(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")
    graph = onnx.load(str(tmp_path / "model.int8.onnx")).graph
    assert "DynamicQuantizeLSTM" in {node.op_type for node in graph.node}
    floats = {i.name for i in graph.initializer if len(i.dims) == 2 and min(i.dims) > 1  # not the (1, 8H) bias
              and i.data_type == onnx.TensorProto.FLOAT}
    assert floats == {"frontend.fbank", "frontend.dct"}
    x = fresh_clips()
    p, q = OnnxBackend(tmp_path / "model.onnx").predict(x), OnnxBackend(tmp_path / "model.int8.onnx").predict(x)
    assert (p - q).abs().max() < 0.05


def test_export_command_reports_the_int8_agreement_and_sizes(int8_export):
    out, printed = int8_export
    line = next(line for line in printed.splitlines() if "model.int8.onnx" in line)
    match = re.search(r"same label as model.onnx on (\d+)% of (\d+) test clips, max \|probability difference\| = "
                      r"[\d.]+; (\d+) kB, float (\d+) kB", line)
    assert match, line
    assert int(match[3]) == round((out / "model.int8.onnx").stat().st_size / 1e3)
    assert int(match[4]) == round((out / "model.onnx").stat().st_size / 1e3)


def test_transcribe_runs_the_int8_model_to_the_float_models_labels(int8_export, tmp_path, capsys):
    out, _ = int8_export
    x, _ = tone_clips(2, seed=3)
    paths = [str(write_wav(tmp_path / f"{k}.wav", clip.numpy())) for k, clip in enumerate(x)]
    labels = []
    for model_file in ("model.onnx", "model.int8.onnx"):
        assert transcribe_main([str(out / model_file), *paths, "--format", "json"]) == 0
        printed, err = capsys.readouterr()
        assert "(onnx)" in err
        labels.append([json.loads(line)["label"] for line in printed.splitlines()])
    assert len(labels[1]) == len(paths) and labels[1] == labels[0]
