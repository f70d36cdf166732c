"""report.py: metrics checked against hand-computed values, and the files it writes."""

from __future__ import annotations

import csv
import json
import struct

import numpy as np
import pytest
import torch

from speechrnn.evaluation.report import (classification_report, format_report, plot_curves, read_curves, write_curves,
                              write_predictions, write_report)

LABELS = ["yes", "no", "up"]
# true:  yes yes yes no no up
# pred:  yes yes no  no yes no    -> "up" is never predicted
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 0, 1]


@pytest.fixture
def report():
    return classification_report(Y_TRUE, Y_PRED, LABELS)


def test_confusion_matrix_rows_are_true_columns_are_predicted(report):
    assert report["confusion_matrix"] == [
        [2, 1, 0],  # true yes: 2 right, 1 called "no"
        [1, 1, 0],  # true no
        [0, 1, 0],  # true up: called "no"
    ]
    one = classification_report([0], [1], ["a", "b"])
    assert one["confusion_matrix"] == [[0, 1], [0, 0]]


def test_accuracy_and_sample_count(report):
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["num_samples"] == 6
    assert report["labels"] == LABELS


def test_per_class_precision_recall_f1_support(report):
    pc = report["per_class"]
    assert pc["yes"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    # no: 1 of 3 "no" predictions right, 1 of 2 true "no" found; F1 = 2PR/(P+R) = 0.4
    assert pc["no"] == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "support": 2})


def test_class_never_predicted_gets_zero_precision_not_nan(report):
    assert report["per_class"]["up"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_macro_f1_is_unweighted_mean_over_all_labels(report):
    assert report["macro_f1"] == pytest.approx((2 / 3 + 0.4 + 0.0) / 3)


def test_perfect_predictions():
    r = classification_report([0, 1, 2, 2], [0, 1, 2, 2], LABELS)
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_tensor_and_array_inputs_match_lists(report):
    from_tensor = classification_report(torch.tensor(Y_TRUE), torch.tensor(Y_PRED), LABELS)
    from_numpy = classification_report(np.array(Y_TRUE, dtype=np.int32), np.array(Y_PRED), LABELS)
    assert from_tensor == report and from_numpy == report


def test_empty_input_gives_zeros():
    r = classification_report([], [], ["a", "b"])
    assert r["accuracy"] == 0.0 and r["num_samples"] == 0
    assert r["confusion_matrix"] == [[0, 0], [0, 0]]


@pytest.mark.parametrize("y_true, y_pred, labels, match", [
    ([0, 1], [0], ["a", "b"], "2 samples but y_pred has 1"),
    ([0, 3], [0, 1], ["a", "b"], "index 3 outside"),
    ([0, -1], [0, 1], ["a", "b"], "index -1 outside"),
    ([0.0, 1.0], [0, 1], ["a", "b"], "integer class indices"),
    ([[0, 1]], [[0, 1]], ["a", "b"], "1-D"),
    ([0], [0], ["a", "a"], "distinct"),
    ([0], [0], [], "non-empty"),
])
def test_bad_inputs_raise_value_error(y_true, y_pred, labels, match):
    with pytest.raises(ValueError, match=match):
        classification_report(y_true, y_pred, labels)


def test_csv_parses_back_to_the_matrix(report, tmp_path):
    paths = write_report(report, tmp_path)
    with open(paths["csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == LABELS  # header: predicted labels
    assert [r[0] for r in rows[1:]] == LABELS  # first column: true labels
    assert [[int(c) for c in r[1:]] for r in rows[1:]] == report["confusion_matrix"]


def test_json_round_trips_with_extra_fields(report, tmp_path):
    paths = write_report(report, tmp_path / "eval" / "test", extra={"checkpoint": "last.ckpt", "split": "test"})
    loaded = json.loads(paths["json"].read_text())
    assert loaded == {**report, "checkpoint": "last.ckpt", "split": "test"}


def test_extra_may_not_overwrite_report_fields(report, tmp_path):
    with pytest.raises(ValueError, match="accuracy"):
        write_report(report, tmp_path, extra={"accuracy": 1.0})
    assert list(tmp_path.iterdir()) == []


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_is_a_matplotlib_png_of_reasonable_size(report, tmp_path):
    paths = write_report(report, tmp_path)
    data = paths["png"].read_bytes()
    width, height = png_size(data)
    assert 300 <= width <= 4000 and 300 <= height <= 4000
    assert b"Matplotlib" in data  # the Software text chunk matplotlib writes
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "confusion_matrix.csv", "confusion_matrix.png", "report.json"]  # no temp files left


def test_png_grows_with_class_count_and_opens_no_pyplot_figures(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    small = write_report(classification_report(Y_TRUE, Y_PRED, LABELS), tmp_path / "small")
    labels = [f"word{i}" for i in range(35)]
    rng = np.random.default_rng(0)
    big = write_report(classification_report(rng.integers(0, 35, 500), rng.integers(0, 35, 500), labels),
                       tmp_path / "big")
    assert png_size(big["png"].read_bytes())[0] > png_size(small["png"].read_bytes())[0]
    assert plt.get_fignums() == []  # Figure objects are not registered with pyplot, so none leak


def test_format_report_lists_every_class_and_the_totals(report):
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1", "support"]
    assert lines[1].split() == ["yes", "0.667", "0.667", "0.667", "3"]
    assert lines[2].split() == ["no", "0.333", "0.500", "0.400", "2"]
    assert lines[3].split() == ["up", "0.000", "0.000", "0.000", "1"]
    assert "accuracy" in text and lines[-2].split() == ["accuracy", "0.500", "6"]
    assert lines[-1].split() == ["macro", "avg", f"{(2 / 3 + 0.4) / 3:.3f}", "6"]


def test_predictions_csv_has_a_row_per_clip_with_its_label_prediction_and_score(tmp_path):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]])
    write_predictions(tmp_path / "predictions.csv", ["yes/a.wav", "", "no/b.wav"], [0, 2, 0], probs,
                      ["yes", "no", "_silence_"])
    rows = list(csv.reader((tmp_path / "predictions.csv").open()))
    assert rows == [["path", "label", "predicted", "score"], ["yes/a.wav", "yes", "yes", "0.7000"],
                    ["<silence cut>", "_silence_", "_silence_", "0.6000"], ["no/b.wav", "yes", "no", "0.5000"]]


def test_predictions_of_the_wrong_shape_are_refused(tmp_path):
    with pytest.raises(ValueError, match="need 2 paths and probabilities of shape"):
        write_predictions(tmp_path / "p.csv", ["a", "b"], [0, 1], torch.ones(2, 3), ["yes", "no"])


# metrics.csv as Lightning's CSVLogger writes it: step rows, validation rows, train epoch-end rows
METRICS_HEADER = "epoch,step,train/acc_epoch,train/loss_epoch,train/loss_step,val/acc,val/loss\n"


def _epoch_rows(epoch: int, step: int, train_loss: float, val_acc: float) -> str:
    return (f"{epoch},{step - 1},,,{train_loss + 0.5},,\n"  # a step row: no epoch metric
            f"{epoch},{step},,,,{val_acc},{2 * train_loss}\n"
            f"{epoch},{step},{val_acc / 2},{train_loss},,,\n")


def test_curves_plot_train_and_validation_loss_and_accuracy_once_per_epoch(tmp_path):
    (tmp_path / "metrics.csv").write_text(METRICS_HEADER + "".join(
        _epoch_rows(e, 10 * (e + 1), 1.0 / (e + 1), 0.3 * (e + 1)) for e in range(3)))
    fig = plot_curves(read_curves(tmp_path))
    loss, accuracy = fig.axes
    assert [line.get_label() for line in loss.lines] == ["train/loss_epoch", "val/loss"]
    assert [line.get_label() for line in accuracy.lines] == ["train/acc_epoch", "val/acc"]
    for ax in fig.axes:
        assert [list(line.get_xdata()) for line in ax.lines] == [[0, 1, 2], [0, 1, 2]]
    assert list(loss.lines[0].get_ydata()) == [1.0, 0.5, 1 / 3]
    assert list(accuracy.lines[1].get_ydata()) == [0.3, 0.6, 0.3 * 3]
    png = write_curves(tmp_path).read_bytes()
    assert png_size(png)[0] >= 300 and b"Matplotlib" in png


def test_curves_of_a_resumed_run_span_the_killed_runs_log_and_leave_out_its_cut_line(tmp_path):
    # killed while writing epoch 1's validation accuracy (0.6, cut to "0."), resumed after it;
    # the killed run's log is kept as metrics.part1.csv, and its epoch 1 logged again
    cut = _epoch_rows(1, 20, 0.5, 0.6).splitlines()
    (tmp_path / "metrics.part1.csv").write_text(METRICS_HEADER + _epoch_rows(0, 10, 1.0, 0.3) + cut[0] + "\n"
                                                + cut[1][: cut[1].index("0.6") + 2])
    (tmp_path / "metrics.csv").write_text(METRICS_HEADER + cut[2] + "\n" + _epoch_rows(2, 30, 0.25, 0.9))
    curves = read_curves(tmp_path)
    assert curves["train/loss_epoch"] == {0: 1.0, 1: 0.5, 2: 0.25}
    assert curves["val/acc"] == {0: 0.3, 2: 0.9}  # not 0.0 for epoch 1
