"""detkit/engine/hooks/metrics_jsonl.py and records.py: what metrics.jsonl receives, and resume."""

import json

from detkit.engine.hooks import MetricsLogHook
from tests.engine.hooks.fake_trainer import epoch_end, evaluation, fake_trainer, step


def _read(path):
    return [json.loads(line) for line in open(path)]


def test_records_at_the_logging_points(tmp_path):
    trainer = fake_trainer(tmp_path)
    hook = MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=4)
    for i in range(1, 9):
        hook.after_step(trainer, step(i))
    trainer.iteration = 8
    hook.after_epoch(trainer, epoch_end(0))
    hook.after_epoch(trainer, epoch_end(1, stopped=True))  # a part-epoch: no epoch record
    hook.after_evaluation(trainer, evaluation(8))
    records = _read(trainer.paths["metrics.jsonl"])
    assert [(r["type"], r["iteration"]) for r in records] == [("train", 1), ("train", 4), ("train", 8),
                                                              ("epoch", 8), ("eval", 8)]
    assert set(records[0]) == {"type", "epoch", "iteration", "lr", "time", "img_per_s", "loss_a", "loss"}
    assert records[3]["seconds"] == 2.0 and records[3]["img_per_s"] == 4.0
    assert records[4]["mAP"] == 0.5 and records[4]["voc_mAP50"] == 0.6
    assert records[4]["per_class_AP"] == {"a": 0.4} and records[4]["val_loss"] == 1.5


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
    trainer = fake_trainer(tmp_path)
    hook = MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=1)
    for i in range(1, 6):
        hook.after_step(trainer, step(i))
    MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=1).load_checkpoint(trainer, {"iteration": 3})
    assert [r["iteration"] for r in _read(trainer.paths["metrics.jsonl"])] == [1, 2, 3]
    assert "dropped 2 record(s)" in trainer.messages[0]


def test_a_fresh_start_replaces_a_killed_runs_log(tmp_path):
    trainer = fake_trainer(tmp_path)
    old = MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=1)
    for i in range(1, 4):  # a run killed before its first checkpoint
        old.after_step(trainer, step(i))
    fresh = MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=1)
    fresh.before_train(trainer)
    fresh.after_step(trainer, step(1))
    assert [r["iteration"] for r in _read(trainer.paths["metrics.jsonl"])] == [1]
    assert any("replaced" in m for m in trainer.messages)


def test_a_repeated_evaluation_after_resume_is_logged_once(tmp_path):
    trainer = fake_trainer(tmp_path)
    hook = MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=1)
    hook.after_step(trainer, step(8))
    hook.after_evaluation(trainer, evaluation(8))  # the final evaluation, then the run was killed
    resumed = MetricsLogHook(trainer.paths["metrics.jsonl"], log_every=1)
    resumed.load_checkpoint(trainer, {"iteration": 8})
    resumed.before_train(trainer)  # a resume keeps the log
    resumed.after_evaluation(trainer, evaluation(8))  # the resumed run evaluates the same weights again
    assert [(r["type"], r["iteration"]) for r in _read(trainer.paths["metrics.jsonl"])] == [("train", 8), ("eval", 8)]
