"""detkit/anchors/learned.py: the learned fit's constraints (band, aspect, no collapse, no dead anchors)."""

import numpy as np
import pytest
import torch

from detkit.anchors.fit import assign_levels
from detkit.anchors.learned import MAX_ASPECT, LearnedAnchors, fit_learned
from detkit.anchors.metrics import offset_iou
from detkit.modeling.anchors import shapes_from_sizes_ratios
from detkit.ops.boxes import centred_iou
from detkit.testing import lognormal_shapes

STRIDES = [4, 8, 16, 32, 64]
BAND = (4.0, 16.0)
MANUAL = np.array(shapes_from_sizes_ratios([[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]))


def _boxes(seed, n=600):
    """Box shapes on P2..P4 (nothing on P5, P6) with random grid offsets."""
    rng = np.random.default_rng(seed)
    centres = np.array([[30.0, 26.0], [70.0, 55.0], [50.0, 80.0], [120.0, 110.0], [100.0, 150.0]])
    wh = lognormal_shapes(n, rng, centres, 0.12).numpy()
    offsets = rng.uniform(0, 0.5, size=(n, 5, 1)) * np.array(STRIDES, float)[None, :, None]
    return wh, np.repeat(offsets, 2, axis=2) * rng.uniform(0.2, 1.0, size=(n, 5, 2))


def _check_constraints(shapes, populated):
    assert np.isfinite(shapes).all()
    for level, stride in enumerate(STRIDES):
        if not populated[level]:
            continue
        size = np.sqrt(shapes[level].prod(axis=1)) / stride
        assert (size >= BAND[0] * (1 - 1e-9)).all() and (size <= BAND[1] * (1 + 1e-9)).all(), (level, size)
        aspect = shapes[level, :, 1] / shapes[level, :, 0]
        assert (aspect >= 1 / MAX_ASPECT - 1e-9).all() and (aspect <= MAX_ASPECT + 1e-9).all()
        pair = centred_iou(torch.as_tensor(shapes[level]), torch.as_tensor(shapes[level]))
        assert (pair.triu(diagonal=1) <= 0.95).all(), (level, pair)


def _wins(wh, offsets, shapes):
    iou = offset_iou(torch.as_tensor(wh), torch.as_tensor(offsets), torch.as_tensor(shapes)).flatten(1)
    return np.bincount(iou.argmax(dim=1).numpy(), minlength=shapes.shape[0] * shapes.shape[1]).reshape(shapes.shape[:2])


def test_learned_fit_constraints_improvement_and_determinism():
    wh, offsets = _boxes(0)
    res = fit_learned(wh, STRIDES, MANUAL, offsets=offsets, steps=120, band=BAND, seed=1)
    populated = np.bincount(assign_levels(wh, STRIDES), minlength=5) >= 3
    assert populated.tolist() == [True, True, True, False, False]
    assert res.adopted and res.after["mbiou"] > res.before["mbiou"] + 0.05 and res.after["recall@0.7"] > 0.95
    _check_constraints(res.shapes, populated)
    np.testing.assert_array_equal(res.shapes[~populated], MANUAL[~populated])  # empty levels keep their anchors
    wins = _wins(wh, offsets, res.shapes)
    assert (wins[populated] > 0).all(), wins  # no dead anchor where there are boxes
    again = fit_learned(wh, STRIDES, MANUAL, offsets=offsets, steps=120, band=BAND, seed=1)
    np.testing.assert_array_equal(res.shapes, again.shapes)


def test_collapsed_and_out_of_band_init_is_repaired():
    wh, offsets = _boxes(1)
    init = MANUAL.copy()
    init[2] = [[120.0, 110.0]] * 3  # three identical anchors on P4
    init[1] = [[8.0, 300.0], [64.0, 64.0], [64.0, 64.0]]  # out of band, extreme aspect, duplicates
    res = fit_learned(wh, STRIDES, init, offsets=offsets, steps=100, band=BAND, seed=0)
    populated = np.bincount(assign_levels(wh, STRIDES), minlength=5) >= 3
    _check_constraints(res.candidate, populated)
    assert (_wins(wh, offsets, res.candidate)[populated] > 0).all()


def test_centred_fit_without_offsets_and_empty_input():
    wh, _ = _boxes(2, n=200)
    res = fit_learned(wh, STRIDES, MANUAL, steps=40, band=BAND)
    assert np.isfinite(res.candidate).all() and res.after["mbiou"] > res.before["mbiou"]
    empty = fit_learned(np.zeros((0, 2)), STRIDES, MANUAL, steps=5)
    assert not empty.adopted
    np.testing.assert_array_equal(empty.shapes, MANUAL)


def test_online_steps_lower_the_loss_and_respect_frozen_levels():
    wh, offsets = _boxes(3)
    model = LearnedAnchors(init_shapes=MANUAL, strides=STRIDES, band=BAND, frozen_levels=[False] * 3 + [True] * 2)
    wh_t, off_t = torch.as_tensor(wh, dtype=torch.float32), torch.as_tensor(offsets, dtype=torch.float32)
    with torch.no_grad():
        first = float(model.loss(wh_t, off_t))
    rng = np.random.default_rng(0)
    for _ in range(60):  # mini-batches, as the trainer's warm-up would give
        batch = rng.choice(len(wh), size=16, replace=False)
        model.step(wh[batch], offsets[batch])
    with torch.no_grad():
        last = float(model.loss(wh_t, off_t))
    assert last < first
    np.testing.assert_array_equal(model.shapes[3:], MANUAL[3:])
    _check_constraints(model.shapes, [True, True, True, False, False])
    assert model.step(np.zeros((0, 2))) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError):
        LearnedAnchors(init_shapes=MANUAL, strides=STRIDES[:3])
    with pytest.raises(ValueError):
        LearnedAnchors(init_shapes=MANUAL, strides=STRIDES, frozen_levels=[True])
