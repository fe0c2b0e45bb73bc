"""StepProfiler: the parts of a training step are timed exclusively, add up, and the wrappers come off."""

import time

import pytest
import torch

from detkit.engine.step_profile import StepProfiler
from detkit.modeling.detector import build_detector
from tests.modeling.test_detector import K, light_config, synthetic_images


@pytest.mark.parametrize("cascade", [None, [0.5, 0.6, 0.7]])
def test_buckets_cover_the_step_and_are_removed_afterwards(cascade):
    cfg = light_config("fpn")
    cfg.model.roi_head.cascade = cascade
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=K, log=lambda *_: None).train()
    images, targets = synthetic_images(2, size=96, seed=0)
    with StepProfiler(model) as prof:
        tic = time.perf_counter()
        for _ in range(2):
            losses = prof.forward(images, targets)
            with prof.part("backward"):
                sum(losses.values()).backward()
            prof.end_step()
        wall = time.perf_counter() - tic
    rows = prof.per_step()
    for bucket in ("backbone", "FPN", "RPN head", "RPN proposals", "RPN targets + loss", "RoI targets", "RoIAlign",
                   "box head", "RoI loss", "forward, other", "backward"):
        assert rows[bucket] > 0, bucket
    assert all(v >= 0 for v in rows.values())
    # Exclusive times: the buckets add up to the measured wall time (nothing counted twice or lost).
    assert abs(sum(rows.values()) * 2 - wall) < 0.05 * wall
    assert "forward" not in vars(model.backbone) and "propose" not in vars(model.rpn)  # unwrapped on exit
    for head in getattr(model.roi_head, "stages", [model.roi_head]):  # every stage of a cascade, once
        assert "sample_targets" not in vars(head) and "forward" not in vars(head.box_head)
    assert "total" in prof.table("t")
