"""The ablation command trains each encoder, evaluates every column and prints the commands."""

import pytest

from speechrnn.ablation import ablate, markdown

from helpers import tone_corpus



def _tiny(tmp_path):
    root = tone_corpus(tmp_path / "tones")
    return root, ["data=folder", f"data.root={root}", f"paths.data_dir={tmp_path}/data", "trainer=debug",
                  "model.encoder.hidden_size=16", "data.batch_size=8"]


def test_ablation_rows_have_every_column_and_its_command(tmp_path):
    root, extra = _tiny(tmp_path)
    rows = ablate(["rnn", "gru"], tmp_path / "out", real_test=str(root), fsdd=None, extra=extra,
                  cache_dir=str(tmp_path / "cache"))
    assert [r["model"] for r in rows] == ["rnn", "gru"]
    for r in rows:
        assert 0.0 <= r["synthetic"] <= 1.0 and 0.0 <= r["real_test"] <= 1.0
        assert r["synthetic_cmd"].startswith("python -m speechrnn.train model=" + r["model"])
    table = markdown(rows)
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")][1:] == ["| rnn", "| gru"]
    assert "real Speech Commands folder, zero-shot" in table
    assert (tmp_path / "out" / "ablation.json").is_file()


def test_several_seeds_give_mean_spread_and_per_seed_runs(tmp_path):
    root, extra = _tiny(tmp_path)
    [row] = ablate(["rnn"], tmp_path / "out", real_test=str(root), fsdd=None, extra=extra, seeds=[3, 4],
                   cache_dir=str(tmp_path / "cache"))
    assert row["seeds"] == [3, 4] and len(row["synthetic_runs"]) == 2
    assert row["synthetic"] == pytest.approx(sum(row["synthetic_runs"]) / 2)
    assert row["synthetic_std"] == pytest.approx(abs(row["synthetic_runs"][0] - row["synthetic_runs"][1]) / 2 ** 0.5)
    assert "seed=<seed>" in row["synthetic_cmd"]
    assert (tmp_path / "out" / "rnn-synthetic-seed3").is_dir() and (tmp_path / "out" / "rnn-synthetic-seed4").is_dir()
    assert "Seeds: 3, 4." in markdown([row]) and " ± " in markdown([row])


def test_a_seed_override_is_refused_in_favour_of_seeds(tmp_path):
    with pytest.raises(ValueError, match="--seeds"):
        ablate(["rnn"], tmp_path, real_test=None, fsdd=None, extra=["seed=1"])
