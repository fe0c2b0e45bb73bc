"""A stand-in for the Trainer with just the attributes hooks read, so each hook is tested alone."""

from types import SimpleNamespace

import torch

from detkit.config import load_config
from detkit.engine.hooks import EpochEnd, Evaluation, StepInfo
from detkit.runtime import distributed as dist


def fake_trainer(tmp_path, *overrides, **attributes):
    cfg = load_config(None, list(overrides))
    out = str(tmp_path)
    messages = []
    trainer = SimpleNamespace(
        cfg=cfg, ctx=dist.get_context(), log=messages.append, messages=messages, out=out, quiet=True,
        paths={n: f"{out}/{n}" for n in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json",
                                          "detections.json")},
        device=torch.device("cpu"), eval_precision=None, iteration=0, epoch=0, total_iters=100, best_value=None,
        last_good_checkpoint=None, metrics=None, stopped_early=False, classes=["a", "b"], epochs=cfg.train.epochs,
    )
    trainer.broadcasts = []
    trainer.broadcast = lambda point, *args: trainer.broadcasts.append((point, *args))
    vars(trainer).update(attributes)
    return trainer


def step(iteration, loss=1.0, epoch=1):
    return StepInfo(epoch=epoch, iteration=iteration, losses={"loss_a": loss, "loss": loss}, lr=0.01, img_per_s=3.0)


def epoch_end(index, *, stopped=False, evaluate=False, last=False):
    return EpochEnd(index=index, completed=index if stopped else index + 1, stopped_early=stopped,
                    evaluate=evaluate, last=last, seconds=2.0, img_per_s=4.0)


def evaluation(iteration):
    """An improving evaluation with a few COCO numbers, one class and a validation loss."""
    metrics = {"coco": {"mAP": 0.5, "AP50": 0.7}, "voc": {"mAP50_area": 0.6},
               "per_class": {"a": {"AP": 0.4}}, "val_loss": {"loss": 1.5}}
    return Evaluation(epoch=1, iteration=iteration, metrics=metrics, results=[], improved=True)
