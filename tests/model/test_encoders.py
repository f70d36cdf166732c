"""model/encoders.py: the options every recurrence shares, dropout between layers among them."""

import warnings

import pytest
import torch

from speechrnn.model.encoders import build_encoder

I, H, C = 5, 8, 3


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_dropout_between_layers_acts_in_training_only(kind):
    encoder = build_encoder(kind, I, C, hidden_size=H, num_layers=2, dropout=0.5)
    x = torch.randn(4, 6, I)
    torch.manual_seed(0)
    first = encoder(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(encoder(x)[0], first)  # other dropout masks
    encoder.eval()
    torch.testing.assert_close(encoder(x)[0], encoder(x)[0])


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_one_layer_has_no_dropout_and_no_warning(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about dropout on a single layer
        encoder = build_encoder(kind, I, C, hidden_size=H, num_layers=1, dropout=0.5)
    x = torch.randn(4, 6, I)
    torch.manual_seed(0)
    first = encoder(x)[0]
    torch.manual_seed(1)
    torch.testing.assert_close(encoder(x)[0], first)


def test_initialisations_are_the_basic_rnns_alone():
    with pytest.raises(ValueError, match="basic RNN only"):
        build_encoder("gru", I, C, w_hh_init="identity")
