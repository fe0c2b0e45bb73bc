"""detkit.testing: the seeded box sets the tests and benchmarks share."""

import numpy as np
import pytest
import torch
import torchvision

from detkit.testing import clustered_boxes, lognormal_shapes, random_boxes, uniform_boxes


@pytest.mark.parametrize("make", [uniform_boxes, clustered_boxes])
def test_seeded_valid_and_typed(make):
    boxes, scores = make(500, 3, dtype=torch.float64)
    assert boxes.shape == (500, 4) and scores.shape == (500,) and boxes.dtype == scores.dtype == torch.float64
    again, _ = make(500, 3, dtype=torch.float64)
    assert torch.equal(boxes, again)
    assert not torch.equal(boxes, make(500, 4, dtype=torch.float64)[0])
    assert bool((boxes[:, 2:] - boxes[:, :2] >= 1).all())
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert make(0, 1)[0].shape == (0, 4)


def test_uniform_boxes_stay_on_the_canvas_with_the_asked_sides():
    boxes, _ = uniform_boxes(1000, 0, canvas=200.0, side=(5.0, 20.0))
    wh = boxes[:, 2:] - boxes[:, :2]
    assert bool((boxes >= 0).all() and (boxes <= 200).all())
    assert bool((wh >= 5 - 1e-4).all() and (wh <= 20 + 1e-4).all())


def test_clustered_boxes_are_copies_of_few_objects():
    boxes, scores = clustered_boxes(400, 0, objects=5)
    keep = torchvision.ops.nms(boxes, scores, 0.3)
    assert 5 <= len(keep) <= 10  # dense overlaps: about one box per object survives


@pytest.mark.parametrize("log_side", [False, True])
def test_random_boxes_sides_canvas_and_margin(log_side):
    boxes = random_boxes(2000, 0, canvas=(300.0, 200.0), side=(4.0, 60.0), log_side=log_side, margin=10.0)
    assert boxes.shape == (2000, 4) and boxes.dtype == torch.float32
    wh = boxes[:, 2:] - boxes[:, :2]
    assert bool((wh >= 4 - 1e-4).all() and (wh <= 60 + 1e-4).all())
    assert bool((boxes[:, :2] >= -10 - 1e-4).all() and (boxes[:, 2] <= 310 + 1e-4).all())
    assert bool((boxes[:, 3] <= 210 + 1e-4).all())
    assert bool((boxes[:, :2] < 0).any() and (boxes[:, 2] > 300).any())  # some cross the border
    small = float((wh < 15.5).float().mean())   # 15.5 = sqrt(4 * 60): half the sides when log-uniform
    assert small == pytest.approx(0.5 if log_side else 11.5 / 56, abs=0.03)


def test_random_boxes_seed_or_generator():
    assert torch.equal(random_boxes(50, 3, dtype=torch.float64), random_boxes(50, 3, dtype=torch.float64))
    g = np.random.default_rng(3)
    first, second = random_boxes(50, g, dtype=torch.float64), random_boxes(50, g, dtype=torch.float64)
    assert torch.equal(first, random_boxes(50, 3, dtype=torch.float64)) and not torch.equal(first, second)
    assert random_boxes(0, 1).shape == (0, 4)


def test_lognormal_shapes_cluster_around_the_centres():
    centres = np.array([[20.0, 40.0], [100.0, 60.0]])
    wh = lognormal_shapes(4000, 0, centres, 0.05)
    assert wh.shape == (4000, 2) and wh.dtype == torch.float64 and bool((wh > 0).all())
    nearest = np.abs(np.log(wh.numpy())[:, None] - np.log(centres)[None]).max(2).min(1)   # (N, C, 2) -> (N,)
    assert nearest.max() < 0.05 * 6
    assert torch.equal(wh, lognormal_shapes(4000, np.random.default_rng(0), centres, 0.05))
