"""Deployable models: a checkpoint written as ONNX and TorchScript, checked against PyTorch.

Both files hold the whole model, frontend included: waveform ``(B, 16000)`` float32 in
[-1, 1] at the checkpoint's rate (1 s, the training clip length; the batch is free)
-> logits ``(B, C)``; softmax gives the probabilities.

* ``DIR/model.onnx`` (opset 20, one file): the MFCC is exported too, the STFT as the
  ONNX ``STFT`` operator, so no feature code is needed to run it. Labels, rate and
  window geometry are in its metadata (``speechrnn.inference.backends.model_metadata``);
  ``python -m speechrnn.transcribe DIR/model.onnx clips/`` runs it with onnxruntime.
* ``DIR/model.pt`` (TorchScript, by tracing): the same graph, with the metadata as the
  extra file ``meta.json`` (``torch.jit.load(path, _extra_files={"meta.json": ""})``);
  ``python -m speechrnn.transcribe DIR/model.pt clips/`` runs it with ``torch.jit``.

The clip length is fixed: tracing unrolls the recurrence over its 12 steps (98 frames
stacked 8 at a time). What is exported is the ``KeywordSpotter`` itself: under a tracer
``ElmanRNN.forward`` runs by ``ElmanRNN.step``, one Gemm and Tanh per layer and step;
GRU and LSTM become ONNX ``GRU`` / ``LSTM`` nodes. The frontend is ``MFCC.forward``
itself (its deltas are shifted differences, which export).

Each export is run on test clips and compared with the PyTorch model; ``export``
raises unless the largest logit difference is under ``TOLERANCE``.

* ``DIR/model.int8.onnx`` (``--int8``): ``model.onnx`` with int8 weights, by onnxruntime's
  dynamic quantisation (weights int8, activations quantised on the fly), the same metadata.
  The recurrence (the basic RNN's or an LSTM's) and the classifier are quantised; the MFCC's
  filterbank and DCT stay float (a power spectrum spans more decades than 8 bits hold), and so
  does a GRU (onnxruntime has no dynamic int8 GRU). An LSTM's weights reach it through Slice and
  Concat nodes (the exporter reorders the gates at run time), so such a model is constant-folded
  first. Rounding moves its logits by more than ``TOLERANCE``, so it is compared with
  ``model.onnx`` by the labels both predict on the test clips.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from speechrnn.core.atomic import atomic_save
from speechrnn.inference.backends import OnnxBackend, model_metadata
from speechrnn.model.checkpoint import load_model
from speechrnn.model.spotter import KeywordSpotter

TOLERANCE = 1e-3  # largest |logit difference| accepted between an export and PyTorch


def check_clips(rate: int, num_samples: int, n: int = 6, seed: int = 0) -> Tensor:
    """Clips to compare an export on ``(n, N)``: noisy tones, noise from -50 to -10 dBFS, digital silence.

    Pure tones are left out on purpose: most of their mel bands hold only float32 FFT
    round-off, whose dB value differs between FFT implementations by whole units.
    """
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / rate
    noise = [v * torch.randn(num_samples, generator=g) for v in (0.003, 0.01, 0.01, 0.03, 0.3)]
    clips = [0.3 * torch.sin(2 * torch.pi * 300 * t) + noise[1], 0.1 * torch.sin(2 * torch.pi * 1200 * t) + noise[2]]
    clips += [noise[0], noise[3], noise[4], torch.zeros(num_samples)]
    return torch.stack(clips[:n])


def export_torchscript(module: nn.Module, example: Tensor, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warns about deprecation and python bools it freezes
        traced = torch.jit.trace(module, example)
    atomic_save(path, lambda tmp: traced.save(str(tmp), _extra_files={"meta.json": json.dumps(meta)}))


def export_onnx(module: nn.Module, example: Tensor, path: Path, meta: dict) -> None:
    """Export, trimmed and with ``meta`` in its metadata, into a temp file that replaces ``path`` only once
    complete: a failed export leaves the previous model as it was."""
    atomic_save(path, lambda tmp: _write_onnx(module, example, tmp, meta))


def _write_onnx(module: nn.Module, example: Tensor, path: Path, meta: dict) -> None:
    import onnx

    log = logging.getLogger("torch.onnx")  # it warns that torchvision's operators are not there to register
    level = log.level
    log.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # and prints its progress
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["wave"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},))
    log.setLevel(level)
    graph = onnx.load(str(path))
    _share_equal_initializers(graph.graph)
    for node in graph.graph.node:  # the exporter's debugging notes (source names, FX nodes): half a small RNN's file
        del node.metadata_props[:]
    for key, value in meta.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(path))


def _share_equal_initializers(graph) -> None:
    """Keep one copy of equal constants: the exporter folds ``W_hh.t()`` of a small recurrence into a
    constant at every traced step, so a 12-step RNN of 64 units held 12 copies of W_hh^T (401 kB
    where its weights are 46 kB). Nodes read the first copy; the others are dropped."""
    from onnx import numpy_helper

    first, renamed = {}, {}
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        key = (init.data_type, tuple(init.dims), value.tobytes())
        renamed[init.name] = first.setdefault(key, init.name)
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
    kept = [init for init in graph.initializer if renamed[init.name] == init.name]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _weights_as_matmul(graph) -> None:
    """Give every weight product the form dynamic quantisation takes: ``MatMul`` by a constant.

    onnxruntime quantises ``MatMul(A, W)`` with W an initializer, not ``Gemm`` nor a
    ``Transpose`` of W (the exporter folds that transpose for small weights only). So
    ``Transpose(W)`` becomes a transposed initializer, and ``Gemm(A, W, C)`` (``F.linear``)
    ``MatMul(A, W^T) + C`` with W^T one new initializer per weight, shared by the steps of
    a recurrence. Initializers nothing reads any more are dropped.
    """
    from onnx import helper, numpy_helper

    inits = {init.name: init for init in graph.initializer}

    def transposed(name: str) -> str:  # (out, in) -> (in, out), once per weight
        if f"{name}.T" not in inits:
            w = np.ascontiguousarray(numpy_helper.to_array(inits[name]).T)
            inits[f"{name}.T"] = numpy_helper.from_array(w, f"{name}.T")
            graph.initializer.append(inits[f"{name}.T"])
        return f"{name}.T"

    nodes, renamed = [], {}
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2 \
                and list(attrs.get("perm", [1, 0])) == [1, 0]:
            renamed[node.output[0]] = transposed(node.input[0])
        elif node.op_type == "Gemm" and node.input[1] in inits and not attrs.get("transA", 0) \
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0:
            W = transposed(node.input[1]) if attrs.get("transB", 0) else node.input[1]
            bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
            product = f"{node.output[0]}.matmul" if bias else node.output[0]
            nodes.append(helper.make_node("MatMul", [node.input[0], W], [product], name=node.name))
            if bias:
                nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{node.name}.bias"))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def quantize_int8(src: Path, dst: Path) -> None:
    """Write ``dst``: the ONNX model ``src`` with int8 weights in its recurrence and classifier.

    Nodes that read the frontend's constants (``frontend.*``: filterbank, DCT) stay float.
    onnxruntime keeps the model's metadata, so ``dst`` runs wherever ``src`` does.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    if any(node.op_type == "LSTM" for node in model.graph.node):
        model = _constants_folded(src)
    _weights_as_matmul(model.graph)
    frontend = [node.name for node in model.graph.node if any(i.startswith("frontend.") for i in node.input)]
    # quantize_dynamic advises pre-processing (for CNNs) with logging.warning, which would also give the
    # root logger a stderr handler for good: a handler that drops everything below ERROR, for the call only
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        atomic_save(dst, lambda tmp: quantize_dynamic(model, tmp, op_types_to_quantize=["MatMul", "LSTM"],
                                                      nodes_to_exclude=frontend, weight_type=QuantType.QInt8))
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)


def _constants_folded(path: Path):
    """The ONNX model at ``path`` after onnxruntime's basic graph optimisation (constant folding).

    The exporter hands an LSTM its weights through Slice and Concat nodes (it reorders PyTorch's
    gates into ONNX's order at run time), and dynamic quantisation only quantises weights that are
    constants; folded, they are.
    """
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def check_int8(out: Path) -> dict:
    """Quantise ``out/model.onnx`` into ``out/model.int8.onnx`` and compare the two on the test clips.

    Both run as ``transcribe`` runs them (``OnnxBackend``). Returns the share of clips on
    which they predict the same label, the largest probability difference, and both sizes.
    """
    src, dst = out / "model.onnx", out / "model.int8.onnx"
    quantize_int8(src, dst)
    ref, int8 = OnnxBackend(src), OnnxBackend(dst)
    clips = check_clips(ref.rate, ref.clip_samples)
    p, q = ref.predict(clips), int8.predict(clips)  # (n, C)
    return dict(clips=len(clips), agreement=float((p.argmax(-1) == q.argmax(-1)).float().mean()),
                max_prob_diff=float((p - q).abs().max()), float_bytes=src.stat().st_size,
                int8_bytes=dst.stat().st_size)


def max_diff(model: KeywordSpotter, run, clips: Tensor) -> float:
    """Largest |logit difference| between ``run(clips)`` and the PyTorch model."""
    with torch.no_grad():
        ref = model(clips)
    return float((torch.as_tensor(np.asarray(run(clips))) - ref).abs().max())


def export(ckpt: str | Path, out: str | Path, formats: tuple[str, ...] = ("torchscript", "onnx")) -> dict[str, float]:
    """Write the exports of ``ckpt`` under ``out``; returns each file's largest logit difference.

    Raises:
        RuntimeError: an export differs from PyTorch by more than ``TOLERANCE``.
    """
    model = load_model(ckpt)
    meta = model_metadata(model)
    rate, clip_samples = model.frontend.sample_rate, int(meta["speechrnn.clip_samples"])
    example, clips = check_clips(rate, clip_samples, 2, seed=1), check_clips(rate, clip_samples)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    diffs = {}
    if "torchscript" in formats:
        export_torchscript(model, example, out / "model.pt", meta)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
            ts = torch.jit.load(str(out / "model.pt"))
            diffs["model.pt"] = max_diff(model, ts, clips)
    if "onnx" in formats:
        import onnxruntime as ort

        export_onnx(model, example, out / "model.onnx", meta)
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        diffs["model.onnx"] = max_diff(model, lambda x: session.run(None, {"wave": x.numpy()})[0], clips)
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"exports differ from PyTorch by more than {TOLERANCE}: {bad}")
    return diffs
