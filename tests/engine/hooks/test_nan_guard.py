"""detkit/engine/hooks/nan_guard.py"""

import math

import pytest

from detkit.engine.hooks import NaNGuardHook
from detkit.errors import TrainingError
from tests.engine.hooks.fake_trainer import fake_trainer, step


def test_finite_losses_pass(tmp_path):
    NaNGuardHook().after_step(fake_trainer(tmp_path), step(3, loss=2.5))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_loss_stops_naming_iteration_losses_and_checkpoint(tmp_path, bad):
    trainer = fake_trainer(tmp_path, last_good_checkpoint="run/last.pt")
    with pytest.raises(TrainingError) as info:
        NaNGuardHook().after_step(trainer, step(7, loss=bad))
    message = str(info.value)
    assert "iteration 7" in message and "loss_a=" in message and "run/last.pt" in message
    with pytest.raises(TrainingError, match="none written yet"):
        NaNGuardHook().after_step(fake_trainer(tmp_path), step(1, loss=bad))
