"""The Lightning module's losses: the auxiliary loss on every step's y_t and how it weighs the steps."""

import pytest
import torch
import torch.nn.functional as F

from speechrnn.training.module import KeywordModule

LABELS = ["yes", "no", "up"]


def module(**kw) -> KeywordModule:
    torch.manual_seed(0)
    return KeywordModule(LABELS, features=dict(n_mfcc=4, n_mels=8, stack=2), encoder=dict(kind="rnn", hidden_size=6),
                         optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}, aux_loss_weight=1.0, **kw)


def step_grads(m: KeywordModule, hs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dL_aux/dh_t for every step: (B, T, H)."""
    hs = hs.clone().requires_grad_()
    m._aux_loss(hs, y).backward()
    return hs.grad


def test_uniform_profile_is_the_mean_cross_entropy_of_every_step():
    m, hs, y = module(), torch.randn(4, 5, 6), torch.tensor([0, 1, 2, 1])
    per_step = m.model.encoder.readout(hs)  # (B, T, C)
    expected = torch.stack([F.cross_entropy(per_step[:, t], y) for t in range(5)]).mean()
    torch.testing.assert_close(m._aux_loss(hs, y), expected)


def test_linear_profile_weighs_step_t_by_2t_over_T_plus_1():
    m, hs, y = module(aux_loss_profile="linear"), torch.randn(4, 5, 6), torch.tensor([0, 1, 2, 1])
    per_step = m.model.encoder.readout(hs)
    expected = sum(2 * (t + 1) / 6 * F.cross_entropy(per_step[:, t], y) for t in range(5)) / 5
    torch.testing.assert_close(m._aux_loss(hs, y), expected)


def test_linear_profile_moves_the_gradient_from_early_to_late_steps():
    hs, y = torch.randn(4, 5, 6), torch.tensor([0, 1, 2, 1])
    uniform, linear = step_grads(module(), hs, y), step_grads(module(aux_loss_profile="linear"), hs, y)
    ratio = linear.norm(dim=(0, 2)) / uniform.norm(dim=(0, 2))  # (T,)
    torch.testing.assert_close(ratio, torch.arange(1, 6) * 2 / 6)


def test_the_auxiliary_loss_is_added_in_training_only():
    m, wave, y = module(aux_loss_profile="linear"), torch.randn(2, 16000), torch.tensor([0, 2])
    x = m.model.frontend(wave)
    logits, hs = m.model.forward_features(x)
    main = F.cross_entropy(logits, y)
    m.log_dict = lambda *a, **k: None
    torch.testing.assert_close(m._step((wave, y, torch.arange(2)), "val"), main)
    torch.testing.assert_close(m._step((wave, y, torch.arange(2)), "train"), main + m._aux_loss(hs, y))


def test_an_unknown_profile_is_refused():
    with pytest.raises(ValueError, match="aux_loss_profile must be one of"):
        module(aux_loss_profile="quadratic")


def test_mixup_trains_on_the_mixed_features_against_both_labels_by_their_weights():
    # noise that starts at a different time in each clip: stationary noise alone is nothing after
    # each clip's mean is subtracted, and every clip would give the same logits
    onset = torch.arange(16000) >= torch.tensor([[1000], [5000], [9000], [13000]])  # (4, 16000)
    m, wave, y = module(mixup=0.4), torch.randn(4, 16000) * onset, torch.tensor([0, 1, 2, 1])
    m.log_dict = lambda *a, **k: None
    torch.manual_seed(3)
    lam, perm = m._mixup_draw(4)
    assert 0.5 <= lam <= 1 and sorted(perm.tolist()) == [0, 1, 2, 3]
    x = m.model.frontend(wave)
    logits, hs = m.model.forward_features(lam * x + (1 - lam) * x[perm])
    own, partner = (F.cross_entropy(logits, y) + m._aux_loss(hs, y),
                    F.cross_entropy(logits, y[perm]) + m._aux_loss(hs, y[perm]))
    assert abs(own - partner) > 0.01  # the clips differ, so the two labels' losses do
    expected = lam * own + (1 - lam) * partner
    torch.manual_seed(3)  # the same draws inside the step
    torch.testing.assert_close(m._step((wave, y, torch.arange(4)), "train"), expected)
    # validation never mixes
    torch.testing.assert_close(m._step((wave, y, torch.arange(4)), "val"), F.cross_entropy(m.model(wave), y))


def test_mixup_weights_lean_to_the_clips_own_label_and_vary_between_batches():
    m = module(mixup=0.4)
    lams = [m._mixup_draw(8)[0] for _ in range(50)]
    assert min(lams) >= 0.5 and max(lams) <= 1 and len(set(lams)) == 50


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.2", True])
def test_a_bad_mixup_is_refused(bad):
    with pytest.raises(ValueError, match="mixup must be"):
        module(mixup=bad)
