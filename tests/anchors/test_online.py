"""detkit/anchors/online.py: the learned anchors' online refinement during LR warm-up."""

import numpy as np
import pytest
import torch

from detkit.anchors.boxes import batch_fit_boxes
from detkit.anchors.modes import fit_anchor_shapes
from detkit.anchors.online import OnlineAnchorWarmup
from detkit.anchors.setup import AnchorSetup
from detkit.modeling.anchors import AnchorGenerator
from tests.anchors.test_modes import FakeDataset, _cfg

ONLINE = ("model.anchors.mode=learned", "model.anchors.online_warmup=true", "train.warmup_iters=6")



def _create(cfg, shapes, ds, generator):
    return OnlineAnchorWarmup.create(AnchorSetup.from_config(cfg), cfg.train.warmup_iters, shapes, ds, generator)

def _setup(*overrides, dataset=None):
    cfg = _cfg(*ONLINE, *overrides)
    ds = dataset or FakeDataset()
    shapes = fit_anchor_shapes(AnchorSetup.from_config(cfg), ds, log=lambda *_: None)
    generator = AnchorGenerator(shapes=shapes, strides=[4, 8, 16, 32, 64])
    return cfg, ds, shapes, generator


def _batch(ds, first, scale=2.0):
    """Targets of two images as the loader gives them after the 2x training resize."""
    return [{"boxes": torch.as_tensor(ds.annotations[i]["boxes"] * scale)} for i in (first, first + 1)], \
        [(600, 800), (600, 800)]


def test_create_only_when_asked():
    cfg, ds, shapes, generator = _setup()
    assert _create(cfg, shapes, ds, generator) is not None
    for extra in (["model.anchors.online_warmup=false"], ["train.warmup_iters=0"]):
        cfg2 = _cfg(*ONLINE, *extra)
        assert _create(cfg2, shapes, ds, generator) is None, extra
    cfg.model.anchors.mode = "kmeans"  # load_config rejects online_warmup without learned; create must too
    assert _create(cfg, shapes, ds, generator) is None


def test_batch_fit_boxes_drops_tiny_boxes_and_measures_offsets():
    cfg = _cfg()
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 40.0, 20.0], [10.0, 10.0, 11.0, 30.0]])},
               {"boxes": torch.zeros(0, 4)}]
    wh, offsets = batch_fit_boxes(AnchorSetup.from_config(cfg), targets, [(64, 96), (64, 96)])
    assert wh.tolist() == [[40.0, 20.0]]  # the 1 px wide box is below MIN_FIT_SIDE
    assert offsets.shape == (1, 5, 2)
    assert offsets[0, 0].tolist() == [0.0, 2.0]  # centre (20, 10); stride-4 anchor centres at 20 and 8 / 12


def test_steps_move_the_generator_and_keep_empty_levels():
    cfg, ds, shapes, generator = _setup()
    warmup = _create(cfg, shapes, ds, generator)
    for k in range(3):
        new = warmup.step(*_batch(ds, 2 * k))
    assert np.asarray(new).shape == (5, 3, 2) and np.isfinite(new).all()
    assert torch.allclose(generator.shapes, torch.tensor(new, dtype=torch.float32))
    assert not np.allclose(new[:4], np.asarray(shapes)[:4])  # populated levels moved
    assert new[4] == shapes[4]  # P6 holds no box: frozen
    assert warmup.steps_done == 3


def test_learning_rate_follows_a_cosine_to_five_percent():
    cfg, ds, shapes, generator = _setup("model.anchors.learned_lr=0.1")
    warmup = _create(cfg, shapes, ds, generator)
    assert warmup._lr() == pytest.approx(0.1)
    warmup.steps_done = 3  # half of the 6 warm-up iterations
    assert warmup._lr() == pytest.approx(0.1 * (0.05 + 0.95 * 0.5))
    warmup.steps_done = 6
    assert warmup._lr() == pytest.approx(0.1 * 0.05)


def test_finish_keeps_an_improvement_and_freezes_it():
    # Start from manual shapes (no offline fit), so the online steps have something to improve.
    cfg, ds, _, _ = _setup()
    manual = fit_anchor_shapes(AnchorSetup.from_config(_cfg()), ds, log=lambda *_: None)
    generator = AnchorGenerator(shapes=manual, strides=[4, 8, 16, 32, 64])
    warmup = OnlineAnchorWarmup(AnchorSetup.from_config(cfg), cfg.train.warmup_iters, manual, ds, generator)
    for k in range(30):
        warmup.step(*_batch(ds, (2 * k) % 10))
    lines = []
    final = warmup.finish(log=lines.append)
    assert "adopted" in lines[0] and "not adopted" not in lines[0], lines
    assert np.allclose(final, warmup.refiner.shapes) and not np.allclose(final, manual)
    assert torch.allclose(generator.shapes, torch.tensor(final, dtype=torch.float32))


def test_finish_restores_the_start_when_the_result_is_worse():
    cfg, ds, shapes, generator = _setup()
    warmup = _create(cfg, shapes, ds, generator)
    # A refiner dragged onto one box size: worse on the training set as a whole.
    with torch.no_grad():
        warmup.refiner.log_wh[:4] = torch.log(torch.tensor([30.0, 30.0], dtype=torch.float64))
        warmup.refiner.project()
    generator.set_shapes(warmup.refiner.shapes.tolist())
    lines = []
    final = warmup.finish(log=lines.append)
    assert np.allclose(final, shapes)
    assert torch.allclose(generator.shapes, torch.tensor(shapes, dtype=torch.float32))
    assert "kept the starting anchors" in lines[0], lines


def test_state_dict_round_trip_continues_the_same_fit():
    cfg, ds, shapes, generator = _setup()
    a = _create(cfg, shapes, ds, generator)
    for k in range(2):
        a.step(*_batch(ds, 2 * k))
    state = a.state_dict()
    generator_b = AnchorGenerator(shapes=shapes, strides=[4, 8, 16, 32, 64])
    b = _create(cfg, shapes, ds, generator_b)
    b.load_state_dict(state)
    assert torch.equal(generator_b.shapes, generator.shapes)
    assert np.array_equal(a.step(*_batch(ds, 6)), b.step(*_batch(ds, 6)))
    assert b.steps_done == 3


def test_learned_anchor_state_rejects_another_shape():
    cfg, ds, shapes, generator = _setup()
    warmup = _create(cfg, shapes, ds, generator)
    state = warmup.refiner.state_dict()
    state["log_wh"] = state["log_wh"][:2]
    with pytest.raises(ValueError, match="expected"):
        warmup.refiner.load_state_dict(state)
