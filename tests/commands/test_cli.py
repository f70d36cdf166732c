"""What every command answers the same way: ``--version``."""

import runpy
import sys

import pytest
import torch

import speechrnn

COMMANDS = ("train", "evaluate", "transcribe", "export", "download", "streamtest", "ablation", "footprint", "bench",
            "synth", "info")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy: the module is imported already
def test_every_command_prints_the_speechrnn_version_and_exits_0(command, monkeypatch, capsys):
    # runpy is what python -m runs; in this process the heavy imports are shared by the nine commands
    monkeypatch.setattr(sys, "argv", [f"speechrnn.{command}", "--version"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module(f"speechrnn.{command}", run_name="__main__")
    assert done.value.code in (0, None)
    assert capsys.readouterr().out == f"speechrnn {speechrnn.__version__} (torch {torch.__version__})\n"
