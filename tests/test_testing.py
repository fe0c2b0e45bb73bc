"""detkit.testing: the seeded box sets the tests and benchmarks share."""

import pytest
import torch
import torchvision

from detkit.testing import clustered_boxes, uniform_boxes


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
