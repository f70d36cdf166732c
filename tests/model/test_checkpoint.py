"""Checkpoints keep their frontend: older ``cmn: true`` ones load as the whole-clip mean, causal ones round-trip."""

import pytest
import torch

from speechrnn.inference.backends import TorchBackend
from speechrnn.inference.streaming import StreamingSpotter, WindowedSpotter
from speechrnn.model.checkpoint import load_model
from speechrnn.model.spotter import KeywordSpotter

RATE = 16000
LABELS = ["yes", "no", "_silence_", "_unknown_"]


def save(path, features: dict) -> KeywordSpotter:
    """A checkpoint as ``speechrnn.train`` writes it, with these feature settings; the model saved."""
    torch.manual_seed(0)
    hparams = dict(labels=LABELS, features=dict(n_mfcc=13, n_mels=20, stack=4, **features),
                   encoder=dict(kind="rnn", hidden_size=16, num_layers=1))
    model = KeywordSpotter(**hparams)
    model.frontend.fit_normalization([0.1 * torch.randn(2, RATE)])
    torch.save({"hyper_parameters": hparams, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               path)
    return model.eval()


@pytest.mark.parametrize("cmn,mode,spotter", [(True, "clip", WindowedSpotter), (False, None, StreamingSpotter)])
def test_an_older_checkpoint_loads_with_its_mean_normalisation(tmp_path, cmn, mode, spotter):
    """Written before cmn_prior existed, with cmn a bool."""
    save(tmp_path / "old.ckpt", dict(cmn=cmn))
    model = load_model(tmp_path / "old.ckpt")
    assert model.frontend.cmn == mode and isinstance(TorchBackend(model).spotter(), spotter)
    steps = model.frontend(0.1 * torch.randn(2, RATE))  # (2, T, 4 * 13)
    means = steps.reshape(2, -1, 13).mean(1)  # over the frames the steps use
    assert torch.allclose(means, torch.zeros(2, 13), atol=1e-4) == (mode == "clip")


def test_a_causal_checkpoint_round_trips(tmp_path):
    saved = save(tmp_path / "causal.ckpt", dict(cmn="causal", cmn_prior=4))
    model = load_model(tmp_path / "causal.ckpt")
    assert model.frontend.settings == saved.frontend.settings and model.frontend.cmn_prior == 4
    assert isinstance(TorchBackend(model).spotter(), StreamingSpotter)
    wave = 0.1 * torch.randn(2, RATE)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), saved(wave), atol=0, rtol=0)
