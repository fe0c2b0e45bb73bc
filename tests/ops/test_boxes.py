"""detkit.ops.boxes against torchvision.ops (the oracle) and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from detkit.ops.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iof,
    box_iou,
    box_xyxy_to_cxcywh,
    centred_iou,
    clip_boxes,
    remove_small_boxes,
)
from detkit.testing import random_boxes

# Boxes with sides 0..120 (some without area) on a 500 x 500 canvas, crossing its border by up to 20.
BOXES = dict(canvas=500.0, side=(0.0, 120.0), margin=20.0)


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_and_area_match_torchvision(seed, dtype):
    a, b = random_boxes(300, seed, dtype=dtype, **BOXES), random_boxes(70, seed + 10, dtype=dtype, **BOXES)
    b[:5] = a[:5]                       # identical pairs
    b[5, 2] = b[5, 0]                   # zero area
    a[7, 3] = a[7, 1] - 4               # inverted
    exact(box_area(a), torchvision.ops.box_area(a))
    exact(box_iou(a, b), torchvision.ops.box_iou(a, b))


def test_box_iou_large_coordinates_and_nan_quirk():
    a = random_boxes(50, 4, **BOXES) * 200.0     # up to 1e5
    exact(box_iou(a, a), torchvision.ops.box_iou(a, a))
    zero = torch.tensor([[3.0, 3, 3, 3]])
    assert torch.isnan(box_iou(zero, zero)).all()   # 0 / 0, as in torchvision
    assert box_iou(torch.zeros((0, 4)), a).shape == (0, 50)


@pytest.mark.parametrize("seed", [0, 1])
def test_box_conversions_match_torchvision(seed):
    boxes = random_boxes(200, seed, **BOXES)
    cxcywh = box_xyxy_to_cxcywh(boxes)
    exact(cxcywh, torchvision.ops.box_convert(boxes, "xyxy", "cxcywh"))
    exact(box_cxcywh_to_xyxy(cxcywh), torchvision.ops.box_convert(cxcywh, "cxcywh", "xyxy"))
    torch.testing.assert_close(box_cxcywh_to_xyxy(cxcywh), boxes)


def test_clip_and_remove_small_match_torchvision():
    boxes = random_boxes(300, 3, **BOXES)
    assert bool((boxes[:, :2] < 0).any() and (boxes[:, 2] > 320).any() and (boxes[:, 3] > 240).any())
    exact(clip_boxes(boxes, (240, 320)), torchvision.ops.clip_boxes_to_image(boxes, (240, 320)))
    batched = boxes.reshape(60, 5, 4)
    exact(clip_boxes(batched, (240, 320)), torchvision.ops.clip_boxes_to_image(batched, (240, 320)))
    for min_size in (0.0, 1.0, 30.0):
        assert torch.equal(remove_small_boxes(boxes, min_size), torchvision.ops.remove_small_boxes(boxes, min_size))


def test_box_iof_hand_values():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9], [20, 20, 30, 40.0]])
    regions = torch.tensor([[5, 0, 100, 100], [0, 0, 1, 1.0]])
    expected = torch.tensor([[0.5, 0.01], [0.5, 0.01], [0.0, 0.0], [1.0, 0.0]])
    exact(box_iof(boxes, regions), expected)
    assert box_iof(boxes, torch.zeros((0, 4))).shape == (4, 0)


def test_box_iof_matches_pairwise_loop():
    boxes, regions = random_boxes(40, 5, **BOXES), random_boxes(9, 6, **BOXES)
    out = box_iof(boxes, regions)
    for i in range(40):
        for j in range(9):
            w = (torch.min(boxes[i, 2], regions[j, 2]) - torch.max(boxes[i, 0], regions[j, 0])).clamp(min=0)
            h = (torch.min(boxes[i, 3], regions[j, 3]) - torch.max(boxes[i, 1], regions[j, 1])).clamp(min=0)
            area = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            assert out[i, j] == (w * h / area if area > 0 else 0.0)


def test_centred_iou_is_iou_of_centred_boxes():
    g = np.random.default_rng(0)
    wh1 = torch.from_numpy(g.uniform(1, 300, (30, 2))).float()
    wh2 = torch.from_numpy(g.uniform(1, 300, (12, 2))).float()
    centred = [torch.cat([-wh / 2, wh / 2], 1) for wh in (wh1, wh2)]
    torch.testing.assert_close(centred_iou(wh1, wh2), torchvision.ops.box_iou(*centred))
    torch.testing.assert_close(centred_iou(wh1, wh2), centred_iou(wh2, wh1).T)
    assert torch.equal(centred_iou(wh1, wh1).diagonal(), torch.ones(30))
