"""detkit/anchors/kernels.py against its references: the hill-climb fitness bitwise equal to the NumPy
formula (so k-means results are unchanged), the fused learned objective and gradient equal to the
torch autograd version to float32 rounding, and a learned fit on a small set as good as the reference's."""

import numpy as np
import pytest
import torch

from detkit.anchors import learned as learned_module
from detkit.anchors.fit import anchor_fitness, best_ious_reference, fit_kmeans, fit_score
from detkit.anchors.kernels import best_ious
from detkit.anchors.learned import LearnedAnchors, fit_learned
from detkit.modeling.anchors import shapes_from_sizes_ratios

STRIDES = [4, 8, 16, 32, 64]
MANUAL = np.array(shapes_from_sizes_ratios([[32], [64], [128], [256], [512]], [0.5, 1.0, 2.0]))


def _set(seed, n):
    """Log-normal box shapes, grid offsets up to half a stride, and some boxes exactly on anchor sides (ties)."""
    rng = np.random.default_rng(seed)
    wh = np.exp(rng.normal(np.log(60), 1.0, (n, 2))).clip(2, 900)
    wh[: n // 10] = MANUAL.reshape(-1, 2)[rng.integers(15, size=n // 10)]  # ties with the anchors' sides
    offsets = rng.uniform(0, 0.5, (n, 5, 2)) * np.array(STRIDES, float)[None, :, None]
    return wh, offsets


def _numpy_fitness(wh, offsets, shapes, threshold=0.7):
    """anchor_fitness as it was before the kernel: the NumPy formula end to end."""
    centred, grid = best_ious_reference(wh, offsets, shapes)
    if offsets is None:
        return float(centred.mean() + (centred >= threshold).mean())
    return float(centred.mean() + grid.mean() + (grid >= threshold).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_offsets", [False, True])
def test_best_ious_and_fitness_bitwise_equal_to_numpy(seed, with_offsets):
    wh, offsets = _set(seed, 3000)
    offsets = offsets if with_offsets else None
    rng = np.random.default_rng(seed + 10)
    fitness = anchor_fitness(wh, offsets)
    for shapes in [MANUAL] + [MANUAL * np.exp(rng.normal(0, 0.3, MANUAL.shape)) for _ in range(5)]:
        ref_c, ref_g = best_ious_reference(wh, offsets, shapes)
        w32 = wh.astype(np.float32)
        off = np.zeros((len(wh), 0, 2), np.float32) if offsets is None else offsets.astype(np.float32)
        got_c, got_g = best_ious(np.ascontiguousarray(w32[:, 0]), np.ascontiguousarray(w32[:, 1]),
                                 np.ascontiguousarray(off[..., 0].T), np.ascontiguousarray(off[..., 1].T),
                                 shapes.astype(np.float32), offsets is not None)
        np.testing.assert_array_equal(got_c, ref_c)
        np.testing.assert_array_equal(got_g, ref_g)
        assert fitness(shapes) == _numpy_fitness(wh, offsets, shapes)


def test_fitness_empty_and_single_box():
    assert anchor_fitness(np.zeros((0, 2)), np.zeros((0, 5, 2)))(MANUAL) == 0.0
    wh = np.array([[64.0, 64.0]])
    assert anchor_fitness(wh, None)(MANUAL) == pytest.approx(2.0)  # IoU_c 1 with the 64x64 anchor
    assert anchor_fitness(wh, np.zeros((1, 5, 2)))(MANUAL) == pytest.approx(3.0)


def test_kmeans_with_hill_climb_unchanged_by_the_kernel(monkeypatch):
    wh, offsets = _set(3, 2000)
    fast = fit_kmeans(wh, STRIDES, MANUAL, offsets=offsets, restarts=2, iters=50, hill_climb_steps=60, seed=0)

    def numpy_anchor_fitness(box_wh, offs, recall_threshold=0.7):
        box_wh, offs = np.asarray(box_wh), None if offs is None else np.asarray(offs)
        return lambda shapes: _numpy_fitness(box_wh, offs, shapes, recall_threshold)

    monkeypatch.setattr("detkit.anchors.fit.anchor_fitness", numpy_anchor_fitness)
    ref = fit_kmeans(wh, STRIDES, MANUAL, offsets=offsets, restarts=2, iters=50, hill_climb_steps=60, seed=0)
    np.testing.assert_array_equal(fast.candidate, ref.candidate)
    assert fast.reason == ref.reason


@pytest.mark.parametrize("with_offsets", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.4])
def test_fused_objective_and_gradient_match_torch_autograd(with_offsets, scale):
    wh, offsets = _set(4, 2500)
    model = LearnedAnchors(init_shapes=MANUAL * scale, strides=STRIDES)
    box = torch.as_tensor(wh, dtype=torch.float32)
    off = torch.as_tensor(offsets, dtype=torch.float32) if with_offsets else None
    fused = learned_module._BoxObjective.apply(model.log_wh.exp(), box, off, model)
    (g_fused,) = torch.autograd.grad(fused, model.log_wh)
    ref = model.box_objective_torch(box, off, model.log_wh.exp())
    (g_ref,) = torch.autograd.grad(ref, model.log_wh)
    torch.testing.assert_close(fused, ref.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-4, atol=1e-7 * float(g_ref.abs().max()))
    assert g_ref.abs().max() > 1e-4  # a gradient to compare


def test_fused_objective_used_on_cpu_float32_only(monkeypatch):
    wh, offsets = _set(5, 300)
    model = LearnedAnchors(init_shapes=MANUAL, strides=STRIDES)
    calls = []
    reference = LearnedAnchors.box_objective_torch
    monkeypatch.setattr(LearnedAnchors, "box_objective_torch", lambda self, *a: calls.append(1) or reference(self, *a))
    f32 = model.loss(torch.as_tensor(wh, dtype=torch.float32), torch.as_tensor(offsets, dtype=torch.float32))
    assert not calls
    f64 = model.loss(torch.as_tensor(wh), torch.as_tensor(offsets))  # float64 boxes: the torch path
    assert len(calls) == 1
    torch.testing.assert_close(f32, f64, rtol=1e-5, atol=1e-6)


def test_learned_fit_as_good_as_the_torch_reference(monkeypatch):
    """The fit follows Adam, whose path on a few thousand boxes changes with float32 rounding (the torch
    reference on boxes perturbed by 1e-7 drifts as far), so its outcome, not its path, is compared."""
    wh, offsets = _set(6, 3000)
    fast = fit_learned(wh, STRIDES, MANUAL, offsets=offsets, steps=150, seed=0)
    again = fit_learned(wh, STRIDES, MANUAL, offsets=offsets, steps=150, seed=0)
    np.testing.assert_array_equal(fast.candidate, again.candidate)  # deterministic
    monkeypatch.setattr(LearnedAnchors, "loss", lambda self, b, o: -self.box_objective_torch(
        b, o, self.log_wh.exp()) + self.collapse_weight * self._collapse_penalty(self.log_wh.exp()))
    ref = fit_learned(wh, STRIDES, MANUAL, offsets=offsets, steps=150, seed=0)
    f_fast, f_ref = fit_score(wh, offsets, fast.candidate), fit_score(wh, offsets, ref.candidate)
    assert abs(f_fast["mbiou"] - f_ref["mbiou"]) <= 0.003, (f_fast, f_ref)
    assert abs(f_fast["recall@0.7"] - f_ref["recall@0.7"]) <= 0.01, (f_fast, f_ref)
    assert fast.adopted == ref.adopted
