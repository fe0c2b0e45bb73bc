"""detkit.ops.nms and its kernels (detkit.ops.nms_kernels) against torchvision.ops (the oracle) and plain Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from detkit.ops.nms import batched_nms, nms, offset_by_group
from detkit.ops.nms_kernels import nms_kernel, nms_plain_kernel
from detkit.testing import clustered_boxes, uniform_boxes

THRESHOLDS = [0.2, 0.5, 0.7, 0.9]


def integer_boxes(n, seed, canvas=12, max_side=6):
    """Small integer boxes on a tiny canvas: many IoUs are simple fractions equal to a threshold."""
    g = np.random.default_rng(seed)
    xy = g.integers(0, canvas, (n, 2))
    wh = g.integers(1, max_side + 1, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = g.integers(0, 5, n).astype(np.float32)  # many equal scores
    return torch.from_numpy(boxes), torch.from_numpy(scores)


def reference_nms(boxes, scores, thr):
    """Plain-Python greedy NMS with torchvision's order and float32 IoU arithmetic."""
    order = torch.sort(scores, stable=True, descending=True)[1].tolist()
    b = boxes.numpy()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    zero = b.dtype.type(0)
    suppressed, keep = set(), []
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[pos + 1:]:
            w = max(zero, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(zero, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                if float(inter / (area[i] + area[j] - inter)) > thr:
                    suppressed.add(j)
    return torch.tensor(keep, dtype=torch.int64)


def assert_same(ours, theirs):
    assert ours.dtype == torch.int64
    assert torch.equal(ours, theirs), f"detkit {ours.tolist()[:20]} vs torchvision {theirs.tolist()[:20]}"


# --------------------------------------------------------------------------- nms parity
@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("make", [uniform_boxes, clustered_boxes], ids=["random", "clustered"])
def test_nms_matches_torchvision(make, seed, thr):
    for n in (60, 1500):
        boxes, scores = make(n, seed)
        assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("thr", THRESHOLDS + [0.0, 1.0 / 3.0, 0.25, 0.75, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nms_boxes_on_the_threshold_and_ties(seed, thr):
    boxes, scores = integer_boxes(400, seed)
    expected = torchvision.ops.nms(boxes, scores, thr)
    assert_same(nms(boxes, scores, thr), expected)
    if seed == 0:
        assert_same(reference_nms(boxes, scores, thr), expected)


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_nms_exact_threshold_pairs(thr):
    # IoU of [0, 0, 10, 10] and [0, 0, 10, 10 * thr] is 10 * thr * 10 / 100, computed in float32:
    # float32(0.2) > 0.2 so torchvision suppresses at "exactly" 0.2 but not at 0.5 / 0.7 / 0.9.
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10 * thr], [20, 0, 30, 10], [20, 0, 30, 10 * thr + 0.5]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    expected = torchvision.ops.nms(boxes, scores, thr)
    assert_same(nms(boxes, scores, thr), expected)
    iou = float(torch.tensor(10 * 10 * thr, dtype=torch.float32) / 100)
    assert (1 in expected.tolist()) == (not iou > thr)


def test_nms_equal_scores_keep_lowest_index_first():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [100, 100, 110, 110], [0, 0, 10, 10.0]])
    scores = torch.ones(4)
    assert nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert_same(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    boxes, _ = uniform_boxes(3000, 5)
    scores = torch.full((3000,), 0.5)
    assert_same(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_nms_empty_and_single():
    out = nms(torch.zeros((0, 4)), torch.zeros(0), 0.5)
    assert out.dtype == torch.int64 and out.shape == (0,)
    assert nms(torch.tensor([[1.0, 2, 3, 4]]), torch.tensor([0.3]), 0.5).tolist() == [0]


def test_nms_many_identical_boxes():
    boxes = torch.tensor([[5.0, 5, 50, 60]]).repeat(500, 1)
    scores = torch.from_numpy(np.random.default_rng(0).random(500).astype(np.float32))
    out = nms(boxes, scores, 0.7)
    assert out.tolist() == [int(scores.argmax())]
    assert nms(boxes, torch.ones(500), 0.99).tolist() == [0]


@pytest.mark.parametrize("thr", [0.0, 0.5])
def test_nms_zero_area_and_inverted_boxes(thr):
    boxes, scores = uniform_boxes(800, 7)
    boxes[::7, 2] = boxes[::7, 0]            # zero width
    boxes[1::7, 3] = boxes[1::7, 1] - 5      # inverted
    boxes[2::11] = boxes[3::11][: len(boxes[2::11])]  # duplicates
    assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("thr", [-0.5, -1e-9, float("nan")])
def test_nms_negative_or_nan_threshold(thr):
    boxes, scores = uniform_boxes(300, 3)
    boxes[::5, 2] = boxes[::5, 0]
    assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("thr", THRESHOLDS)
def test_nms_large_coordinates(thr):
    boxes, scores = uniform_boxes(1500, 11, canvas=1e5, side=(50.0, 5000.0))
    assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))
    boxes, scores = uniform_boxes(800, 12, canvas=1e5, side=(0.5, 3.0))
    boxes += 9e4
    assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


def test_nms_mixed_sizes():
    """Tiny and huge boxes together exercise many grid levels."""
    a, sa = uniform_boxes(500, 1, side=(1.0, 4.0))
    b, sb = uniform_boxes(500, 2, side=(300.0, 990.0))
    boxes, scores = torch.cat([a, b]), torch.cat([sa, sb])
    for thr in (0.05, 0.3, 0.6):
        assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_nms_float64_and_float16(thr):
    boxes, scores = uniform_boxes(1000, 4, dtype=torch.float64)
    assert_same(nms(boxes, scores, thr), torchvision.ops.nms(boxes, scores, thr))
    half_boxes, half_scores = boxes.half(), scores.half()
    expected = torchvision.ops.nms(half_boxes.float(), half_scores.float(), thr)
    assert_same(nms(half_boxes, half_scores, thr), expected)


def test_nms_grid_kernel_equals_plain_kernel():
    boxes, scores = clustered_boxes(700, 9)
    order = torch.sort(scores, stable=True, descending=True)[1].numpy()
    for thr in (0.0, 0.3, 0.8):
        fast = nms_kernel(boxes.numpy(), order, thr)
        plain = nms_plain_kernel(boxes.numpy(), order, thr)
        np.testing.assert_array_equal(fast, plain)


def test_nms_input_errors():
    boxes, scores = uniform_boxes(10, 0)
    with pytest.raises(ValueError, match=r"\(10, 3\)"):
        nms(boxes[:, :3], scores, 0.5)
    with pytest.raises(ValueError, match=r"\(9,\)"):
        nms(boxes, scores[:9], 0.5)
    with pytest.raises(ValueError, match="dtype"):
        nms(boxes, scores.double(), 0.5)
    bad = boxes.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="boxes"):
        nms(bad, scores, 0.5)
    bad_scores = scores.clone()
    bad_scores[0] = float("inf")
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, bad_scores, 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nms_cuda_goes_to_torchvision():
    boxes, scores = uniform_boxes(2000, 0)
    boxes, scores = boxes.cuda(), scores.cuda()
    out = nms(boxes, scores, 0.5)
    assert out.is_cuda
    assert torch.equal(out, torchvision.ops.nms(boxes, scores, 0.5))
    idxs = torch.randint(0, 5, (2000,), device="cuda")
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["offsets", "per_group"])
def test_batched_nms_modes_on_cuda_keep_the_cpu_set(mode):
    """Distinct scores: the CUDA kernels (their own IoU rounding aside) keep what the CPU keeps."""
    boxes, scores = uniform_boxes(2000, 0)
    idxs = torch.from_numpy(np.random.default_rng(0).integers(0, 5, 2000))
    out = batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5, mode=mode)
    assert out.is_cuda
    assert torch.equal(out.cpu(), batched_nms(boxes, scores, idxs, 0.5, mode=mode))


# --------------------------------------------------------------------------- batched_nms
@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("n", [400, 3000])   # 400: coordinate trick path, 3000: per-class path
@pytest.mark.parametrize("seed", [0, 1])
def test_batched_nms_matches_torchvision(seed, n, thr):
    boxes, scores = uniform_boxes(n, seed)
    idxs = torch.from_numpy(np.random.default_rng(seed).integers(0, 20, n))
    assert_same(batched_nms(boxes, scores, idxs, thr), torchvision.ops.batched_nms(boxes, scores, idxs, thr))


def in_rule_order(keep, scores):
    """Kept indices in detkit.ops.score_order's order: decreasing score, equal scores by increasing index."""
    keep = keep.sort().values
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


@pytest.mark.parametrize("n", [300, 2500])
def test_batched_nms_ties_and_sparse_class_ids(n):
    """torchvision's set; its order of equal scores on its per-class path (n = 2500) comes from an
    unstable sort, detkit's from the rule (equal scores by increasing index), on every path."""
    boxes, scores = integer_boxes(n, 3, canvas=40)
    g = np.random.default_rng(1)
    for idxs in (torch.from_numpy(g.integers(0, 4, n)), torch.from_numpy(g.choice([-7, 3, 10**12], n))):
        for thr in (0.2, 0.5):
            theirs = torchvision.ops.batched_nms(boxes, scores, idxs, thr)
            ours = batched_nms(boxes, scores, idxs, thr)
            assert_same(ours, in_rule_order(theirs, scores))
            if n * 4 <= 4000:  # the offset path: torchvision's nms order, the rule
                assert_same(ours, theirs)


def reference_per_group(boxes, scores, idxs, thr):
    """torchvision's nms within each group, the kept boxes in the rule's order."""
    keep = torch.cat([rows[torchvision.ops.nms(boxes[rows], scores[rows], thr)]
                      for rows in (torch.where(idxs == g)[0] for g in torch.unique(idxs))])
    return in_rule_order(keep, scores)


@pytest.mark.parametrize("n", [300, 2500])
@pytest.mark.parametrize("thr", [0.2, 0.5, -0.5])
def test_batched_nms_modes_at_every_size(n, thr):
    """"per_group": NMS within each group whatever the size; "offsets": torchvision's coordinate trick
    (offset_by_group's offsets) whatever the size; both in the rule's order, ties included."""
    boxes, scores = integer_boxes(n, 4, canvas=40)
    idxs = torch.from_numpy(np.random.default_rng(2).integers(0, 5, n))
    assert_same(batched_nms(boxes, scores, idxs, thr, mode="per_group"), reference_per_group(boxes, scores, idxs, thr))
    shifted = boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]  # torchvision's offsets
    assert torch.equal(offset_by_group(boxes, idxs), shifted)
    assert_same(batched_nms(boxes, scores, idxs, thr, mode="offsets"), torchvision.ops.nms(shifted, scores, thr))
    with pytest.raises(ValueError, match="mode"):
        batched_nms(boxes, scores, idxs, thr, mode="vanilla")


def test_offset_by_group_separates_groups_at_any_coordinates():
    boxes = torch.tensor([[-50.0, -50.0, -10.0, -10.0], [-50.0, -50.0, -10.0, -10.0], [0.0, 0.0, 5.0, 5.0]])
    idxs = torch.tensor([0, 1, 1])
    shifted = offset_by_group(boxes, idxs)
    assert torchvision.ops.box_iou(shifted[:1], shifted[1:2]).item() == 0.0  # not torchvision's max + 1 = -9
    assert batched_nms(boxes, torch.ones(3), idxs, 0.5, mode="offsets").tolist() == [0, 1, 2]
    assert offset_by_group(torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64)).shape == (0, 4)


def test_batched_nms_empty_and_errors():
    out = batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert out.dtype == torch.int64 and out.numel() == 0
    boxes, scores = uniform_boxes(5, 0)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(boxes, scores, torch.zeros(5), 0.5)
    with pytest.raises(ValueError, match="idxs"):
        batched_nms(boxes, scores, torch.zeros(4, dtype=torch.int64), 0.5)
