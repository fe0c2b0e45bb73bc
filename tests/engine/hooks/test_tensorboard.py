"""detkit/engine/hooks/tensorboard.py: event files TensorBoard's own reader parses, and the CLI switch."""

import glob

import pytest

from detkit.engine.hooks import TensorBoardHook
from tests.engine.conftest import tiny_overrides
from tests.engine.hooks.fake_trainer import epoch_end, evaluation, fake_trainer, step

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(log_dir):
    acc = event_accumulator.EventAccumulator(log_dir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_the_records_become_scalars(tmp_path):
    trainer = fake_trainer(tmp_path)
    hook = TensorBoardHook(str(tmp_path), log_every=2)
    hook.before_train(trainer)
    for i in range(1, 5):
        hook.after_step(trainer, step(i, loss=float(i)))
    trainer.iteration = 4
    hook.after_epoch(trainer, epoch_end(0))
    hook.after_evaluation(trainer, evaluation(4))
    hook.after_train(trainer)
    scalars = _scalars(str(tmp_path))
    assert scalars["train/loss"] == [(1, 1.0), (2, 2.0), (4, 4.0)]
    assert [s for s, _ in scalars["train/lr"]] == [1, 2, 4]
    assert scalars["epoch/img_per_s"] == [(4, 4.0)]
    assert scalars["eval/mAP"] == [(4, 0.5)] and scalars["eval/val_loss"] == [(4, 1.5)]
    assert scalars["eval_AP/a"] == [(4, pytest.approx(0.4))]


def test_train_tool_writes_event_files_when_asked(tmp_path):
    import tools.train as train_tool

    args = tiny_overrides(tmp_path, **{"train.max_iters": 2, "train.eval_every": 0, "eval.precise_bn_batches": 0})
    assert train_tool.main(["--quiet", *args, "output.tensorboard=true"]) == 0
    run = tmp_path / "run"
    assert glob.glob(str(run / "events.out.tfevents.*"))
    scalars = _scalars(str(run))
    assert [s for s, _ in scalars["train/loss"]] == [1, 2]
    assert "eval/mAP" in scalars
    plain = tmp_path / "plain"
    assert train_tool.main(["--quiet", *args, f"output.dir={plain}"]) == 0
    assert not glob.glob(str(plain / "events.out.tfevents.*"))
