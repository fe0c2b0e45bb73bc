"""detkit/ops/matching_torch.py (the CUDA path of matching), run on the CPU against the Numba kernels
of detkit.ops.matching and torchvision's box_iou + Matcher, with chunks small enough to split the
anchors many times."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detkit.ops.boxes import box_iof
from detkit.ops.matching import match_max_iou, max_iof, max_iou_stats
from detkit.ops.matching_torch import match_max_iou_torch, max_iof_torch, max_iou_stats_torch
from tests.ops.test_matching import fpn_anchors, random_gt, torchvision_match

CHUNKS = [7, 1000, 1 << 22]  # pairs per chunk: many chunks of one anchor or a few, several, one chunk


def assert_same_as_numba(anchors, gt, fg, bg, low_quality, max_pairs, **ignore):
    idx, labels = match_max_iou_torch(anchors, gt, fg, bg, low_quality, max_pairs=max_pairs, **ignore)
    ref_idx, ref_labels = match_max_iou(anchors, gt, fg, bg, low_quality, **ignore)
    assert idx.dtype == torch.int64 and labels.dtype == torch.int8 and idx.device == anchors.device
    assert torch.equal(labels, ref_labels), f"{int((labels != ref_labels).sum())} labels differ"
    assert torch.equal(idx, ref_idx), f"{int((idx != ref_idx).sum())} matched indices differ"
    return idx, labels


@pytest.mark.parametrize("max_pairs", CHUNKS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("low_quality", [True, False])
def test_torch_matching_equals_numba_and_torchvision(max_pairs, seed, low_quality):
    anchors = fpn_anchors(320, 480, seed, keep=3000)
    gt = random_gt(15, seed, 320, 480)
    for fg, bg in ((0.7, 0.3), (0.5, 0.5), (0.9, 0.2)):
        idx, labels = assert_same_as_numba(anchors, gt, fg, bg, low_quality, max_pairs)
        ref_idx, ref_labels = torchvision_match(anchors, gt, fg, bg, low_quality)
        assert torch.equal(idx, ref_idx) and torch.equal(labels, ref_labels)


@pytest.mark.parametrize("fg", [0.2, 0.5, 0.7, 0.9])
def test_torch_matching_exact_threshold_ious_and_ties(fg):
    g = np.random.default_rng(3)
    xy = g.integers(0, 10, (400, 2))
    anchors = torch.from_numpy(np.concatenate([xy, xy + g.integers(1, 6, (400, 2))], 1).astype(np.float32))
    gxy = g.integers(0, 10, (12, 2))
    gt = torch.from_numpy(np.concatenate([gxy, gxy + g.integers(1, 6, (12, 2))], 1).astype(np.float32))
    gt = torch.cat([gt, gt[:3]])  # duplicated ground truth: ties take the first index
    for bg in (fg, fg / 2, 0.1):
        assert_same_as_numba(anchors, gt, fg, bg, True, 50)


def test_torch_matching_degenerate_boxes_and_gt_without_overlap():
    anchors = fpn_anchors(160, 160, 0, keep=1500)
    gt = random_gt(10, 0, 160, 160)
    anchors[::50, 2] = anchors[::50, 0]  # zero-area anchors: NaN IoU with zero-area gt
    anchors[1::97, 3] = anchors[1::97, 1] - 3  # inverted anchors
    gt[0, 2] = gt[0, 0]
    gt = torch.cat([gt, anchors[:1], torch.tensor([[1000, 1000, 1010, 1010.0]])])  # the last overlaps nothing
    for low_quality in (True, False):
        assert_same_as_numba(anchors, gt, 0.7, 0.3, low_quality, 64)


def test_torch_matching_ignore_regions_and_no_ground_truth():
    anchors = fpn_anchors(256, 256, 2)
    gt = random_gt(8, 2, 256, 256)
    ignore = random_gt(3, 9, 256, 256, side=(40.0, 120.0))
    kwargs = {"ignore_boxes": ignore, "ignore_iof_thresh": 0.5}
    _, labels = assert_same_as_numba(anchors, gt, 0.7, 0.3, True, 500, **kwargs)
    assert int((labels == -1).sum()) > int((torchvision_match(anchors, gt, 0.7, 0.3, True)[1] == -1).sum())
    for ignore_kwargs in ({}, kwargs):  # no ground truth: negatives, or ignored inside a region
        idx, labels = assert_same_as_numba(anchors, torch.zeros((0, 4)), 0.7, 0.3, True, 500, **ignore_kwargs)
        assert bool((idx == 0).all()) and set(labels.unique().tolist()) <= {0, -1}


def test_torch_matching_dtypes():
    anchors = fpn_anchors(320, 320, 0, keep=2000)
    gt = random_gt(20, 0, 320, 320)
    assert_same_as_numba(anchors.double() * 300, gt.double() * 300, 0.7, 0.3, True, 999)
    half_idx, half_labels = match_max_iou_torch(anchors.half(), gt.half(), 0.7, 0.3, True, max_pairs=999)
    ref = match_max_iou(anchors.half(), gt.half(), 0.7, 0.3, True)  # float16 computed in float32 by both
    assert torch.equal(half_idx, ref[0]) and torch.equal(half_labels, ref[1])


@pytest.mark.parametrize("max_pairs", CHUNKS)
def test_torch_stats_and_iof(max_pairs):
    anchors = fpn_anchors(256, 256, 1, keep=3000)
    gt = random_gt(25, 1, 256, 256)
    ours = max_iou_stats_torch(anchors, gt, max_pairs=max_pairs)
    iou = box_iou(gt, anchors)
    values, indices = iou.max(0)
    for got, want in zip(ours, (indices, values, iou.max(1).values)):
        assert torch.equal(got, want)
    for got, want in zip(ours, max_iou_stats(anchors, gt)):
        assert torch.equal(got, want)
    regions = torch.cat([random_gt(6, 1, 256, 256, side=(20.0, 150.0)), torch.tensor([[50, 50, 50, 80.0]])])
    anchors[::9, 2] = anchors[::9, 0]  # boxes without area give 0
    got = max_iof_torch(anchors, regions, max_pairs=max_pairs)
    assert torch.equal(got, box_iof(anchors, regions).max(1).values)
    assert torch.equal(got, max_iof(anchors, regions))
    assert torch.equal(max_iof_torch(anchors, torch.zeros((0, 4))), torch.zeros(anchors.shape[0]))


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="max_pairs"):
        match_max_iou_torch(torch.ones((3, 4)), torch.ones((1, 4)), 0.7, 0.3, True, max_pairs=0)
