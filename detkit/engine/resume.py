"""A training run's checkpoint: what it holds (:func:`run_state`) and how a run comes back from it
(:func:`restore_run`). The file format itself (atomic saves, checked loads) is :mod:`detkit.weights.checkpoint`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from detkit.config import config_to_dict
from detkit.weights.checkpoint import load_weights, restore_rng_states, rng_states

if TYPE_CHECKING:  # the trainer imports this module, not the other way round
    from detkit.engine.trainer import Trainer

__all__ = ["run_state", "restore_run"]


def run_state(trainer: "Trainer", epoch: int) -> dict:
    """Everything a resume needs, and what evaluation and inference read (``model``: the evaluated weights)."""
    state = {
        "model": trainer.eval_model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(), "grad_scaler": trainer.scaler.state_dict(),
        "epoch": epoch, "iteration": trainer.iteration,
        "rng": rng_states(trainer.bare_model),
        "config": config_to_dict(trainer.resolved_config()), "classes": trainer.classes,
        "category_ids": list(trainer.train_set.category_ids), "anchor_shapes": trainer.anchor_shapes,
        # "online_anchors" is always present, as before the hooks (the online-anchors hook fills it in).
        "best": {"metric": trainer.cfg.eval.best_metric, "value": trainer.best_value}, "online_anchors": None,
        # What train.precision / eval.precision resolved to on this machine ("auto" stays in the config).
        "precision": {"train": trainer.precision.name, "eval": trainer.eval_precision.name},
    }
    if trainer.cfg.train.time_budget is not None:  # a resume keeps the budget, the time spent and the plan
        state["time_budget"] = {"budget_s": trainer.cfg.train.time_budget * 60.0,
                                "spent_s": trainer.seconds_spent(), "epochs": trainer.epochs}
    for hook in trainer.hooks:
        state.update(hook.checkpoint_state(trainer))
    return state


def restore_run(trainer: "Trainer", ckpt: dict) -> None:
    """Put a run back where ``ckpt`` (its last.pt) left it: weights, optimizer, schedule, loss scale,
    iteration, best value, RNG states, a train.time_budget's time spent and planned epochs, then each hook's
    own state."""
    # With a moving average, "model" holds the average and "train_model" the trained weights.
    load_weights(trainer.bare_model, ckpt.get("train_model", ckpt["model"]), trainer.paths["last.pt"])
    if "train_model" in ckpt and trainer.eval_model is trainer.bare_model:
        trainer.log("weights: the checkpoint's moving average is dropped (train.ema_decay is now off); "
                 "training continues from its trained weights")
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("grad_scaler"):  # fp16 runs: the loss scale the run had reached
        trainer.scaler.load_state_dict(ckpt["grad_scaler"])
    trainer.iteration, trainer.start_epoch = int(ckpt["iteration"]), int(ckpt["epoch"])
    trainer.epoch = trainer.start_epoch
    trainer.best_value = ckpt.get("best", {}).get("value")
    restore_rng_states(ckpt.get("rng", {}), trainer.bare_model)
    budget = ckpt.get("time_budget")
    if budget and trainer.cfg.train.time_budget is not None:  # the time-budget hook checks the plan still fits
        trainer.spent_before = float(budget["spent_s"])
        trainer.set_epochs(int(budget["epochs"]), write_config=False)  # set-up writes config.yaml next
    trainer.last_good_checkpoint = trainer.paths["last.pt"]
    for hook in trainer.hooks:
        hook.load_checkpoint(trainer, ckpt)
    trainer.log(f"resumed from {trainer.paths['last.pt']} at epoch {trainer.start_epoch}, "
                f"iteration {trainer.iteration}")
