"""Tests of train.time_budget: the planner (detkit/engine/time_budget.py) as pure functions, the schedule
that follows a plan (resize_scheduler), the config check, and tiny training runs to a budget, resumed too
(detkit/engine/hooks/time_budget.py). Timing tolerances are generous: the machine may be loaded."""

import json
import re
import time

import pytest
from torch import nn

from detkit.config import load_config
from detkit.engine.hooks import time_budget as budget_hook
from detkit.engine.optim import build_optimizer, build_scheduler, lr_factor, resize_scheduler
from detkit.engine.time_budget import (
    describe_plan,
    estimate_eval_seconds,
    evaluations_left,
    plan_epochs,
    projected_seconds,
)
from detkit.engine.trainer import Trainer
from detkit.errors import ConfigError
from detkit.weights.checkpoint import load_checkpoint
from tests.engine.hooks.fake_trainer import epoch_end, evaluation, fake_trainer, step

# 10 iterations of 1 s per epoch and a 5 s evaluation after each: 15 s an epoch.
COSTS = dict(s_per_iter=1.0, iters_per_epoch=10, eval_s=5.0, eval_every=1)


# ---------------------------------------------------------------------------------------------- the planner
def test_a_budget_that_fits_exactly_gives_its_epochs():
    assert plan_epochs(45.0, 0.0, **COSTS) == 3
    assert plan_epochs(44.99, 0.0, **COSTS) == 2
    assert projected_seconds(3, elapsed_s=0.0, iteration=0, **COSTS) == 45.0


def test_set_up_already_spent_counts():
    assert plan_epochs(45.0, 10.0, **COSTS) == 2  # 10 s of set-up leave 35 s: two epochs of 15 s
    assert plan_epochs(100.0, 0.0, **COSTS) == 6


def test_evaluation_cost_is_included():
    no_eval = dict(COSTS, eval_s=0.0)
    assert plan_epochs(45.0, 0.0, **no_eval) == 4
    # Evaluating every 2nd epoch and the last: 3 epochs = 30 s + evaluations after epochs 2 and 3.
    every_2 = dict(COSTS, eval_every=2)
    assert projected_seconds(3, elapsed_s=0.0, iteration=0, **every_2) == 30.0 + 2 * 5.0
    # Only the final evaluation (eval_every 0): 4 epochs + 1 evaluation = 45 s.
    assert plan_epochs(45.0, 0.0, **dict(COSTS, eval_every=0)) == 4
    assert plan_epochs(44.0, 0.0, **dict(COSTS, eval_every=0)) == 3


@pytest.mark.parametrize("done, epochs, every, expected", [
    (0, 3, 1, 3), (0, 3, 2, 2), (0, 4, 2, 2), (1, 4, 2, 2), (2, 4, 2, 1), (0, 5, 0, 1), (3, 3, 1, 0), (4, 3, 1, 0),
])
def test_evaluations_left(done, epochs, every, expected):
    assert evaluations_left(done, epochs, every) == expected


def test_a_budget_too_small_for_one_epoch_still_trains_one_and_says_so():
    assert plan_epochs(5.0, 0.0, **COSTS) == 1
    assert plan_epochs(5.0, 60.0, **COSTS) == 1  # already past the budget: still the one epoch
    text = describe_plan(budget_s=5.0, elapsed_s=0.0, epochs=1, eval_measured=False, iteration=0,
                         replaces="train.epochs=12", **COSTS)
    assert "planned 1 epoch," in text and "too small for 1 epoch" in text and "replaces train.epochs=12" in text
    assert "too small" not in describe_plan(budget_s=45.0, elapsed_s=0.0, epochs=3, eval_measured=True,
                                            iteration=0, replaces="train.epochs=12", **COSTS)


def test_the_epoch_in_progress_is_never_dropped():
    # At iteration 25 (epoch 3 running) 40 s are gone of 45: epoch 3 still runs to its end.
    assert plan_epochs(45.0, 40.0, iteration=25, epochs_done=2, min_epochs=3, **COSTS) == 3


def test_at_the_end_of_an_epoch_its_evaluation_may_still_be_ahead():
    # Iteration 10 = the end of epoch 1: planned from its last step, its evaluation is still to come.
    ahead = projected_seconds(1, elapsed_s=10.0, iteration=10, epochs_done=0, **COSTS)
    behind = projected_seconds(1, elapsed_s=15.0, iteration=10, **COSTS)
    assert ahead == behind == 15.0


def test_a_resume_plans_the_same_epochs_from_the_remainder():
    full = plan_epochs(100.0, 2.0, **COSTS)
    # Stopped after epoch 2 (2 s set-up + 2 x 15 s): the remainder gives the same plan ...
    assert plan_epochs(100.0, 32.0, iteration=20, epochs_done=2, min_epochs=3, **COSTS) == full
    # ... and a remainder eaten by a slow first session gives fewer epochs.
    assert plan_epochs(100.0, 60.0, iteration=20, epochs_done=2, min_epochs=3, **COSTS) < full


def test_slack_lets_a_plan_end_a_little_past_the_budget():
    assert plan_epochs(44.0, 0.0, **COSTS) == 2
    assert plan_epochs(44.0, 0.0, slack_s=2.0, **COSTS) == 3


def test_a_large_budget_is_planned_quickly_and_exactly():
    epochs = plan_epochs(24 * 3600.0, 30.0, s_per_iter=0.01, iters_per_epoch=100, eval_s=100.0, eval_every=1)
    assert projected_seconds(epochs, elapsed_s=30.0, iteration=0, s_per_iter=0.01, iters_per_epoch=100,
                             eval_s=100.0, eval_every=1) <= 24 * 3600.0
    assert projected_seconds(epochs + 1, elapsed_s=30.0, iteration=0, s_per_iter=0.01, iters_per_epoch=100,
                             eval_s=100.0, eval_every=1) > 24 * 3600.0


def test_the_evaluation_estimate_grows_with_the_validation_split_and_precise_bn():
    small = estimate_eval_seconds(1.0, val_images=10, images_per_iter=2, precise_bn_batches=0)
    assert small > 0
    assert estimate_eval_seconds(1.0, val_images=20, images_per_iter=2, precise_bn_batches=0) == 2 * small
    assert estimate_eval_seconds(1.0, val_images=10, images_per_iter=2, precise_bn_batches=10) > small


def test_the_planner_rejects_no_speed():
    with pytest.raises(ValueError):
        plan_epochs(10.0, 0.0, s_per_iter=0.0, iters_per_epoch=10, eval_s=1.0, eval_every=1)


# ---------------------------------------------------------------------------------------------- the schedule
@pytest.mark.parametrize("schedule", ["cosine", "multistep"])
def test_a_resized_schedule_keeps_its_position_and_scales_its_milestones(schedule):
    cfg = load_config(None, [f"train.schedule={schedule}", "train.lr=0.1", "train.warmup_iters=5",
                             "train.lr_steps=[0.5]"]).train
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, total_iters=200)
    for _ in range(30):
        opt.step()
        sched.step()
    sched = resize_scheduler(sched, opt, cfg, total_iters=50)
    assert sched.last_epoch == 30
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(30, cfg, 50))
    for it in range(31, 60):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * lr_factor(it, cfg, 50))
    if schedule == "multistep":  # the milestone moved from iteration 100 to 25: already passed
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    warm = load_config(None, ["train.warmup_iters=5", "train.warmup_factor=0.5"]).train
    assert lr_factor(2, warm, 50) == lr_factor(2, warm, 5000)  # the warm-up stays in iterations


# ---------------------------------------------------------------------------------------------- the config
@pytest.mark.parametrize("value", ["0", "-1", ".inf", ".nan"])
def test_the_budget_must_be_positive_minutes_or_null(value):
    with pytest.raises(ConfigError, match="train.time_budget"):
        load_config(None, [f"train.time_budget={value}"])


def test_the_budget_defaults_to_null_and_reads_minutes():
    assert load_config(None, []).train.time_budget is None
    assert load_config(None, ["train.time_budget=30"]).train.time_budget == 30.0


# ---------------------------------------------------------------------------------------------- training
def _records(run, kind):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def _planned(messages):
    """The epoch count of the last plan the run printed (planned, re-planned or kept)."""
    counts = [int(m) for text in messages
              for m in re.findall(r"(?:planned|keeping the plan of) (\d+) epochs?\b", text)]
    assert counts, messages
    return counts[-1]


def _budget_used(messages):
    found = [float(m.group(1)) * 60 for text in messages for m in [re.search(r"time budget: ([\d.]+) of", text)] if m]
    assert found, messages
    return found[-1]


def _run(tiny_cfg, messages, resume=False, **extra):
    values = {"train.epochs": 50, "train.time_budget": 0.3, "output.report": False, "output.plots": False,
              "eval.precise_bn_batches": 2, **extra}
    tic = time.perf_counter()
    Trainer(tiny_cfg(**values), resume=resume, quiet=True, log=messages.append).run()
    return time.perf_counter() - tic


def _epoch_cost(run):
    """The longest epoch of the run with its evaluation: the overshoot a budget allows."""
    epochs, evals = _records(run, "epoch"), _records(run, "eval")
    eval_s = max((e["time"] - p["time"] for p, e in zip(epochs, evals)), default=0.0)
    return max(e["seconds"] for e in epochs) + eval_s


def test_a_run_to_a_budget_trains_the_planned_epochs_and_ends_within_it(tiny_cfg, tmp_path):
    messages = []
    wall = _run(tiny_cfg, messages)
    run = tmp_path / "run"
    plans = [m for m in messages if "planned" in m and "time budget 0.3 min" in m]
    assert plans and "replaces train.epochs=50" in plans[0], messages
    planned = _planned(messages)
    assert [r["epoch"] for r in _records(run, "epoch")] == list(range(1, planned + 1))
    assert load_config(str(run / "config.yaml")).train.epochs == planned  # config.yaml records the plan
    assert load_checkpoint(run / "last.pt")["time_budget"]["epochs"] == planned
    # Within the budget, or past it by at most one epoch (and its evaluation); timing noise on top.
    slack = _epoch_cost(run) * 1.5 + 5.0
    assert _budget_used(messages) <= 0.3 * 60 + slack, messages
    assert wall <= 0.3 * 60 + slack + 5.0, (wall, messages)


def test_max_iters_wins_over_the_budget(tiny_cfg, tmp_path):
    messages = []
    _run(tiny_cfg, messages, **{"train.max_iters": 3, "train.time_budget": 5.0})
    assert any("train.max_iters=3 wins" in m for m in messages), messages
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 3


def test_a_resumed_run_keeps_its_budget_and_plan(tiny_cfg, tmp_path):
    run = tmp_path / "run"
    budget = 0.5
    first = []
    # The first session stops part-way through epoch 2 (as a killed run would), after its plan was made.
    _run(tiny_cfg, first, **{"train.max_iters": 6, "train.time_budget": budget})
    planned_first = _planned(first)
    saved = load_checkpoint(run / "last.pt")["time_budget"]
    assert saved["epochs"] == planned_first and saved["budget_s"] == budget * 60
    assert 0 < saved["spent_s"] < budget * 60 + 60

    second = []
    _run(tiny_cfg, second, resume=True, **{"train.time_budget": budget})
    kept = [m for m in second if "keeping the plan" in m]
    assert kept and f"{saved['spent_s'] / 60:.2f} min spent by earlier sessions" in kept[0], second
    assert f"keeping the plan of {planned_first} epoch" in kept[0]
    planned = _planned(second)
    # The plan is kept unless it had to shrink to stay within what was left; it never grows.
    assert planned == planned_first or any("re-planned" in m or "checked against" in m for m in second)
    assert planned <= planned_first
    assert [r["epoch"] for r in _records(run, "epoch")] == list(range(1, planned + 1))
    final = load_checkpoint(run / "last.pt")["time_budget"]
    assert final["epochs"] == planned and final["spent_s"] > saved["spent_s"]
    # The total over both sessions stays within the budget plus one epoch (noise on top) ...
    used = _budget_used(second)
    assert used <= budget * 60 + _epoch_cost(run) * 1.5 + 5.0, second
    assert used > saved["spent_s"]


# ---------------------------------------------------------------------------------------------- the hook
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _hook_trainer(tmp_path, monkeypatch, *overrides, budget_min=1.0, spent_before=0.0, epochs=12):
    """The hook alone on a stand-in trainer with a fake clock: 10 iterations an epoch, 4 validation images,
    no precise BN, the run started at clock 0."""
    clock = FakeClock()
    monkeypatch.setattr(budget_hook, "time", clock)
    trainer = fake_trainer(tmp_path, "train.batch_size=2", "eval.precise_bn_batches=0", f"train.epochs={epochs}",
                           f"train.time_budget={budget_min}", *overrides, iters_per_epoch=10, val_set=[0] * 4,
                           epochs=epochs, spent_before=spent_before, plans=[])
    trainer.seconds_spent = lambda: trainer.spent_before + clock.now

    def set_epochs(n, **_):
        trainer.plans.append(n)
        trainer.epochs = n
    trainer.set_epochs = set_epochs
    return budget_hook.TimeBudgetHook(budget_min, epochs), trainer, clock


def _train_epoch(hook, trainer, clock, epoch, *, s_per_iter=1.0, eval_s=None):
    hook.before_epoch(trainer, epoch)
    for _ in range(trainer.iters_per_epoch):
        clock.now += s_per_iter
        trainer.iteration += 1
        hook.after_step(trainer, step(trainer.iteration, epoch=epoch + 1))
    hook.after_epoch(trainer, epoch_end(epoch, evaluate=eval_s is not None))
    if eval_s is not None:
        clock.now += eval_s
        hook.after_evaluation(trainer, evaluation(trainer.iteration))


def test_the_hook_plans_after_the_window_and_shrinks_after_a_slow_first_evaluation(tmp_path, monkeypatch):
    hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch)
    clock.now = 2.0  # set-up
    hook.before_train(trainer)
    # Epoch 1: 1 s an iteration; the evaluation estimate is 1 s (4 images, half an iteration per 2 images).
    # At its end 12 s are spent: 12 + 10 (E - 1) + E x 1 <= 60 gives 5 epochs.
    _train_epoch(hook, trainer, clock, 0, eval_s=10.0)
    assert trainer.plans == [5]
    assert any("planned 5 epochs" in m and "replaces train.epochs=12" in m and "(estimated)" in m
               for m in trainer.messages), trainer.messages
    # The evaluation took 10 s: 22 + 10 (E - 1) + 10 (E - 1) <= 60 gives 2 epochs.
    _train_epoch(hook, trainer, clock, 1, eval_s=10.0)
    assert trainer.plans == [5, 2]
    assert any(m.startswith("re-planned after the first timed evaluation") and "planned 2 epochs" in m
               and "replaces the plan of 5 epochs" in m and "(measured)" in m for m in trainer.messages)
    assert hook.checkpoint_state(trainer) == {"time_budget_costs": {"eval_s": [10.0]}}


def test_a_faster_evaluation_does_not_grow_the_plan(tmp_path, monkeypatch):
    hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch)
    clock.now = 2.0
    hook.before_train(trainer)
    _train_epoch(hook, trainer, clock, 0, eval_s=0.1)
    _train_epoch(hook, trainer, clock, 1, eval_s=0.1)
    assert trainer.plans == [5]  # a re-plan only ever shrinks


def test_the_plan_is_refined_at_the_end_of_the_warm_up_and_may_grow_there(tmp_path, monkeypatch):
    """The first window was slow (one-off costs): the whole warm-up's measurement replaces it, and the
    plan grows to use the budget."""
    hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch, "train.warmup_iters=40", "train.eval_every=0",
                                         budget_min=2.0)
    clock.now = 2.0
    hook.before_train(trainer)
    # Epoch 1 at 2 s an iteration: planned at its end (22 s spent, 2 s per iteration after the first, a
    # final evaluation estimated at 2 s): 22 + 20 (E - 1) + 2 <= 120 gives 5 epochs.
    _train_epoch(hook, trainer, clock, 0, s_per_iter=2.0)
    assert trainer.plans == [5]
    # Epochs 2 to 4 at 1 s: at iteration 40 (the end of the warm-up), 52 s spent over 39 timed iterations
    # (1.23 s each): 52 + 1.23 (10 E - 40) + 1.23 <= 120 gives 9 epochs.
    for epoch in (1, 2):
        _train_epoch(hook, trainer, clock, epoch, s_per_iter=1.0)
        assert trainer.plans == [5]
    _train_epoch(hook, trainer, clock, 3, s_per_iter=1.0)
    assert trainer.plans == [5, 9]
    assert any(m.startswith("re-planned at the end of the warm-up") and "planned 9 epochs" in m
               and "replaces the plan of 5 epochs" in m for m in trainer.messages), trainer.messages
    # The plan used: 52 s + 50 iterations at 1 s + the final evaluation, within the 120 s.
    for epoch in range(4, 9):
        _train_epoch(hook, trainer, clock, epoch, s_per_iter=1.0, eval_s=1.0 if epoch == 8 else None)
    assert trainer.plans == [5, 9] and clock.now <= 120.0


@pytest.mark.parametrize("warmup", [0, 25])
def test_no_refinement_when_the_warm_up_ends_within_a_window_of_the_first_plan(tmp_path, monkeypatch, warmup):
    hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch, f"train.warmup_iters={warmup}", "train.eval_every=0",
                                         budget_min=2.0)
    clock.now = 2.0
    hook.before_train(trainer)
    _train_epoch(hook, trainer, clock, 0, s_per_iter=2.0)
    for epoch in (1, 2, 3):
        _train_epoch(hook, trainer, clock, epoch, s_per_iter=1.0)
    assert trainer.plans == [5]  # after the warm-up a plan only keeps or shrinks


def test_a_refinement_that_keeps_the_count_says_so_and_leaves_the_schedule(tmp_path, monkeypatch):
    hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch, "train.warmup_iters=40", "train.eval_every=0",
                                         budget_min=2.0)
    clock.now = 2.0
    hook.before_train(trainer)
    for epoch in range(4):  # 2 s an iteration throughout: the refinement confirms the first plan
        _train_epoch(hook, trainer, clock, epoch, s_per_iter=2.0)
    assert trainer.plans == [5]
    assert any(m.startswith("re-planned at the end of the warm-up") and "the plan of 5 epochs, unchanged" in m
               for m in trainer.messages), trainer.messages


def test_a_resumed_plan_is_kept_when_it_fits_and_shrunk_when_it_does_not(tmp_path, monkeypatch):
    checkpoint = {"time_budget": {"budget_s": 60.0, "spent_s": 24.0, "epochs": 4},
                  "time_budget_costs": {"eval_s": [1.0]}}
    for s_per_iter, expected in ((1.0, []), (3.0, [3])):
        hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch, spent_before=24.0, epochs=4)
        trainer.iteration = 20  # resumed after epoch 2, with 36 s of the 60 left
        hook.load_checkpoint(trainer, checkpoint)
        clock.now = 1.0
        hook.before_train(trainer)
        assert any("0.40 min spent by earlier sessions" in m and "keeping the plan of 4 epochs" in m
                   for m in trainer.messages)
        # Epoch 3 at 1 s an iteration: 35 s at its end + 2 evaluations of 1 s + epoch 4 = 47 s <= 60, the plan
        # of 4 stays. At 3 s an iteration: 55 s + 1 s (its evaluation) fits, 4 epochs (87 s) do not: 3.
        _train_epoch(hook, trainer, clock, 2, s_per_iter=s_per_iter, eval_s=1.0)
        assert trainer.plans == expected, trainer.messages
        if expected:
            assert any(m.startswith("checked against the remaining budget") for m in trainer.messages)


def test_a_changed_budget_on_resume_is_planned_afresh(tmp_path, monkeypatch):
    hook, trainer, clock = _hook_trainer(tmp_path, monkeypatch, budget_min=2.0, spent_before=24.0, epochs=4)
    trainer.iteration = 20
    hook.load_checkpoint(trainer, {"time_budget": {"budget_s": 60.0, "spent_s": 24.0, "epochs": 4}})
    assert any("changed from 1.0 to 2.0 min" in m for m in trainer.messages)
    clock.now = 1.0
    _train_epoch(hook, trainer, clock, 2, eval_s=1.0)
    assert trainer.plans and trainer.plans[0] > 4  # the larger budget gives more epochs
