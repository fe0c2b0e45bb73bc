"""detkit.ops.box_voting against a plain-Python reference, and its edge cases."""

from __future__ import annotations

import pytest
import torch

from detkit.ops.box_voting import box_voting
from detkit.ops.nms import batched_nms
from detkit.testing import clustered_boxes


def reference_box_voting(kept_boxes, kept_labels, boxes, scores, labels, thr):
    out = []
    for kb, kl in zip(kept_boxes.double().tolist(), kept_labels.tolist()):
        acc, total = [0.0] * 4, 0.0
        for b, s, lab in zip(boxes.double().tolist(), scores.double().tolist(), labels.tolist()):
            w = max(0.0, min(kb[2], b[2]) - max(kb[0], b[0]))
            h = max(0.0, min(kb[3], b[3]) - max(kb[1], b[1]))
            inter = w * h
            union = (kb[2] - kb[0]) * (kb[3] - kb[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if lab == kl and union > 0 and inter / union >= thr and s > 0:
                acc = [a + s * c for a, c in zip(acc, b)]
                total += s
        out.append([a / total for a in acc] if total > 0 else kb)
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 4)


@pytest.mark.parametrize("thr", [0.5, 0.8])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_after_nms(seed, thr):
    boxes, scores = clustered_boxes(300, seed)
    labels = torch.randint(1, 4, (300,), generator=torch.Generator().manual_seed(seed))
    keep = batched_nms(boxes, scores, labels, 0.5)
    voted = box_voting(boxes[keep], labels[keep], boxes, scores, labels, thr)
    expected = reference_box_voting(boxes[keep], labels[keep], boxes, scores, labels, thr)
    assert voted.dtype == boxes.dtype and voted.shape == (keep.numel(), 4)
    torch.testing.assert_close(voted.double(), expected, rtol=1e-5, atol=1e-4)
    # the clusters give the kept boxes overlapping voters: some boxes must move
    assert not torch.allclose(voted, boxes[keep])


def test_vote_is_the_score_weighted_mean_of_its_class_only():
    kept = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0],   # itself, score 3
                          [0.0, 0.0, 10.0, 11.0],   # IoU 10/11 >= 0.8, score 1
                          [0.0, 0.0, 10.0, 20.0],   # IoU 0.5: no vote
                          [0.0, 0.0, 12.0, 12.0]])  # other class: no vote
    scores = torch.tensor([3.0, 1.0, 5.0, 9.0])
    labels = torch.tensor([1, 1, 1, 2])
    voted = box_voting(kept, torch.tensor([1]), boxes, scores, labels, 0.8)
    torch.testing.assert_close(voted, torch.tensor([[0.0, 0.0, 10.0, 10.25]]))
    # threshold 1: only identical boxes vote, so the box stays
    torch.testing.assert_close(box_voting(kept, torch.tensor([1]), boxes, scores, labels, 1.0), kept)


def test_empty_inputs_and_zero_scores_keep_the_boxes():
    kept = torch.tensor([[1.0, 2.0, 5.0, 6.0]])
    lab = torch.tensor([1])
    assert box_voting(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), kept, torch.ones(1), lab).shape == (0, 4)
    no_labels = torch.zeros(0, dtype=torch.int64)
    torch.testing.assert_close(box_voting(kept, lab, torch.zeros(0, 4), torch.zeros(0), no_labels), kept)
    torch.testing.assert_close(box_voting(kept, lab, kept + 0.1, torch.zeros(1), lab), kept)


def test_bad_arguments_are_named():
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    lab = torch.tensor([1])
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got 1.5"):
        box_voting(box, lab, box, torch.ones(1), lab, 1.5)
    with pytest.raises(ValueError, match="one entry per box"):
        box_voting(box, lab, box, torch.ones(2), lab)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        box_voting(box[:, :3], lab, box, torch.ones(1), lab)
