"""detkit/engine/hooks/checkpoints.py: which epochs write last.pt, which evaluations best.pt."""

import os

import torch

from detkit.engine.hooks import BestCheckpointHook, Evaluation, LastCheckpointHook
from detkit.weights.checkpoint import load_checkpoint
from tests.engine.hooks.fake_trainer import epoch_end, fake_trainer


def _trainer(tmp_path):
    def state(epoch):
        return {"model": {"w": torch.ones(2)}, "config": {}, "classes": ["a"], "anchor_shapes": [], "epoch": epoch,
                "optimizer": {"state": {}}, "train_model": {"w": torch.zeros(2)}}

    return fake_trainer(tmp_path, checkpoint_state=state)


def test_last_checkpoint_every_n_epochs_the_last_and_a_stopped_one(tmp_path):
    trainer = _trainer(tmp_path)
    hook = LastCheckpointHook(every=3)
    written = []
    for end in (epoch_end(0), epoch_end(1), epoch_end(2), epoch_end(3, stopped=True), epoch_end(4, last=True)):
        if os.path.exists(trainer.paths["last.pt"]):
            os.remove(trainer.paths["last.pt"])
        hook.after_epoch(trainer, end)
        if os.path.exists(trainer.paths["last.pt"]):
            written.append(load_checkpoint(trainer.paths["last.pt"])["epoch"])
    assert written == [3, 3, 5]  # epoch 3 by the interval, the stopped epoch 4 (as 3: repeated), the last
    assert trainer.last_good_checkpoint == trainer.paths["last.pt"]


def test_best_checkpoint_on_improvement_and_as_a_fallback(tmp_path):
    trainer = _trainer(tmp_path)
    hook = BestCheckpointHook()
    hook.after_evaluation(trainer, Evaluation(epoch=2, iteration=8, metrics={}, results=[], improved=False))
    assert not os.path.exists(trainer.paths["best.pt"])
    hook.after_train(trainer)  # no last.pt either: nothing to copy
    assert not os.path.exists(trainer.paths["best.pt"])
    LastCheckpointHook(every=1).after_epoch(trainer, epoch_end(0))
    hook.after_train(trainer)
    assert load_checkpoint(trainer.paths["best.pt"])["epoch"] == trainer.cfg.train.epochs
    hook.after_evaluation(trainer, Evaluation(epoch=2, iteration=8, metrics={}, results=[], improved=True))
    assert load_checkpoint(trainer.paths["best.pt"])["epoch"] == 2
    # best.pt (issue 40): the evaluated weights alone; last.pt the full state --resume reads.
    assert not {"optimizer", "train_model"} & set(load_checkpoint(trainer.paths["best.pt"]))
    assert {"optimizer", "train_model"} <= set(load_checkpoint(trainer.paths["last.pt"]))
