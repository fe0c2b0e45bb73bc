"""detkit/engine/hooks/plots.py"""

import detkit.vis
from detkit.engine.hooks import PlotsHook
from tests.engine.hooks.fake_trainer import fake_trainer


def test_plots_are_drawn_from_the_log_and_the_final_evaluation(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(detkit.vis, "write_training_plots", lambda *args: calls.append(args))
    trainer = fake_trainer(tmp_path, metrics={"coco": {}})
    with open(trainer.paths["metrics.jsonl"], "w") as f:
        f.write('{"iteration": 1, "loss": 2.0}\n')
    PlotsHook().after_train(trainer)
    assert calls == [(trainer.out, [{"iteration": 1, "loss": 2.0}], {"coco": {}}, ["a", "b"])]
