"""detkit/anchors/fit.py: level rule, IoU k-means, hill climb, the kmeans mode's adoption rule."""

import numpy as np
import pytest

from detkit.anchors.fit import anchor_fitness, assign_levels, fit_kmeans, hill_climb, improves, kmeans_shapes
from detkit.anchors.metrics import centred_best_iou
from detkit.modeling.anchors import shapes_from_sizes_ratios

STRIDES = [4, 8, 16, 32, 64]
MANUAL = np.array(shapes_from_sizes_ratios([[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]))
CENTRES = np.array([[20.0, 40.0], [60.0, 30.0], [100.0, 100.0]])


def _mixture(seed, n_per=300, sigma=0.08, centres=CENTRES):
    rng = np.random.default_rng(seed)
    parts = [np.exp(np.log(c) + sigma * rng.standard_normal((n_per, 2))) for c in centres]
    return np.concatenate(parts)


def test_assign_levels_rule():
    sides = np.array([1.0, 16.0, 32.0, 45.0, 45.26, 64.0, 128.0, 256.0, 512.0, 5000.0])
    levels = assign_levels(np.stack([sides, sides], axis=1), STRIDES)
    # l = clamp(round(log2(side / 32)), 0, 4): 45.25 = 32 * sqrt(2) is the P2 / P3 boundary
    assert levels.tolist() == [0, 0, 0, 0, 1, 1, 2, 3, 4, 4]
    assert assign_levels(np.array([[100.0, 100.0]]), [16]).tolist() == [0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_lognormal_mixture_centres(seed):
    wh = _mixture(seed)
    centres = kmeans_shapes(wh, 3, restarts=5, iters=100, seed=seed)
    for true in CENTRES:
        err = np.abs(np.log(centres) - np.log(true)).max(axis=1).min()
        assert err < 0.05, (true, centres)


def test_kmeans_mbiou_does_not_fall_as_k_grows():
    wh = _mixture(3, n_per=150, sigma=0.3)
    scores = [centred_best_iou(wh, kmeans_shapes(wh, k, restarts=5, seed=0)).mean() for k in range(1, 9)]
    assert all(b >= a - 1e-12 for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] > scores[0] + 0.1


def test_kmeans_same_seed_same_result():
    wh = _mixture(4, sigma=0.3)
    a = kmeans_shapes(wh, 5, restarts=3, seed=7)
    b = kmeans_shapes(wh, 5, restarts=3, seed=7)
    np.testing.assert_array_equal(a, b)


def test_kmeans_few_duplicate_and_tiny_boxes():
    assert kmeans_shapes(np.array([[10.0, 10.0], [20.0, 5.0]]), 3).shape == (2, 2)  # N < k
    dup = np.repeat(np.array([[10.0, 10.0], [40.0, 20.0]]), 50, axis=0)
    out = kmeans_shapes(dup, 3)
    assert out.shape == (2, 2) and {tuple(r) for r in out} == {(10.0, 10.0), (40.0, 20.0)}
    tiny = np.concatenate([_mixture(5, n_per=30), np.array([[0.5, 0.5], [1e-3, 2.0]])])
    out = kmeans_shapes(tiny, 4, restarts=2)
    assert out.shape == (4, 2) and np.isfinite(out).all() and (out > 0).all()
    assert kmeans_shapes(np.zeros((0, 2)), 3).shape == (0, 2)
    with pytest.raises(ValueError):
        kmeans_shapes(tiny, 0)


def test_fit_kmeans_levels_fallback_and_tiny_boxes():
    # level 2 (sqrt area 91..181) gets a mixture; level 0 gets 2 boxes (< A = 3); 1-px boxes are dropped
    level2 = np.array([[90.0, 140.0], [140.0, 90.0], [120.0, 120.0]])
    wh = np.concatenate([_mixture(6, n_per=100, centres=level2), np.array([[20.0, 20.0], [25.0, 22.0]]),
                         np.array([[1.0, 1.0], [1.5, 30.0]])])
    res = fit_kmeans(wh, STRIDES, MANUAL, restarts=3, hill_climb_steps=0)
    assert res.fitted_levels == [False, False, True, False, False]
    np.testing.assert_array_equal(res.candidate[0], MANUAL[0])
    np.testing.assert_array_equal(res.candidate[[1, 3, 4]], MANUAL[[1, 3, 4]])
    assert res.adopted and res.after["mbiou"] > res.before["mbiou"]
    np.testing.assert_array_equal(res.shapes, res.candidate)


def test_fit_kmeans_fills_missing_distinct_shapes_from_start():
    wh = np.repeat(np.array([[100.0, 100.0], [150.0, 120.0]]), 20, axis=0)  # level 2, two distinct shapes
    res = fit_kmeans(wh, STRIDES, MANUAL, hill_climb_steps=0)
    level = {tuple(r) for r in res.candidate[2]}
    assert {(100.0, 100.0), (150.0, 120.0)} <= level and len(level) == 3


def test_fit_kmeans_not_adopted_when_start_is_already_best():
    wh = np.repeat(MANUAL[2], 10, axis=0)  # the boxes are exactly the start's level-2 shapes
    res = fit_kmeans(wh, STRIDES, MANUAL, hill_climb_steps=50)
    assert not res.adopted and "not adopted" in res.reason
    np.testing.assert_array_equal(res.shapes, MANUAL)
    empty = fit_kmeans(np.zeros((0, 2)), STRIDES, MANUAL)
    assert not empty.adopted
    np.testing.assert_array_equal(empty.shapes, MANUAL)


def test_hill_climb_never_worse_frozen_levels_kept_deterministic():
    wh = _mixture(8, n_per=100, sigma=0.25, centres=CENTRES * 1.3)
    offsets = np.random.default_rng(0).uniform(0, 8, size=(len(wh), 5, 2))
    start = fit_kmeans(wh, STRIDES, MANUAL, hill_climb_steps=0).candidate
    fitness = anchor_fitness(wh, offsets)
    frozen = [True, False, False, False, True]
    a = hill_climb(start, fitness, steps=200, seed=3, frozen_levels=frozen)
    b = hill_climb(start, fitness, steps=200, seed=3, frozen_levels=frozen)
    np.testing.assert_array_equal(a, b)
    assert fitness(a) >= fitness(start)
    np.testing.assert_array_equal(a[[0, 4]], start[[0, 4]])
    np.testing.assert_array_equal(hill_climb(start, fitness, steps=0, seed=0), start)


def test_improves_rule():
    assert improves({"a": 0.5, "b": 0.7}, {"a": 0.4, "b": 0.7})
    assert not improves({"a": 0.5, "b": 0.69}, {"a": 0.4, "b": 0.7})
    assert not improves({"a": 0.4, "b": 0.7}, {"a": 0.4, "b": 0.7})
