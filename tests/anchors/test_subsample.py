"""Anchor fitting on a seeded subsample (model.anchors.max_fit_boxes) fits what the whole box set fits.

Stated tolerance (README "Large data sets"): scored on all boxes, the k-means anchors fitted on a quarter
of them have a mean best IoU within 0.005 and a recall@0.7 within 0.015 of the anchors fitted on all of
them. (The shapes themselves are not compared one by one: k-means restarts reach different, equally good
local optima, so individual shapes move while the fit does not.)
"""

from __future__ import annotations

import numpy as np

from detkit.anchors.fit import fit_kmeans, fit_score
from detkit.anchors.metrics import BoxSet
from detkit.modeling.anchors import shapes_from_sizes_ratios

STRIDES = [4, 8, 16, 32, 64]


def _coco_like_shapes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    side = np.exp(rng.normal(np.log(60.0), 1.0, n))
    aspect = np.exp(rng.normal(0.0, 0.6, n))
    return np.stack([side / np.sqrt(aspect), side * np.sqrt(aspect)], axis=1).clip(2.0, 1000.0)


def test_kmeans_on_a_subsample_fits_the_same_shapes():
    wh = _coco_like_shapes(40000, seed=0)
    boxes = BoxSet(boxes=np.concatenate([np.zeros_like(wh), wh], 1).astype(np.float32),
                   image_index=np.zeros(len(wh), np.int64), image_sizes=np.array([[1000, 1000]]))
    sub = boxes.subsample(10000, seed=0)
    assert len(sub) == 10000
    manual = np.asarray(shapes_from_sizes_ratios([[32.0], [64.0], [128.0], [256.0], [512.0]], [0.5, 1.0, 2.0]))
    full = fit_kmeans(boxes.wh.astype(np.float64), STRIDES, manual, restarts=2, iters=100, seed=0)
    part = fit_kmeans(sub.wh.astype(np.float64), STRIDES, manual, restarts=2, iters=100, seed=0)
    score_full, score_part = (fit_score(boxes.wh, None, r.candidate) for r in (full, part))
    assert abs(score_full["mbiou"] - score_part["mbiou"]) <= 0.005
    assert abs(score_full["recall@0.7"] - score_part["recall@0.7"]) <= 0.015
    assert score_part["mbiou"] > fit_score(boxes.wh, None, manual)["mbiou"] + 0.02  # and it is a real fit
