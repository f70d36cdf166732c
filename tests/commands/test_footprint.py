"""The footprint command: matched model sizes, multiply-accumulates, sizes, and the table it writes."""

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import speechrnn.training.sweep as sweep_runs
from speechrnn.core.readme import markers
from speechrnn.evaluation.footprint import macs_per_second, parameter_count, steps_per_second
from speechrnn.footprint import encoder_params, grid, main, matched_hidden
from speechrnn.model.encoders import build_encoder
from speechrnn.model.spotter import KeywordSpotter

from helpers import tone_corpus


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_the_matched_hidden_size_has_the_closest_parameter_count(kind):
    target = encoder_params("rnn", 128, 1, 104, 12)
    h = matched_hidden(kind, target, 104, 12)
    gap = abs(encoder_params(kind, h, 1, 104, 12) - target)
    assert gap <= abs(encoder_params(kind, h - 1, 1, 104, 12) - target)
    assert gap <= abs(encoder_params(kind, h + 1, 1, 104, 12) - target)
    assert gap < 0.02 * target


def test_the_grid_is_six_basic_rnns_then_a_gru_and_an_lstm_per_matched_size():
    models = grid([])
    assert models[:6] == [("rnn", h, n) for h in (64, 128, 256) for n in (1, 2)]
    assert [kind for kind, _, _ in models[6:]] == ["gru", "lstm"] * 3
    assert ("gru", 225, 1) in models  # as many parameters as the default basic RNN (256 units, 2 layers)


@pytest.mark.parametrize("kind,layers,per_step", [("rnn", 1, lambda I, H: H * (I + H)),
                                                  ("rnn", 2, lambda I, H: H * (I + H) + 2 * H * H),
                                                  ("gru", 1, lambda I, H: 3 * H * (I + H)),
                                                  ("lstm", 2, lambda I, H: 4 * H * (I + H) + 8 * H * H)])
def test_macs_count_each_recurrent_weight_once_a_step_and_the_readout_once(kind, layers, per_step):
    I, H, C, T = 104, 32, 12, 12
    encoder = build_encoder(kind, I, C, hidden_size=H, num_layers=layers)
    assert macs_per_second(encoder, T) == T * per_step(I, H) + C * H


def test_macs_agree_with_torch_flop_counter_where_it_sees_every_matmul():
    encoder = build_encoder("gru", 104, 12, hidden_size=48).eval()  # nn.GRU decomposes into addmm on CPU
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        hs, _ = encoder(torch.randn(1, 12, 104))
        encoder.readout(hs[:, -1])
    assert macs_per_second(encoder, 12) == counter.get_total_flops() // 2


def test_parameters_and_steps_are_the_networks_not_the_frontends_buffers():
    model = KeywordSpotter(["yes", "no"], dict(n_mfcc=13, stack=8), dict(kind="rnn", hidden_size=16))
    assert parameter_count(model) == sum(p.numel() for p in model.encoder.parameters()) == 16 * (104 + 16 + 1) + 2 * 17
    assert steps_per_second(model) == 12  # 98 frames of a second, stacked 8 at a time


def test_the_command_trains_measures_writes_the_table_and_reuses_finished_runs(tmp_path, capsys, monkeypatch):
    root = tone_corpus(tmp_path / "tones")
    extra = ["data=folder", f"data.root={root}", f"paths.data_dir={tmp_path}/data", "trainer=debug",
             "data.batch_size=8"]
    gru = next(f"gru-h{h}-l1" for kind, h, _ in grid(extra) if kind == "gru")
    readme = tmp_path / "README.md"
    begin, end = markers("footprint")
    readme.write_text(f"# R\n{begin}\nan earlier table\n{end}\n")
    argv = ["--models", f"rnn-h64-l1,{gru}", "--out", str(tmp_path / "out"), "--real-folder", str(root),
            "--readme", str(readme), *extra]
    main(argv)
    rows = json.loads((tmp_path / "out" / "footprint.json").read_text())
    assert [r["model"] for r in rows] == ["rnn-h64-l1", gru]
    for r in rows:
        assert r["params"] > 0 and r["macs_per_s"] > r["params"] and 0 < r["step_s"] < 0.1
        assert r["int8_onnx_bytes"] < r["onnx_bytes"] or r["kind"] == "gru"  # onnxruntime has no int8 GRU
        assert all(0.0 <= r[c] <= 1.0 for c in ("synthetic", "real_dev", "real_dev_int8"))
        assert (tmp_path / "out" / f"{r['model']}-seed0" / "export" / "model.int8.onnx").is_file()
    table = readme.read_text().split(begin)[1].split(end)[0]
    assert "| rnn-h64-l1 | " in table and f"| {gru} | " in table and "earlier" not in table
    assert "python -m speechrnn.train model=rnn model.encoder.hidden_size=64 model.encoder.num_layers=1" in table
    assert "\n| model | parameters |" in capsys.readouterr().out
    monkeypatch.setattr(sweep_runs, "run_train", lambda args: pytest.fail("retrained"))
    main(argv)  # every run finished: measured again, not trained
    again = json.loads((tmp_path / "out" / "footprint.json").read_text())
    assert [r["synthetic"] for r in again] == [r["synthetic"] for r in rows]


def test_an_unknown_model_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--models", "rnn-h65-l1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no model rnn-h65-l1" in err and "rnn-h64-l1" in err
    assert not (tmp_path / "out").exists()


def test_without_the_export_tools_it_says_what_to_install_before_training(tmp_path, capsys, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    monkeypatch.setattr(sweep_runs, "run_train", lambda args: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        main(["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "onnxruntime not installed" in err and "speechrnn[export]" in err
    assert len([line for line in err.splitlines() if line.startswith("python -m speechrnn.footprint: error:")]) == 1
