"""detkit/engine/hooks/ema.py"""

import pytest
import torch
from torch import nn

from detkit.engine.hooks import EMAHook
from detkit.errors import CheckpointError
from tests.engine.hooks.fake_trainer import fake_trainer, step


def test_updates_after_each_step_and_checkpoints_both_weight_sets(tmp_path):
    model = nn.Linear(2, 1)
    trainer = fake_trainer(tmp_path, bare_model=model)
    hook = EMAHook(model, decay=0.5, tau=1e-6)  # the ramp is over at once: d_t = 0.5
    before = hook.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(2.0)
    hook.after_step(trainer, step(1))
    torch.testing.assert_close(hook.model.weight, before + 1.0)  # halfway towards the trained weights
    state = hook.checkpoint_state(trainer)
    assert state["ema_updates"] == 1
    torch.testing.assert_close(state["train_model"]["weight"], model.weight)


def test_resume_restores_the_average_and_its_count(tmp_path):
    model = nn.Linear(2, 1)
    trainer = fake_trainer(tmp_path, bare_model=model)
    saved = {"model": {"weight": torch.full((1, 2), 3.0), "bias": torch.zeros(1)}, "train_model": {},
             "ema_updates": 17, "iteration": 20}
    hook = EMAHook(model, 0.9, 10.0)
    hook.load_checkpoint(trainer, saved)
    assert hook.ema.updates == 17
    torch.testing.assert_close(hook.model.weight, torch.full((1, 2), 3.0))
    # A checkpoint of a run without the average: the average starts from its weights, the ramp anew.
    fresh = EMAHook(model, 0.9, 10.0)
    fresh.load_checkpoint(trainer, {"model": saved["model"], "iteration": 20})
    assert fresh.ema.updates == 0 and any("no moving average" in m for m in trainer.messages)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    model = nn.Linear(2, 1)
    with pytest.raises(CheckpointError, match="does not match"):
        EMAHook(model, 0.9, 10.0).load_checkpoint(fake_trainer(tmp_path), {"model": {"w": torch.ones(1)},
                                                                           "iteration": 1})
