"""detkit.ops.soft_nms against a plain-Python reference."""

from __future__ import annotations

import math

import pytest
import torch

from detkit.ops.soft_nms import batched_soft_nms, soft_nms
from detkit.testing import clustered_boxes


def reference_soft_nms(boxes, scores, method, sigma, iou_threshold, score_threshold):
    b = boxes.double().tolist()
    s = scores.double().tolist()
    alive = [i for i in range(len(s)) if s[i] >= score_threshold]
    keep, kept_scores = [], []

    def area(i):
        return (b[i][2] - b[i][0]) * (b[i][3] - b[i][1])

    while alive:
        i = max(alive, key=lambda j: (s[j], -j))
        keep.append(i)
        kept_scores.append(s[i])
        rest = []
        for j in alive:
            if j == i:
                continue
            w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = w * h
            if inter > 0:
                iou = inter / (area(i) + area(j) - inter)
                if method == "linear":
                    if iou > iou_threshold:
                        s[j] *= 1.0 - iou
                else:
                    s[j] *= math.exp(-(iou * iou) / sigma)
            if s[j] >= score_threshold:
                rest.append(j)
        alive = rest
    return keep, kept_scores


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_nms_matches_reference(method, seed):
    boxes, scores = clustered_boxes(150, seed)
    kwargs = dict(method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.05)
    keep, kept_scores = soft_nms(boxes, scores, **kwargs)
    ref_keep, ref_scores = reference_soft_nms(boxes, scores, **kwargs)
    assert keep.tolist() == ref_keep
    torch.testing.assert_close(kept_scores.double(), torch.tensor(ref_scores, dtype=torch.float64), rtol=1e-6, atol=0)
    assert kept_scores.dtype == scores.dtype
    assert bool((kept_scores[1:] <= kept_scores[:-1]).all())


def test_soft_nms_edge_cases():
    keep, s = soft_nms(torch.zeros((0, 4)), torch.zeros(0))
    assert keep.numel() == 0 and s.numel() == 0
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60.0]])
    scores = torch.tensor([0.9, 0.9, 0.5])
    keep, s = soft_nms(boxes, scores, method="linear", iou_threshold=0.5)
    assert keep.tolist() == [0, 2]          # identical box decays to 0 and is dropped
    keep, s = soft_nms(boxes, scores, method="gaussian", sigma=0.5, score_threshold=0.0)
    assert keep.tolist() == [0, 2, 1]
    assert s[2].item() == pytest.approx(0.9 * math.exp(-2.0))
    with pytest.raises(ValueError, match="method"):
        soft_nms(boxes, scores, method="hard")


def test_soft_nms_input_errors():
    boxes, scores = clustered_boxes(10, 0)
    with pytest.raises(ValueError, match=r"\(10, 3\)"):
        soft_nms(boxes[:, :3], scores)
    bad = scores.clone()
    bad[2] = float("nan")
    with pytest.raises(ValueError, match="scores"):
        soft_nms(boxes, bad)
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(boxes, scores, sigma=0.0)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_batched_soft_nms_is_soft_nms_per_group(method):
    boxes, scores = clustered_boxes(200, 4)
    idxs = torch.arange(200) % 3 * 5  # groups 0, 5, 10: not 0..G-1
    kwargs = dict(method=method, sigma=0.5, iou_threshold=0.3, score_threshold=0.05)
    keep, kept_scores = batched_soft_nms(boxes, scores, idxs, **kwargs)
    expected = []
    for group in (0, 5, 10):
        members = torch.nonzero(idxs == group).flatten()
        ref_keep, ref_scores = reference_soft_nms(boxes[members], scores[members], **kwargs)
        expected += [(sc, members[k].item()) for k, sc in zip(ref_keep, ref_scores)]
    expected.sort(key=lambda e: -e[0])
    assert keep.tolist() == [e[1] for e in expected]
    torch.testing.assert_close(kept_scores.double(), torch.tensor([e[0] for e in expected], dtype=torch.float64))


def test_batched_soft_nms_groups_do_not_interact():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [0.0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep, kept = batched_soft_nms(boxes, scores, torch.tensor([1, 2, 1]), method="linear", iou_threshold=0.5)
    # box 2 shares box 0's group: IoU 1 decays it to 0 (dropped); box 1 is alone in its group
    assert keep.tolist() == [0, 1]
    torch.testing.assert_close(kept, torch.tensor([0.9, 0.8]))
    keep, kept = batched_soft_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert keep.shape == (0,) and kept.shape == (0,)
    with pytest.raises(ValueError, match=r"idxs must have shape \(3,\), got \(2,\)"):
        batched_soft_nms(boxes, scores, torch.tensor([1, 2]))
