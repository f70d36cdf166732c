"""The warning a run gives when its epochs are too few optimiser steps for its data."""

import logging

from speechrnn.training.fit import MIN_STEPS, warn_if_short


def test_a_small_folder_at_the_corpus_epochs_is_warned_with_the_epochs_that_would_do(caplog):
    with caplog.at_level(logging.WARNING, logger="speechrnn.training.fit"):
        message = warn_if_short(clips=1191, batch=128, max_epochs=35)
    assert message is not None and message in caplog.text
    assert "10 optimiser steps an epoch, 350 in 35 epochs" in message
    assert f"trainer.max_epochs={MIN_STEPS // 10}" in message


def test_enough_steps_no_epoch_budget_or_a_step_budget_give_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="speechrnn.training.fit"):
        assert warn_if_short(clips=1191, batch=128, max_epochs=MIN_STEPS // 10) is None  # exactly enough
        assert warn_if_short(clips=22000, batch=32, max_epochs=35) is None  # the embedded corpus
        assert warn_if_short(clips=1191, batch=128, max_epochs=-1) is None  # no epoch limit
        assert warn_if_short(clips=1191, batch=128, max_epochs=35, max_steps=300) is None  # the user's own budget
    assert caplog.text == ""


def test_the_global_batch_counts_every_process():
    one, two = warn_if_short(4000, 32, 10), warn_if_short(4000, 64, 10)  # 1,250 and 630 steps
    assert "1250 in 10 epochs" in one and "630 in 10 epochs" in two and "max_epochs=32" in two
