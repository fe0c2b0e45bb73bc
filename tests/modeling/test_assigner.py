"""detkit.modeling.assigner.MaxIoUAssigner: torchvision Matcher parity, ignore regions, no ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from detkit.modeling.assigner import MaxIoUAssigner
from detkit.ops.boxes import box_iof
from detkit.testing import random_boxes

IMAGE = 256.0              # side of the square image grid_anchors() covers
GT_SIDE = (10.0, 120.0)    # sides of the random ground-truth boxes


def grid_anchors(size=256, stride=8, sizes=(24, 48, 96)):
    ys, xs = np.meshgrid(np.arange(0, size, stride), np.arange(0, size, stride), indexing="ij")
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    out = []
    for s in sizes:
        for ratio in (0.5, 1.0, 2.0):
            w, h = s / math.sqrt(ratio), s * math.sqrt(ratio)
            out.append(np.concatenate([centres - [w / 2, h / 2], centres + [w / 2, h / 2]], 1))
    return torch.from_numpy(np.concatenate(out).astype(np.float32))


def torchvision_labels(anchors, gt, pos, neg, low_quality):
    iou = box_iou(gt, anchors)
    matches = Matcher(pos, neg, low_quality)(iou)
    return iou.max(0)[1], torch.where(matches >= 0, 1, torch.where(matches == -1, 0, -1)).to(torch.int8)


@pytest.mark.parametrize("pos", [0.2, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("low_quality", [True, False])
def test_assign_matches_torchvision_matcher(pos, seed, low_quality):
    anchors, gt = grid_anchors(), random_boxes(12, seed, IMAGE, GT_SIDE)
    assigner = MaxIoUAssigner(pos_iou_thr=pos, neg_iou_thr=pos * 0.6, allow_low_quality_matches=low_quality)
    idx, labels = assigner.assign(anchors, gt)
    ref_idx, ref_labels = torchvision_labels(anchors, gt, pos, pos * 0.6, low_quality)
    assert torch.equal(idx, ref_idx) and torch.equal(labels, ref_labels)
    assert idx.dtype == torch.int64 and labels.dtype == torch.int8
    assert int(idx.min()) >= 0 and int(idx.max()) < gt.shape[0]


def test_ignore_regions_turn_negatives_into_ignored_only():
    anchors, gt = grid_anchors(), random_boxes(6, 3, IMAGE, GT_SIDE)
    ignore = torch.cat([random_boxes(2, 4, IMAGE, (60.0, 100.0)), gt[:1]])   # one region covers a real object
    assigner = MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3, ignore_iof_thr=0.5)
    idx, labels = assigner.assign(anchors, gt, ignore)
    ref_idx, ref_labels = torchvision_labels(anchors, gt, 0.7, 0.3, True)
    covered = box_iof(anchors, ignore).max(1).values > 0.5
    assert torch.equal(idx, ref_idx)
    assert torch.equal(labels[~covered], ref_labels[~covered])
    assert bool((labels[covered & (ref_labels == 0)] == -1).all())
    assert torch.equal(labels[covered & (ref_labels != 0)], ref_labels[covered & (ref_labels != 0)])
    assert int((covered & (ref_labels == 1)).sum()) > 0   # positives inside a region stay positive
    # without a threshold, or with no regions, ignore boxes change nothing
    plain = MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3)
    assert torch.equal(plain.assign(anchors, gt, ignore)[1], ref_labels)
    assert torch.equal(assigner.assign(anchors, gt, torch.zeros((0, 4)))[1], ref_labels)


def test_no_ground_truth():
    anchors = grid_anchors()
    assigner = MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3, ignore_iof_thr=0.5)
    idx, labels = assigner.assign(anchors, torch.zeros((0, 4)))
    assert bool((idx == 0).all()) and bool((labels == 0).all())
    ignore = random_boxes(2, 5, IMAGE, (60.0, 100.0))
    idx, labels = assigner.assign(anchors, torch.zeros((0, 4)), ignore)
    covered = box_iof(anchors, ignore).max(1).values > 0.5
    assert bool((labels[covered] == -1).all()) and bool((labels[~covered] == 0).all())
    assert int(covered.sum()) > 0
    idx, labels = assigner.assign(torch.zeros((0, 4)), random_boxes(3, 0, IMAGE, GT_SIDE))
    assert idx.shape == labels.shape == (0,)


def test_invalid_thresholds():
    with pytest.raises(ValueError, match="neg_iou_thr"):
        MaxIoUAssigner(pos_iou_thr=0.3, neg_iou_thr=0.7)
    with pytest.raises(ValueError, match="ignore_iof_thr"):
        MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3, ignore_iof_thr=1.5)
