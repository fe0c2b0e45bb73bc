"""Which hooks a training run has, and in what order: decided here, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

from detkit.engine import hooks as H

if TYPE_CHECKING:  # the trainer imports this module, not the other way round
    from detkit.engine.trainer import Trainer

__all__ = ["build_hooks"]


def build_hooks(trainer: "Trainer") -> List[H.Hook]:
    """The run's side jobs, in the order they are called at every point of the loop."""
    cfg, main = trainer.cfg, trainer.ctx.is_main
    # First: no other hook sees a non-finite step. GPU losses are read every log_every steps only.
    hooks: List[H.Hook] = [H.NaNGuardHook(check_every=cfg.train.log_every)]
    if cfg.train.ema_decay is not None:
        ema = H.EMAHook(trainer.bare_model, cfg.train.ema_decay, cfg.train.ema_tau)
        trainer.eval_model = ema.model  # the average is what is evaluated and saved as "model"
        hooks.append(ema)
    if cfg.model.anchors.mode == "learned" and cfg.model.anchors.online_warmup:
        hooks.append(H.OnlineAnchorsHook())
    hooks.append(H.ProgressHook(quiet=trainer.quiet))
    if cfg.train.time_budget is not None:  # before precise BN and the evaluation: it times them
        hooks.append(H.TimeBudgetHook(cfg.train.time_budget, cfg.train.epochs))
    # Precise BN (the statistics the evaluation uses and last.pt holds), then the evaluation.
    hooks += [H.PreciseBNHook(cfg.eval.precise_bn_batches), H.EvaluationHook(), H.BestCheckpointHook()]
    if cfg.train.keep_evaluated:
        hooks.append(H.EvaluatedWeightsHook())
    if main:  # the writers exist on rank 0 alone
        hooks.append(H.MetricsLogHook(trainer.paths["metrics.jsonl"], cfg.train.log_every))
        if cfg.output.tensorboard:
            hooks.append(H.TensorBoardHook(trainer.out, cfg.train.log_every))
        if cfg.output.plots:
            hooks.append(H.PlotsHook())  # reads metrics.jsonl and the final evaluation
    # last.pt at the very end of an epoch, once its evaluation, best.pt and records are written: a run
    # killed before it resumes from the previous last.pt and redoes the whole epoch (records after that
    # checkpoint are dropped), one killed after it has nothing of the epoch left to redo.
    hooks.append(H.LastCheckpointHook(cfg.train.checkpoint_every))
    return hooks
