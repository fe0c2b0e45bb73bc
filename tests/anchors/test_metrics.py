"""detkit/anchors/metrics.py: IoU_c properties, grid-aware metrics against brute force over real anchors."""

import numpy as np
import pytest
import torch

from detkit.anchors.metrics import (
    BoxSet,
    centred_best_iou,
    evaluate_anchors,
    feature_sizes,
    grid_best_iou,
    grid_offsets,
    grid_positive_counts,
    offset_iou,
    size_bucket,
)
from detkit.modeling.anchors import AnchorGenerator, shapes_from_sizes_ratios
from detkit.ops.boxes import box_iou, centred_iou
from detkit.testing import random_boxes

STRIDES = [4, 8, 16, 32, 64]


def _random_boxset(seed, num_images=6, max_boxes=12, image_hw=(200, 300)):
    rng = np.random.default_rng(seed)
    boxes, sizes = [], []
    for _ in range(num_images):
        h, w = image_hw[0] + rng.integers(-40, 40), image_hw[1] + rng.integers(-40, 40)
        n = rng.integers(0, max_boxes + 1)
        boxes.append(random_boxes(n, rng, (w, h), (3.0, min(h, w) * 0.9), log_side=True, dtype=torch.float64).numpy())
        sizes.append((int(h), int(w)))
    return BoxSet.from_images(boxes, sizes)


def _brute_force(boxes: BoxSet, shapes, strides, offset, threshold=0.7):
    gen = AnchorGenerator(shapes=shapes, strides=strides, offset=offset)
    best = np.zeros(len(boxes))
    count = np.zeros(len(boxes), dtype=np.int64)
    for i, size in enumerate(boxes.image_sizes):
        m = boxes.image_index == i
        if not m.any():
            continue
        anchors = torch.cat(gen(feature_sizes(tuple(size), strides), dtype=torch.float64))
        iou = box_iou(torch.as_tensor(boxes.boxes[m]), anchors)
        best[m] = iou.max(dim=1).values.numpy()
        count[m] = (iou >= threshold).sum(dim=1).numpy()
    return best, count


# --------------------------------------------------------------------------- IoU_c
def test_centred_iou_properties():
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.uniform(1, 100, size=(20, 2)))
    b = torch.as_tensor(rng.uniform(1, 100, size=(30, 2)))
    ab = centred_iou(a, b)
    torch.testing.assert_close(ab, centred_iou(b, a).T)  # symmetric
    torch.testing.assert_close(torch.diagonal(centred_iou(a, a)), torch.ones(20, dtype=a.dtype))  # identity
    torch.testing.assert_close(centred_iou(a * 7.5, b * 7.5), ab)  # scale-invariant
    assert ((ab > 0) & (ab <= 1)).all()
    known = centred_iou(torch.tensor([[2.0, 2.0], [4.0, 1.0]]), torch.tensor([[1.0, 1.0], [1.0, 4.0]]))
    # 2x2 vs 1x1: 1/4; 2x2 vs 1x4: 2/(4+4-2); 4x1 vs 1x1: 1/4; 4x1 vs 1x4: 1/(4+4-1)
    torch.testing.assert_close(known, torch.tensor([[0.25, 2 / 6], [0.25, 1 / 7]]))


def test_offset_iou_is_centred_at_zero_offset_and_differentiable():
    wh = torch.tensor([[10.0, 20.0], [30.0, 5.0]], dtype=torch.float64)
    shapes = torch.tensor([[[10.0, 10.0], [40.0, 8.0]]], dtype=torch.float64, requires_grad=True)
    iou = offset_iou(wh, None, shapes)
    torch.testing.assert_close(iou[:, 0], centred_iou(wh, shapes[0].detach()))
    shifted = offset_iou(wh, torch.full((2, 1, 2), 2.0, dtype=torch.float64), shapes)
    assert (shifted <= iou + 1e-12).all()
    shifted.sum().backward()
    assert torch.isfinite(shapes.grad).all()


# --------------------------------------------------------------------------- grid-aware
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_grid_metrics_equal_brute_force_over_all_anchors(seed, offset):
    boxes = _random_boxset(seed)
    shapes = np.array(shapes_from_sizes_ratios([[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]))
    if seed == 2:  # fitted-looking shapes, several per level
        shapes = shapes * np.random.default_rng(seed).uniform(0.4, 1.2, size=shapes.shape)
    best_bf, count_bf = _brute_force(boxes, shapes, STRIDES, offset)
    offsets = grid_offsets(boxes, STRIDES, offset=offset)
    np.testing.assert_allclose(grid_best_iou(boxes.wh, offsets, shapes), best_bf, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(grid_positive_counts(boxes, shapes, STRIDES, 0.7, offset=offset), count_bf)
    # tiny chunks give the same counts
    np.testing.assert_array_equal(grid_positive_counts(boxes, shapes, STRIDES, 0.7, offset=offset,
                                                       chunk_elements=1), count_bf)


@pytest.mark.parametrize("seed", range(4))
def test_grid_best_never_above_centred_best(seed):
    boxes = _random_boxset(seed + 10, num_images=10)
    rng = np.random.default_rng(seed)
    shapes = np.exp(rng.uniform(np.log(4), np.log(300), size=(5, 3, 2)))
    grid = grid_best_iou(boxes.wh, grid_offsets(boxes, STRIDES), shapes)
    centred = centred_best_iou(boxes.wh, shapes)
    assert (grid <= centred).all()
    assert (grid < centred).any()


def test_evaluate_anchors_keys_buckets_and_empty():
    boxes = _random_boxset(3)
    shapes = np.array(shapes_from_sizes_ratios([[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]))
    m = evaluate_anchors(shapes, boxes=boxes, strides=STRIDES)
    for key in ("mbiou", "grid_miou", "recall@0.5", "recall@0.7", "below@0.3", "pos_per_gt", "num_boxes"):
        assert key in m
    assert m["grid_miou"] <= m["mbiou"]
    assert sum(b["num_boxes"] for b in m["by_size"].values()) == m["num_boxes"] == len(boxes)
    assert m["recall@0.7"] <= m["recall@0.5"]
    only_centred = evaluate_anchors(shapes, box_wh=boxes.wh)
    assert only_centred["mbiou"] == pytest.approx(m["mbiou"]) and "recall@0.7" not in only_centred
    empty = evaluate_anchors(shapes, boxes=BoxSet.from_images([np.zeros((0, 4))], [(100, 100)]), strides=STRIDES)
    assert empty["num_boxes"] == 0 and np.isnan(empty["mbiou"])
    np.testing.assert_array_equal(size_bucket(np.array([[10.0, 10.0], [32.0, 32.0], [96.0, 96.0], [97.0, 96.0]])),
                                  [0, 1, 2, 2])


def test_boxset_drops_degenerate_and_subsamples_deterministically():
    bs = BoxSet.from_images([np.array([[0, 0, 10, 10], [5, 5, 5, 9]], float), np.array([[1, 1, 3, 4]], float)],
                            [(20, 20), (30, 30)])
    assert len(bs) == 2 and bs.image_index.tolist() == [0, 1]
    big = _random_boxset(5, num_images=20)
    a, b = big.subsample(10, seed=1), big.subsample(10, seed=1)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert len(a) == 10 and big.subsample(10_000, seed=1) is big
