"""detkit.ops.matching against torchvision's box_iou + Matcher (the oracle) and box_iof."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

from detkit.ops.boxes import box_iof
from detkit.ops.matching import match_max_iou, max_iof, max_iou_stats
from detkit.testing import random_boxes

THRESHOLDS = [0.2, 0.5, 0.7, 0.9]


def fpn_anchors(height, width, seed, keep=None):
    """torchvision-style anchors: strides 8..64, sizes 32..256, ratios 0.5 / 1 / 2 (optionally subsampled)."""
    out = []
    for stride, size in zip([8, 16, 32, 64], [32, 64, 128, 256]):
        ys, xs = np.meshgrid(np.arange(0, height, stride), np.arange(0, width, stride), indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
        for ratio in (0.5, 1.0, 2.0):
            w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
            out.append(np.concatenate([centres - [w / 2, h / 2], centres + [w / 2, h / 2]], 1))
    anchors = np.concatenate(out)
    if keep is not None:
        anchors = anchors[np.sort(np.random.default_rng(seed).choice(len(anchors), keep, replace=False))]
    return torch.from_numpy(anchors.astype(np.float32))


def random_gt(m, seed, height, width, side=(8.0, 300.0)):
    """m ground-truth boxes with log-uniform sides inside a height x width image (seed apart from the anchors')."""
    return random_boxes(m, seed + 100, (width, height), side, log_side=True)


def torchvision_match(anchors, gt, fg, bg, low_quality):
    """torchvision's answer in detkit's form: (best gt per anchor, labels in {-1, 0, 1})."""
    iou = box_iou(gt, anchors)
    matches = Matcher(fg, bg, low_quality)(iou)
    labels = torch.where(matches >= 0, 1, torch.where(matches == -1, 0, -1)).to(torch.int8)
    return iou.max(0)[1], labels


def assert_matches_torchvision(anchors, gt, fg, bg, low_quality):
    idx, labels = match_max_iou(anchors, gt, fg, bg, low_quality)
    ref_idx, ref_labels = torchvision_match(anchors, gt, fg, bg, low_quality)
    assert idx.dtype == torch.int64 and labels.dtype == torch.int8
    assert torch.equal(labels, ref_labels), f"{int((labels != ref_labels).sum())} labels differ"
    assert torch.equal(idx, ref_idx), f"{int((idx != ref_idx).sum())} matched indices differ"


@pytest.mark.parametrize("fg", THRESHOLDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("low_quality", [True, False])
def test_match_matches_torchvision(fg, seed, low_quality):
    anchors = fpn_anchors(320, 480, seed, keep=5000)
    gt = random_gt(15, seed, 320, 480)
    assert_matches_torchvision(anchors, gt, fg, fg * 0.5, low_quality)
    assert_matches_torchvision(anchors, gt, fg, fg, low_quality)


@pytest.mark.parametrize("seed", [0, 1])
def test_match_random_proposals(seed):
    """RoI-head-like input: proposals of any size plus the ground truth itself."""
    g = np.random.default_rng(seed)
    gt = random_gt(30, seed, 600, 800)
    xy = g.uniform(0, 700, (2000, 2))
    props = torch.from_numpy(np.concatenate([xy, xy + g.uniform(2, 500, (2000, 2))], 1).astype(np.float32))
    props = torch.cat([props, gt])
    for fg in (0.5, 0.7):
        assert_matches_torchvision(props, gt, fg, 0.5 * fg, True)


@pytest.mark.parametrize("fg", THRESHOLDS)
def test_match_exact_threshold_ious(fg):
    """Integer boxes give IoUs that are exactly a threshold; torch compares in float32."""
    g = np.random.default_rng(3)
    xy = g.integers(0, 10, (400, 2))
    anchors = np.concatenate([xy, xy + g.integers(1, 6, (400, 2))], 1).astype(np.float32)
    gxy = g.integers(0, 10, (12, 2))
    gt = np.concatenate([gxy, gxy + g.integers(1, 6, (12, 2))], 1).astype(np.float32)
    anchors, gt = torch.from_numpy(anchors), torch.from_numpy(gt)
    for bg in (fg, fg / 2, 0.2, 0.1):
        if bg <= fg:
            assert_matches_torchvision(anchors, gt, fg, bg, True)
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10 * fg]])
    assert_matches_torchvision(boxes[1:], boxes[:1], fg, fg / 2, False)


def test_match_ties_take_first_gt_and_flag_all_equal_anchors():
    gt = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 60, 60.0]])
    anchors = torch.tensor([[0, 0, 10, 20], [0, 0, 10, 20], [45, 45, 65, 65], [100, 100, 120, 120.0]])
    idx, labels = match_max_iou(anchors, gt, 0.7, 0.3, True)
    assert idx.tolist() == [0, 0, 2, 0]
    assert labels.tolist() == [1, 1, 1, 0]   # IoU 0.5 / 0.39 anchors are low-quality matches
    assert_matches_torchvision(anchors, gt, 0.7, 0.3, True)


def test_match_gt_without_any_overlap_turns_all_anchors_positive():
    """torchvision's quirk, kept on purpose: best IoU 0 ties with every anchor."""
    anchors = fpn_anchors(128, 128, 0)
    gt = torch.tensor([[10, 10, 50, 50], [1000, 1000, 1010, 1010.0]])
    idx, labels = match_max_iou(anchors, gt, 0.7, 0.3, True)
    assert bool((labels == 1).all())
    assert_matches_torchvision(anchors, gt, 0.7, 0.3, True)
    assert_matches_torchvision(anchors, gt, 0.7, 0.3, False)


@pytest.mark.parametrize("seed", [0, 1])
def test_match_degenerate_boxes_follow_torch_nan_rules(seed):
    anchors = fpn_anchors(160, 160, seed, keep=1500)
    gt = random_gt(10, seed, 160, 160)
    anchors[::50, 2] = anchors[::50, 0]          # zero-area anchors
    anchors[1::97, 3] = anchors[1::97, 1] - 3    # inverted anchors
    gt[0, 2] = gt[0, 0]                          # zero-area gt: IoU NaN with zero-area anchors
    gt = torch.cat([gt, anchors[:1]])            # a zero-area gt equal to an anchor
    for fg in (0.5, 0.7):
        assert_matches_torchvision(anchors, gt, fg, 0.3, True)
        assert_matches_torchvision(anchors, gt, fg, 0.3, False)


def test_match_float64_and_large_coordinates():
    anchors = fpn_anchors(320, 320, 0).double() * 300.0   # coordinates up to about 1e5
    gt = random_gt(20, 0, 320, 320).double() * 300.0
    assert_matches_torchvision(anchors, gt, 0.7, 0.3, True)
    assert_matches_torchvision(anchors.float(), gt.float(), 0.5, 0.4, True)


def test_max_iou_stats_equal_box_iou_reductions():
    anchors = fpn_anchors(256, 256, 1, keep=3000)
    gt = random_gt(25, 1, 256, 256)
    best_gt, best_iou, gt_best = max_iou_stats(anchors, gt)
    iou = box_iou(gt, anchors)
    values, indices = iou.max(0)
    assert torch.equal(best_gt, indices)
    assert torch.equal(best_iou, values)
    assert torch.equal(gt_best, iou.max(1).values)


def test_match_empty_inputs():
    anchors = fpn_anchors(64, 64, 0)
    idx, labels = match_max_iou(anchors, torch.zeros((0, 4)), 0.7, 0.3, True)
    assert idx.shape == labels.shape == (anchors.shape[0],)
    assert bool((idx == 0).all()) and bool((labels == 0).all())
    idx, labels = match_max_iou(torch.zeros((0, 4)), torch.ones((3, 4)), 0.7, 0.3, True)
    assert idx.shape == labels.shape == (0,) and idx.dtype == torch.int64 and labels.dtype == torch.int8
    one = torch.tensor([[0, 0, 10, 10.0]])
    assert match_max_iou(one, one, 0.7, 0.3, False)[1].tolist() == [1]


def test_match_input_errors():
    anchors = fpn_anchors(64, 64, 0)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        match_max_iou(anchors, torch.zeros((3, 5)), 0.7, 0.3, True)
    bad = anchors.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="anchors"):
        match_max_iou(bad, anchors[:2], 0.7, 0.3, True)
    with pytest.raises(ValueError, match="bg_iou_thresh"):
        match_max_iou(anchors, anchors[:2], 0.3, 0.7, True)


# --------------------------------------------------------------------------- ignore regions
@pytest.mark.parametrize("seed", [0, 1])
def test_max_iof_equals_box_iof(seed):
    anchors = fpn_anchors(200, 300, seed, keep=2500)
    regions = random_gt(6, seed, 200, 300, side=(20.0, 150.0))
    regions = torch.cat([regions, torch.tensor([[50, 50, 50, 80.0], [90, 90, 80, 80]])])  # degenerate regions
    assert torch.equal(max_iof(anchors, regions), box_iof(anchors, regions).max(1).values)
    anchors[::9, 2] = anchors[::9, 0]   # boxes without area give 0
    assert torch.equal(max_iof(anchors, regions), box_iof(anchors, regions).max(1).values)
    assert torch.equal(max_iof(anchors, torch.zeros((0, 4))), torch.zeros(anchors.shape[0]))


def test_match_with_ignore_regions():
    anchors = fpn_anchors(256, 256, 2)
    gt = random_gt(8, 2, 256, 256)
    ignore = random_gt(3, 9, 256, 256, side=(40.0, 120.0))
    ref_idx, ref_labels = torchvision_match(anchors, gt, 0.7, 0.3, True)
    iof = box_iof(anchors, ignore).max(1).values
    expected = ref_labels.clone()
    expected[(ref_labels == 0) & (iof > 0.5)] = -1
    idx, labels = match_max_iou(anchors, gt, 0.7, 0.3, True, ignore_boxes=ignore, ignore_iof_thresh=0.5)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(labels, expected)
    assert int((expected != ref_labels).sum()) > 0
