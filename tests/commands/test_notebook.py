"""The gradients notebook runs end to end in its fast mode and draws its figures and table, so it cannot rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # executes the notebook (16 s)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "rnn_gradients.ipynb"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def executed(tmp_path_factory, monkeypatch_module):
    """The notebook run with SPEECHRNN_FAST=1 from a folder outside the repository."""
    work = tmp_path_factory.mktemp("notebook")
    monkeypatch_module.setenv("SPEECHRNN_FAST", "1")
    monkeypatch_module.setenv("TMPDIR", str(work))  # the corpus it synthesises lands here
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    return nb


def tagged_outputs(nb, tag: str) -> list[dict]:
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    return cells[0].outputs


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")


@pytest.mark.slow
def test_runs_without_errors(executed):
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def test_vanishing_section_plots_the_gradient_over_time_of_every_encoder(executed):
    outputs = tagged_outputs(executed, "vanishing")
    assert any("image/png" in o.get("data", {}) for o in outputs)
    table = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    for kind, steps in (("rnn", 98), ("gru", 98), ("lstm", 98), ("rnn", 12)):
        assert f"| {kind} | {steps} |" in table


def test_exploding_section_plots_and_reports_runs_with_and_without_clipping(executed):
    outputs = tagged_outputs(executed, "exploding")
    assert any("image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "no clipping" in text and "clip_grad_norm_" in text and "rho(W_hh)" in text


def test_ablation_section_shows_the_in_notebook_table_in_fast_mode(executed):
    outputs = tagged_outputs(executed, "ablation")
    table = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    assert "In-notebook mini-ablation" in table and "| encoder |" in table
    assert all(f"| {kind} |" in table for kind in ("rnn", "gru", "lstm"))
