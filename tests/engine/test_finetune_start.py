"""A fine-tuning start already detects: the first evaluation, before any step, is far above zero.

A detector memorises 8 synthetic images (tests/engine/memorise_setup.py); a new run over the same images,
with the classes listed in another order, starts from its checkpoint (model.weights). Its evaluation
before any training step must be close to the source's and far above a fresh model's, so classes were
transferred by name (not by position) and no head was silently left at its initialisation.
"""

from pathlib import Path

import torch

from detkit.data.formats import build_dataset
from detkit.evaluation.evaluate import run_evaluation
from detkit.modeling.detector import build_detector
from detkit.weights.start import apply_start_weights

from .memorise_setup import memorise_config


def _map_before_any_step(cfg, classes, start: bool) -> float:
    torch.manual_seed(0)
    model = build_detector(cfg, len(classes), log=lambda *_: None)
    if start:
        apply_start_weights(model, cfg, classes, log=lambda *_: None)
    dataset = build_dataset(cfg, "val", classes=classes)
    metrics, _ = run_evaluation(model, dataset, cfg, torch.device("cpu"), progress=False)
    return metrics["coco"]["mAP"]


def test_the_first_evaluation_of_a_fine_tuning_start_is_far_above_zero(tmp_path, memorised_run):
    source, trained = memorised_run
    source_map = trained["coco"]["mAP"] if "coco" in trained else None
    reordered = ["triangle", "circle", "square"]  # label k means another class than in the source
    overrides = {"data.classes": f"[{', '.join(reordered)}]", "model.backbone.norm": "bn",
                 "model.backbone.freeze_at": 0, "model.weights": str(Path(source.output.dir) / "last.pt")}
    cfg = memorise_config(tmp_path / "finetune", **overrides)
    started = _map_before_any_step(cfg, reordered, start=True)
    fresh = _map_before_any_step(cfg, reordered, start=False)
    assert fresh < 0.05
    assert started > 0.2 and started > fresh + 0.15
    if source_map is not None:
        assert abs(started - source_map) < 0.02  # the same detector, its classes renumbered
