"""detkit/engine/hooks/online_anchors.py: refine during the warm-up, freeze after it, resume."""

import numpy as np

from detkit.anchors.modes import fit_anchor_shapes
from detkit.anchors.setup import AnchorSetup
from detkit.config import load_config, replace_values
from detkit.engine.hooks import OnlineAnchorsHook
from tests.anchors.test_modes import FakeDataset, _cfg
from tests.anchors.test_online import ONLINE, _batch
from tests.engine.hooks.fake_trainer import fake_trainer, step


class ShapeSink:
    """A model stand-in that records the anchor shapes installed in it."""

    def __init__(self):
        self.shapes = None

    def set_anchor_shapes(self, shapes):
        self.shapes = shapes


def _trainer(tmp_path, **attributes):
    cfg = _cfg(*ONLINE)  # warm-up of 6 iterations
    ds = FakeDataset()
    setup = AnchorSetup.from_config(cfg)
    shapes = fit_anchor_shapes(setup, ds, log=lambda *_: None)
    trainer = fake_trainer(tmp_path, train_set=ds, bare_model=ShapeSink(), eval_model=ShapeSink(), anchor_setup=setup,
                           anchor_shapes=shapes, **attributes)
    trainer.cfg = cfg
    trainer.resolved_config = lambda: replace_values(cfg, {"model.anchors.shapes": trainer.anchor_shapes})
    return trainer, ds


def test_refines_both_models_then_freezes_and_records_the_shapes(tmp_path):
    trainer, ds = _trainer(tmp_path)
    start = [list(level) for level in trainer.anchor_shapes]
    hook = OnlineAnchorsHook()
    hook.before_train(trainer)
    assert hook.warmup is not None and hook.checkpoint_state(trainer)["online_anchors"]["steps_done"] == 0
    for i in range(1, 7):
        hook.before_step(trainer, *_images_and_targets(ds, i))
        if i == 1:
            assert trainer.bare_model.shapes == trainer.eval_model.shapes == trainer.anchor_shapes
            assert not np.allclose(trainer.anchor_shapes[:4], np.asarray(start)[:4])
        hook.after_step(trainer, step(i))
    assert hook.warmup is None and hook.checkpoint_state(trainer) == {"online_anchors": None}
    assert any(m.startswith("anchors:") for m in trainer.messages)
    saved = load_config(trainer.paths["config.yaml"])  # config.yaml holds the frozen shapes
    np.testing.assert_allclose(saved.model.anchors.shapes, trainer.anchor_shapes)
    assert trainer.cfg.model.anchors.shapes is None  # the live config is not changed
    assert trainer.bare_model.shapes == trainer.anchor_shapes


def test_resume_continues_the_fit_or_skips_it_after_the_warmup(tmp_path):
    trainer, ds = _trainer(tmp_path)
    first = OnlineAnchorsHook()
    first.before_train(trainer)
    for i in range(1, 3):
        first.before_step(trainer, *_images_and_targets(ds, i))
        first.after_step(trainer, step(i))
    saved = {**first.checkpoint_state(trainer), "iteration": 2}
    resumed_trainer, _ = _trainer(tmp_path, iteration=2)
    resumed = OnlineAnchorsHook()
    resumed.load_checkpoint(resumed_trainer, saved)
    resumed.before_train(resumed_trainer)
    assert resumed.warmup.steps_done == 2
    np.testing.assert_array_equal(resumed.warmup.refiner.shapes, first.warmup.refiner.shapes)
    done_trainer, _ = _trainer(tmp_path, iteration=6)
    done = OnlineAnchorsHook()
    done.load_checkpoint(done_trainer, {"online_anchors": None, "iteration": 6})
    done.before_train(done_trainer)
    assert done.warmup is None


def _images_and_targets(ds, i):
    targets, sizes = _batch(ds, (2 * i) % 10)
    images = [np.zeros((3, h, w)) for h, w in sizes]  # only .shape[-2:] is read
    return images, targets


def test_shapes_go_into_the_trained_and_the_averaged_model_once_each(tmp_path):
    from detkit.engine.hooks.online_anchors import _InstallShapes

    trained, averaged = ShapeSink(), ShapeSink()
    _InstallShapes(fake_trainer(tmp_path, bare_model=trained, eval_model=averaged)).set_shapes([[[1.0, 2.0]]])
    assert trained.shapes == averaged.shapes == [[[1.0, 2.0]]]
    calls = []
    same = ShapeSink()
    same.set_anchor_shapes = calls.append  # without a moving average both are one model
    _InstallShapes(fake_trainer(tmp_path, bare_model=same, eval_model=same)).set_shapes([[[3.0, 4.0]]])
    assert calls == [[[[3.0, 4.0]]]]
