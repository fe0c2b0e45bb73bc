"""detkit/engine/hooks/evaluation.py: when BatchNorm is refreshed and the split evaluated, best tracking."""

import json

import pytest

from detkit.engine.hooks import EvaluationHook, PreciseBNHook
from detkit.engine.hooks import evaluation as evaluation_module
from detkit.evaluation.evaluator import COCO_METRIC_NAMES
from tests.engine.hooks.fake_trainer import epoch_end, fake_trainer


def _metrics(m_ap):
    coco = {name: 0.25 for name in COCO_METRIC_NAMES}
    coco["mAP"] = m_ap
    return {"coco": coco, "voc": {"mAP50_area": 0.5}, "per_class": {"a": {"AP": m_ap, "AP50": 0.5}}}


@pytest.fixture
def recorded(monkeypatch):
    calls = {"refresh": 0, "evaluate": []}

    def refresh(model, cfg, train_set, device, *, num_batches, distributed, precision):
        calls["refresh"] += 1
        return num_batches

    def evaluate(model, dataset, cfg, device, progress, precision):
        value = calls["values"].pop(0)
        calls["evaluate"].append(value)
        return _metrics(value), [{"score": value}]

    monkeypatch.setattr(evaluation_module, "refresh_detector_bn_stats", refresh)
    monkeypatch.setattr(evaluation_module, "run_evaluation", evaluate)
    return calls


def test_precise_bn_runs_before_evaluations_and_stopped_epochs_only(tmp_path, recorded):
    trainer = fake_trainer(tmp_path, eval_model=None, train_set=None)
    hook = PreciseBNHook(num_batches=5)
    hook.after_epoch(trainer, epoch_end(0))
    assert recorded["refresh"] == 0
    hook.after_epoch(trainer, epoch_end(1, evaluate=True))
    hook.after_epoch(trainer, epoch_end(2, stopped=True))
    assert recorded["refresh"] == 2 and "re-estimated over 5 training batches" in trainer.messages[0]
    trainer.metrics = {"coco": {}}  # evaluated during the run: no final refresh
    hook.after_train(trainer)
    assert recorded["refresh"] == 2
    trainer.metrics = None  # a finished run resumed: the final evaluation needs fresh statistics
    hook.after_train(trainer)
    assert recorded["refresh"] == 3
    trainer.stopped_early = True  # already refreshed at the end of its last epoch
    hook.after_train(trainer)
    assert recorded["refresh"] == 3


def test_evaluations_track_the_best_and_the_end_writes_eval_json(tmp_path, recorded):
    recorded["values"] = [0.3, 0.2, 0.4]
    trainer = fake_trainer(tmp_path, eval_model=None, val_set=None, iteration=12)
    hook = EvaluationHook()
    hook.after_epoch(trainer, epoch_end(0))
    assert recorded["evaluate"] == []
    for index in (1, 2):
        hook.after_epoch(trainer, epoch_end(index, evaluate=True))
    assert [b[1].improved for b in trainer.broadcasts] == [True, False]
    assert trainer.best_value == 0.3 and trainer.broadcasts[0][1].epoch == 2
    assert all(point == "after_evaluation" for point, _ in trainer.broadcasts)
    hook.after_train(trainer)  # evaluated already and not stopped: no final evaluation
    assert len(recorded["evaluate"]) == 2
    assert json.loads(open(trainer.paths["eval.json"]).read())["coco"]["mAP"] == 0.2
    assert json.loads(open(trainer.paths["detections.json"]).read()) == [{"score": 0.2}]
    trainer.stopped_early = True
    hook.after_train(trainer)
    assert recorded["evaluate"][-1] == 0.4 and trainer.best_value == 0.4
