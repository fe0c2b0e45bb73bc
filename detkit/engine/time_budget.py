"""Training to a time budget (``train.time_budget``, minutes): how many epochs fit, from measured costs.

The budget is wall time, from the start of set-up to the end of the final evaluation: set-up already
spent, the training iterations, the periodic evaluations (precise BatchNorm included) and the final
one. A run's projected length when it trains to ``epochs`` epochs is::

    elapsed_s + (epochs x iters_per_epoch - iteration) x s_per_iter + evaluations_left x eval_s

where ``elapsed_s`` is the wall time spent so far (earlier sessions of a resumed run included),
``s_per_iter`` the measured seconds per training iteration and ``eval_s`` the seconds of one
evaluation. :func:`plan_epochs` picks the largest epoch count whose projection fits the budget, and
never fewer than ``min_epochs`` (the epoch in progress cannot be dropped): a budget too small for
that many epochs overshoots, and :func:`describe_plan` says so.

Everything here is a pure function of numbers; when the trainer measures, plans and re-plans (and
how the LR schedule follows) is :class:`detkit.engine.hooks.time_budget.TimeBudgetHook`.
"""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["evaluations_left", "projected_seconds", "plan_epochs", "estimate_eval_seconds", "describe_plan",
           "EVAL_IMAGE_COST", "PRECISE_BN_BATCH_COST"]

# Before the first evaluation has been timed, its cost is estimated from the training speed. An image
# evaluated (forward without gradients, post-processing, scoring) costs about half of what it costs in a
# training iteration; a precise-BatchNorm batch (the backbone's forward alone) about a quarter of an
# iteration. The first timed evaluation replaces the estimate (and shrinks the plan if it was too low).
EVAL_IMAGE_COST = 0.5
PRECISE_BN_BATCH_COST = 0.25


def evaluations_left(done_epochs: int, epochs: int, eval_every: int) -> int:
    """How many evaluations a run still does after ``done_epochs`` completed epochs when it ends at ``epochs``.

    An evaluation follows every ``eval_every``-th epoch (0: none during training) and the last epoch,
    which is evaluated once even when it is also an ``eval_every`` epoch.
    """
    if epochs <= done_epochs:
        return 0
    periodic = epochs // eval_every - done_epochs // eval_every if eval_every > 0 else 0
    final_is_periodic = eval_every > 0 and epochs % eval_every == 0
    return periodic + (0 if final_is_periodic else 1)


def projected_seconds(epochs: int, *, elapsed_s: float, iteration: int, iters_per_epoch: int, s_per_iter: float,
                      eval_s: float, eval_every: int, epochs_done: Optional[int] = None) -> float:
    """The run's total wall time (seconds) if it trains to ``epochs`` epochs from where it is now.

    Args:
        epochs: the epoch count of the run (not the epochs still to come).
        elapsed_s: wall time spent so far, earlier sessions of a resumed run included.
        iteration: iterations done so far.
        iters_per_epoch: training iterations per epoch.
        s_per_iter: measured seconds per training iteration (data loading, checkpoints and logging included).
        eval_s: seconds of one evaluation, precise BatchNorm included.
        eval_every: ``train.eval_every`` (0: only the final evaluation).
        epochs_done: epochs whose end (their evaluation included) is behind the run; default
            ``iteration // iters_per_epoch``. At the last iteration of an epoch its evaluation is still
            ahead: pass the epoch's index (0-based) then.
    """
    iters_left = max(epochs * iters_per_epoch - iteration, 0)
    done = iteration // iters_per_epoch if epochs_done is None else epochs_done
    evals = evaluations_left(done, epochs, eval_every)
    return elapsed_s + iters_left * s_per_iter + evals * eval_s


def plan_epochs(budget_s: float, elapsed_s: float, *, s_per_iter: float, iters_per_epoch: int, eval_s: float,
                eval_every: int, iteration: int = 0, epochs_done: Optional[int] = None, min_epochs: int = 1,
                slack_s: float = 0.0) -> int:
    """The largest epoch count (at least ``min_epochs``) whose projected run ends within the budget.

    Args:
        budget_s: the whole run's budget in seconds (``train.time_budget`` x 60).
        elapsed_s, iteration, iters_per_epoch, s_per_iter, eval_s, eval_every, epochs_done: as in
            :func:`projected_seconds`; ``s_per_iter`` must be > 0.
        min_epochs: the fewest epochs to return, even when they do not fit (the epoch in progress,
            ``iteration // iters_per_epoch + 1``, cannot be dropped; a fresh run trains at least one).
        slack_s: how far past the budget a projection may end and still count as fitting (0: strictly
            within; the trainer allows half an epoch when re-checking a plan, so that timing noise alone
            does not cost an epoch).
    Returns:
        the epoch count; ``min_epochs`` when not even that fits (the run will overshoot: see
        :func:`describe_plan`).
    """
    if not s_per_iter > 0 or iters_per_epoch <= 0:
        raise ValueError(f"s_per_iter ({s_per_iter}) and iters_per_epoch ({iters_per_epoch}) must be > 0")
    limit = budget_s + slack_s

    def fits(epochs: int) -> bool:
        return projected_seconds(epochs, elapsed_s=elapsed_s, iteration=iteration, iters_per_epoch=iters_per_epoch,
                                 s_per_iter=s_per_iter, eval_s=eval_s, eval_every=eval_every,
                                 epochs_done=epochs_done) <= limit

    # The projection grows with the epoch count: start from a guess without evaluations (an upper
    # bound), then step down to the first count that fits.
    upper = math.floor((limit - elapsed_s) / (s_per_iter * iters_per_epoch) + iteration / iters_per_epoch)
    epochs = max(upper, min_epochs)
    while epochs > min_epochs and not fits(epochs):
        epochs -= 1
    return epochs


def estimate_eval_seconds(s_per_iter: float, *, val_images: int, images_per_iter: int,
                          precise_bn_batches: int) -> float:
    """An evaluation's cost before one has been timed, from the training speed.

    Args:
        s_per_iter: measured seconds per training iteration.
        val_images: images in the validation split (one process evaluates them all).
        images_per_iter: images one process trains on per iteration (its share of the batch).
        precise_bn_batches: batches the precise-BatchNorm pass runs before each evaluation (0: none).
    """
    per_image = s_per_iter / max(images_per_iter, 1)
    return (val_images * EVAL_IMAGE_COST * per_image) + precise_bn_batches * PRECISE_BN_BATCH_COST * s_per_iter


def describe_plan(*, budget_s: float, elapsed_s: float, epochs: int, s_per_iter: float, iters_per_epoch: int,
                  eval_s: float, eval_measured: bool, eval_every: int, iteration: int, replaces: str,
                  epochs_done: Optional[int] = None) -> str:
    """The line the trainer prints for a plan: the measured costs, the epoch count, and what it replaces.

    ``replaces`` names the count it takes the place of, e.g. ``"train.epochs=36"`` or ``"the plan of 23
    epochs"``. A plan that does not fit the budget (a budget too small for the epochs that must run)
    says how far past the budget the run is expected to end.
    """
    end = projected_seconds(epochs, elapsed_s=elapsed_s, iteration=iteration, iters_per_epoch=iters_per_epoch,
                            s_per_iter=s_per_iter, eval_s=eval_s, eval_every=eval_every, epochs_done=epochs_done)
    evaluation = f"evaluation ~{eval_s:.1f} s each ({'measured' if eval_measured else 'estimated'})"
    text = (f"time budget {budget_s / 60:.1f} min: {s_per_iter:.3g} s/iteration-batch "
            f"({iters_per_epoch} per epoch, ~{s_per_iter * iters_per_epoch:.1f} s/epoch), {evaluation}, "
            f"{elapsed_s / 60:.2f} min spent; planned {epochs} epoch{'s' if epochs != 1 else ''}, "
            f"ending at ~{end / 60:.2f} min (replaces {replaces})")
    if end > budget_s:
        text += (f"; the budget is too small for {epochs} epoch{'s' if epochs != 1 else ''}: the run is expected "
                 f"to end ~{(end - budget_s) / 60:.2f} min past it")
    return text
