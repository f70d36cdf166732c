"""The ablation command trains each encoder, evaluates every column and prints the commands."""

from speechrnn.ablation import ablate, markdown

from test_pipeline import _tones


def test_ablation_rows_have_every_column_and_its_command(tmp_path):
    root = _tones(tmp_path)
    extra = ["data=folder", f"data.root={root}", f"paths.data_dir={tmp_path}/data", "trainer=debug",
             "model.encoder.hidden_size=16", "data.batch_size=8"]
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
