"""The ablation command trains each encoder, evaluates every column and prints the commands."""

import json

import pytest

from speechrnn.ablation import Sweep, ablate, main, markdown
from speechrnn.core.readme import markers

from helpers import tone_corpus



def _tiny(tmp_path):
    root = tone_corpus(tmp_path / "tones")
    return root, ["data=folder", f"data.root={root}", f"paths.data_dir={tmp_path}/data", "trainer=debug",
                  "model.encoder.hidden_size=16", "data.batch_size=8"]


def test_ablation_rows_have_every_column_and_its_command(tmp_path):
    root, extra = _tiny(tmp_path)
    rows = ablate(["rnn", "gru"], Sweep(tmp_path / "out", real_test=str(root), extra=tuple(extra),
                                        cache_dir=str(tmp_path / "cache")))
    assert [r["model"] for r in rows] == ["rnn", "gru"]
    for r in rows:
        assert 0.0 <= r["synthetic"] <= 1.0 and 0.0 <= r["real_test"] <= 1.0
        assert r["synthetic_cmd"].startswith("python -m speechrnn.train model=" + r["model"])
    table = markdown(rows)
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")][1:] == \
        ["| rnn", "| gru", "| basic RNN - GRU (points)"]
    assert "real Speech Commands folder, zero-shot" in table
    assert (tmp_path / "out" / "ablation.json").is_file()


def test_several_seeds_give_mean_spread_and_per_seed_runs(tmp_path):
    root, extra = _tiny(tmp_path)
    [row] = ablate(["rnn"], Sweep(tmp_path / "out", real_test=str(root), extra=tuple(extra),
                                  cache_dir=str(tmp_path / "cache")), seeds=[3, 4])
    assert row["seeds"] == [3, 4] and len(row["synthetic_runs"]) == 2
    assert row["synthetic"] == pytest.approx(sum(row["synthetic_runs"]) / 2)
    assert row["synthetic_std"] == pytest.approx(abs(row["synthetic_runs"][0] - row["synthetic_runs"][1]) / 2 ** 0.5)
    assert "seed=<seed>" in row["synthetic_cmd"]
    assert (tmp_path / "out" / "rnn-synthetic-seed3").is_dir() and (tmp_path / "out" / "rnn-synthetic-seed4").is_dir()
    assert "Seeds: 3, 4." in markdown([row]) and " ± " in markdown([row])


def test_a_finished_run_is_reused_and_one_with_other_arguments_is_trained_again(tmp_path, monkeypatch):
    root, extra = _tiny(tmp_path)
    sweep = Sweep(tmp_path / "out", extra=tuple(extra), cache_dir=str(tmp_path / "cache"))
    [first] = ablate(["rnn"], sweep)
    import speechrnn.training.sweep as sweep_runs
    trained = []
    monkeypatch.setattr(sweep_runs, "run_train", lambda args: trained.append(args) or pytest.fail("retrained"))
    [again] = ablate(["rnn"], sweep)  # an interrupted or split sweep picks up what is done
    assert again["synthetic"] == first["synthetic"] and not trained
    monkeypatch.undo()
    [other] = ablate(["rnn"], Sweep(tmp_path / "out", extra=(*extra, "trainer.max_epochs=2"),
                                    cache_dir=str(tmp_path / "cache")))
    done = json.loads((tmp_path / "out" / "rnn-synthetic-seed0" / "sweep_run.json").read_text())
    assert done["args"][-2:] == ["trainer.max_epochs=2", "seed=0"] and done["metrics"]["test/acc"] == other["synthetic"]


def test_a_seed_override_is_refused_in_favour_of_seeds(tmp_path):
    with pytest.raises(ValueError, match="--seeds"):
        ablate(["rnn"], Sweep(tmp_path, extra=("seed=1",)))
    with pytest.raises(ValueError, match="--seeds"):
        ablate(["rnn"], Sweep(tmp_path, real_extra=("seed=1",)))


def test_a_real_folder_adds_zero_shot_real_only_and_finetuned_columns_with_their_commands(tmp_path):
    root, extra = _tiny(tmp_path)
    real_extra = ("trainer=debug", "model.encoder.hidden_size=16", "data.batch_size=8",
                  f"paths.data_dir={tmp_path}/data")
    [row] = ablate(["rnn"], Sweep(tmp_path / "out", real_folder=str(root), extra=tuple(extra), real_extra=real_extra,
                                  cache_dir=str(tmp_path / "cache")))
    assert all(0.0 <= row[c] <= 1.0 for c in ("synthetic", "real_dev", "real_only", "finetuned"))
    real = f"data=folder data.root={root}"
    assert row["real_dev_cmd"] == ("python -m speechrnn.evaluate ckpt_path=<synthetic run>/checkpoints/best.ckpt "
                                   f"{real} split=testing")
    assert row["real_only_cmd"] == f"python -m speechrnn.train model=rnn {real} {' '.join(real_extra)} seed=<seed>"
    assert row["finetuned_cmd"] == ("python -m speechrnn.train model=rnn "
                                    "init_from=<synthetic run>/checkpoints/best.ckpt "
                                    f"{real} {' '.join(real_extra)} seed=<seed>")
    report = tmp_path / "out" / "rnn-synthetic-seed0" / "real_dev" / "report.json"
    assert json.loads(report.read_text())["dataset"] == f"{root} (testing)"
    assert (tmp_path / "out" / "rnn-real-seed0").is_dir() and (tmp_path / "out" / "rnn-finetuned-seed0").is_dir()
    table = markdown([row])
    for column in ("real dev split, zero-shot", "trained on real only", "synthetic then fine-tuned"):
        assert column in table.splitlines()[0]
    assert f"`{row['finetuned_cmd']}`" in table and "basic RNN - GRU" not in table


def _row(model, **means):
    return {"model": model, "seeds": [0, 1], **means, **{f"{c}_std": 0.0 for c in means},
            **{f"{c}_cmd": f"python -m speechrnn.train model={model}" for c in means}}


def test_the_rnn_minus_gru_row_is_the_difference_of_means_in_points_per_column():
    rows = [_row("rnn", synthetic=0.9870, real_dev=0.5634), _row("gru", synthetic=0.9900, real_dev=0.5459, fsdd=0.9),
            _row("lstm", synthetic=0.5)]
    gap = [line for line in markdown(rows).splitlines() if line.startswith("| basic RNN - GRU")]
    assert gap == ["| basic RNN - GRU (points) | -0.30 | +1.75 | - |"]
    assert "basic RNN - GRU" not in markdown(rows[1:])


BEGIN, END = markers("ablation")


@pytest.mark.parametrize("text", ["no markers\n", f"{BEGIN}\nonly the first\n", f"{END}\n{BEGIN}\n"])
def test_a_readme_without_its_markers_is_a_one_line_error_before_any_training(tmp_path, capsys, text):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        main(["--models", "rnn", "--out", str(tmp_path / "out"), "--readme", str(readme)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: {readme}: ") and BEGIN in err
    assert readme.read_text() == text and not (tmp_path / "out").exists()
