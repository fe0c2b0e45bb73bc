"""Training to a time budget: measure the run's costs, plan its epoch count, re-plan when needed.

With ``train.time_budget`` set, the epoch count is not ``train.epochs`` but a plan
(:mod:`detkit.engine.time_budget` computes it) that :meth:`Trainer.set_epochs
<detkit.engine.trainer.Trainer.set_epochs>` applies: the LR schedule is rebuilt for the new length at
the iteration the run is at (the warm-up stays in iterations; cosine and multistep milestones scale).

When the plan is made and changed:

1. **The first plan**, after a short measurement window: ``MEASURE_ITERATIONS`` iterations after the
   first ``SKIP_ITERATIONS`` (one-off costs: kernels compiled, memory allocated, loader workers
   started), or the end of the first epoch when that comes sooner. This is early in the LR warm-up,
   before the schedule's length matters much, so the switch to the planned length barely moves the LR.
   The evaluation's cost is estimated from the training speed until one has been timed.
   **Refined at the end of the LR warm-up** (``train.warmup_iters``), when that comes at least
   ``MEASURE_ITERATIONS`` iterations after the first plan: re-planned from every iteration since the
   skipped ones, and this re-plan may grow the plan as well as shrink it. The first window carries
   one-off costs beyond the skipped iteration (a multi-scale run meets each new input size's kernels
   there): on BCCD in fp32 it measured 3.69 s per iteration where the run averaged about 3.3, and a
   plan that could not grow left a fifth of a 78-minute budget unused. Until the warm-up ends the LR
   does not depend on the schedule's length, so the switch costs the schedule nothing.
2. **After the first timed evaluation** (precise BatchNorm included, and the epoch's checkpoint in the
   per-iteration cost), at the start of the next epoch: re-planned from the measured costs, and the
   plan shrinks if it no longer fits. Later evaluations re-check it the same way, allowing half an
   epoch past the budget so that timing noise alone does not drop an epoch.
3. **On a resume**, the plan comes back from the checkpoint (with the time spent, see
   :func:`detkit.engine.resume.run_state`); after the measurement window of the new session it is
   checked against the remaining budget and shrinks only if it no longer fits. A changed
   ``train.time_budget`` is planned afresh.

After the warm-up a plan never grows (a re-plan only keeps or shrinks it: growing would raise an
annealing LR); a plan never drops the epoch in progress, and every change is printed; so the run ends
within the budget, or past it by at most the epoch that was running when the costs turned out higher
than measured.

Under torch.distributed rank 0 measures and decides; every rank applies the same plan.
"""

from __future__ import annotations

import time
from typing import List, Optional

from detkit.engine.hooks.base import EpochEnd, Evaluation, Hook, StepInfo
from detkit.engine.time_budget import describe_plan, estimate_eval_seconds, plan_epochs
from detkit.runtime import distributed as dist

__all__ = ["TimeBudgetHook", "SKIP_ITERATIONS", "MEASURE_ITERATIONS"]

SKIP_ITERATIONS = 1  # the first iteration of a session carries one-off costs and is not measured
MEASURE_ITERATIONS = 20  # iterations timed before the first plan (fewer when the first epoch is shorter)


class TimeBudgetHook(Hook):
    """Plans ``trainer.epochs`` to fit ``budget_min`` minutes of wall time (see the module docstring).

    Changes ``trainer.epochs`` and ``trainer.scheduler`` through ``trainer.set_epochs``; adds
    ``time_budget_costs`` (the measured evaluation seconds) to the checkpoint. Place it before the
    precise-BatchNorm and evaluation hooks: it times them from its ``after_epoch`` to ``after_evaluation``.
    """

    def __init__(self, budget_min: float, configured_epochs: int) -> None:
        self.budget_s = budget_min * 60.0
        self.configured_epochs = configured_epochs
        self.planned = False  # a plan exists (made in this session, or restored from the checkpoint)
        self.refine_at: Optional[int] = None  # the iteration (end of the warm-up) at which a fresh plan is refined
        self.checked = False  # the plan was made or checked with this session's measurement window
        self.eval_seconds: List[float] = []  # timed evaluations (the latest of earlier sessions included)
        self.eval_timed_this_session = 0
        self.recheck_due = False  # an evaluation was timed since the plan was last checked
        self.session_iters = 0
        self.session_start: Optional[float] = None  # the start of this session's first epoch
        self.window_start: Optional[float] = None  # the end of this session's SKIP_ITERATIONS-th iteration
        self.eval_started: Optional[float] = None
        self.session_eval_s = 0.0  # evaluation time of this session after the window started

    # ------------------------------------------------------------------ measurements
    def _s_per_iter(self) -> float:
        """Seconds per training iteration of this session after the skipped ones (all of them when the
        first epoch is that short), evaluations excluded, checkpoints and data loading included."""
        timed = self.session_iters - SKIP_ITERATIONS
        if timed > 0:
            seconds = time.perf_counter() - self.window_start - self.session_eval_s
        else:
            seconds, timed = time.perf_counter() - self.session_start, self.session_iters
        return max(seconds, 1e-6) / max(timed, 1)

    def _eval_s(self, trainer, s_per_iter: float) -> float:
        if self.eval_seconds:
            return sum(self.eval_seconds) / len(self.eval_seconds)
        bn = trainer.cfg.eval.precise_bn_batches and min(trainer.cfg.eval.precise_bn_batches, trainer.iters_per_epoch)
        return estimate_eval_seconds(s_per_iter, val_images=len(trainer.val_set),
                                     images_per_iter=trainer.ctx.local_batch(trainer.cfg.train.batch_size),
                                     precise_bn_batches=bn)

    # ------------------------------------------------------------------ planning
    def _plan(self, trainer, *, min_epochs: int, grow: bool, slack_s: float, why: str) -> None:
        """Plan on rank 0 from this session's measurements and apply the result on every rank.

        Plans are made during epoch ``min_epochs`` (1-based) or just before it: its end (and evaluation)
        is ahead, and it is the fewest epochs a plan may keep."""
        decision = None
        if trainer.ctx.is_main:
            s_per_iter = self._s_per_iter()
            eval_s = self._eval_s(trainer, s_per_iter)
            fitted = plan_epochs(self.budget_s, trainer.seconds_spent(), s_per_iter=s_per_iter,
                                 iters_per_epoch=trainer.iters_per_epoch, eval_s=eval_s,
                                 eval_every=trainer.cfg.train.eval_every, iteration=trainer.iteration,
                                 epochs_done=min_epochs - 1, min_epochs=min_epochs, slack_s=slack_s)
            epochs = fitted if grow else min(fitted, trainer.epochs)
            if grow or epochs != trainer.epochs:
                first_plan = not self.planned and trainer.epochs == self.configured_epochs
                replaces = (f"train.epochs={self.configured_epochs}" if first_plan
                            else f"the plan of {trainer.epochs} epochs" if epochs != trainer.epochs
                            else f"the plan of {trainer.epochs} epochs, unchanged")
                text = describe_plan(budget_s=self.budget_s, elapsed_s=trainer.seconds_spent(), epochs=epochs,
                                     s_per_iter=s_per_iter, iters_per_epoch=trainer.iters_per_epoch, eval_s=eval_s,
                                     eval_measured=bool(self.eval_seconds), eval_every=trainer.cfg.train.eval_every,
                                     iteration=trainer.iteration, replaces=replaces, epochs_done=min_epochs - 1)
                decision = (epochs, f"{why}: {text}")
        decision = dist.broadcast_object(decision)
        self.planned, self.checked = True, True
        if decision is None:
            return
        epochs, text = decision
        trainer.log(text)
        if epochs != trainer.epochs:  # a refinement may confirm the plan: the schedule stays as it is
            trainer.set_epochs(epochs)

    def before_train(self, trainer) -> None:
        if trainer.cfg.train.max_iters is not None:
            trainer.log(f"time budget: train.max_iters={trainer.cfg.train.max_iters} wins: the run stops at that "
                        f"iteration even when the plan has more")
        if self.planned:
            spent = trainer.seconds_spent()
            trainer.log(f"time budget {self.budget_s / 60:.1f} min: {trainer.spent_before / 60:.2f} min spent by "
                        f"earlier sessions, {(self.budget_s - spent) / 60:.2f} min left after this set-up; "
                        f"keeping the plan of {trainer.epochs} epochs "
                        f"(replaces train.epochs={self.configured_epochs}; checked after the first iterations)")

    def before_epoch(self, trainer, epoch: int) -> None:
        if self.session_start is None:
            self.session_start = time.perf_counter()
        if not self.checked:
            return
        # Rank 0 alone times evaluations: it says whether there is something to re-check.
        due, first = dist.broadcast_object((self.recheck_due, self.eval_timed_this_session == 1))
        if not due:
            return
        self.recheck_due = False
        # A plan is checked at the start of an epoch: it may shrink down to this epoch, never drop it.
        slack = 0.0 if first else 0.5 * self._s_per_iter() * trainer.iters_per_epoch
        self._plan(trainer, min_epochs=epoch + 1, grow=False, slack_s=slack,
                   why="re-planned after the first timed evaluation" if first else "re-planned after an evaluation")

    def after_step(self, trainer, step: StepInfo) -> None:
        self.session_iters += 1
        if self.session_iters == SKIP_ITERATIONS:
            self.window_start = time.perf_counter()
        if self.checked:
            if self.refine_at is not None and step.iteration >= self.refine_at:
                self.refine_at = None
                self._plan(trainer, min_epochs=step.epoch, grow=True, slack_s=0.0,
                           why="re-planned at the end of the warm-up")
            return
        epoch_ends = step.iteration % trainer.iters_per_epoch == 0
        if self.session_iters >= SKIP_ITERATIONS + MEASURE_ITERATIONS or epoch_ends:
            if self.planned:  # a resumed plan: keep it unless it no longer fits what is left of the budget
                self._plan(trainer, min_epochs=step.epoch, grow=False, slack_s=0.0,
                           why="checked against the remaining budget")
            else:
                self._plan(trainer, min_epochs=step.epoch, grow=True, slack_s=0.0, why="planned")
                # Refine it once the warm-up ends, if that measures at least twice the first window.
                warmup_end = trainer.cfg.train.warmup_iters
                if warmup_end >= step.iteration + MEASURE_ITERATIONS:
                    self.refine_at = warmup_end

    def after_epoch(self, trainer, end: EpochEnd) -> None:
        if end.evaluate:
            self.eval_started = time.perf_counter()

    def after_evaluation(self, trainer, evaluation: Evaluation) -> None:
        if self.eval_started is None:  # the final evaluation after training: nothing left to plan
            return
        seconds = time.perf_counter() - self.eval_started
        self.eval_started = None
        if self.window_start is not None:
            self.session_eval_s += seconds
        if self.eval_timed_this_session == 0:
            self.eval_seconds = []  # an earlier session's figure gives way to this machine's
        self.eval_seconds.append(seconds)
        self.eval_timed_this_session += 1
        self.recheck_due = True

    # ------------------------------------------------------------------ resume
    def checkpoint_state(self, trainer) -> dict:
        return {"time_budget_costs": {"eval_s": self.eval_seconds[-1:]}}

    def load_checkpoint(self, trainer, checkpoint: dict) -> None:
        saved = checkpoint.get("time_budget")
        if not saved:
            trainer.log("time budget: the checkpoint holds no plan (the run had no train.time_budget); its time "
                        "before this session is not counted, and the run is planned afresh")
            return
        if abs(float(saved["budget_s"]) - self.budget_s) > 1e-6:
            trainer.log(f"time budget: changed from {float(saved['budget_s']) / 60:.1f} to {self.budget_s / 60:.1f} "
                        f"min; the run is planned afresh for what is left")
            return
        self.planned = True
        self.eval_seconds = list((checkpoint.get("time_budget_costs") or {}).get("eval_s", []))
