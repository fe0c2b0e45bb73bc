"""Online refinement of learned anchors during the LR warm-up (``model.anchors.online_warmup: true``).

docs/anchors.md lets the learned mode continue its fit online during warm-up, then freeze. The trainer
builds an :class:`OnlineAnchorWarmup` when ``model.anchors.mode: learned`` and ``online_warmup:
true``. On each of the first ``train.warmup_iters`` iterations, before the forward pass, it takes one
Adam step of :class:`detkit.anchors.learned.LearnedAnchors` on the batch's boxes (resized and
augmented as the detector sees them) and installs the new shapes in the RPN's anchor generator.
The Adam learning rate falls along a cosine from ``model.anchors.learned_lr`` to 5% of it over the
warm-up, as in the offline fit.

Under DDP every process steps on the boxes of the whole global batch, gathered in rank order by the
``gather`` function the caller passes (the training engine's all-gather), so all processes hold bitwise
the same anchors without averaging anything. This package itself never talks to other processes.

At the end of the warm-up the online result is checked on every training box, like the offline fit:
dead or duplicated anchors are revived (moved onto their level's worst-served boxes), and the result
is kept only when it then improves the hard metrics (:func:`detkit.anchors.fit.decide`) over
the shapes training started with and has no dead or duplicated anchor; otherwise the starting shapes
come back. Either way the anchors are then frozen and the log says old against new.

A checkpoint written during the warm-up holds the refiner's state (:meth:`state_dict`), so a resumed
run continues the same fit.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from detkit.anchors.boxes import batch_fit_boxes, collect_training_boxes, fit_inputs
from detkit.anchors.fit import MIN_FIT_SIDE, assign_levels, decide
from detkit.anchors.learned import LearnedAnchors
from detkit.anchors.setup import AnchorSetup
from detkit.modeling.anchors import AnchorGenerator

__all__ = ["OnlineAnchorWarmup", "build_online_refiner"]

# The online learning rate decays to this fraction of model.anchors.learned_lr (as fit_learned's default).
MIN_LR_FACTOR = 0.05


def _single_process(value: Any) -> List[Any]:
    """The gather of a run with one process: its own value, alone."""
    return [value]


def build_online_refiner(setup: AnchorSetup, shapes: Sequence, train_dataset) -> Optional[LearnedAnchors]:
    """A :class:`LearnedAnchors` that continues the learned fit during LR warm-up, or None.

    Only for ``model.anchors.mode: learned`` with ``online_warmup: true``. Levels with fewer than A
    training boxes stay frozen, as in the offline fit. :class:`detkit.anchors.online.OnlineAnchorWarmup`
    steps it on each warm-up batch.
    """
    a = setup.settings
    if a.mode != "learned" or not a.online_warmup:
        return None
    strides = list(setup.strides)
    shapes = np.asarray(shapes, dtype=np.float64)
    counts = np.bincount(assign_levels(collect_training_boxes(train_dataset, setup).wh, strides),
                         minlength=len(strides))
    return LearnedAnchors(init_shapes=shapes, strides=strides, band=a.band, lr=a.learned_lr,
                          temperature=a.learned_temperature, frozen_levels=(counts < shapes.shape[1]).tolist(),
                          seed=a.seed)


class OnlineAnchorWarmup:
    """Steps the learned anchors on each warm-up batch, then checks the result and freezes it.

    Use :meth:`create`, which returns None when the config does not ask for online refinement.

    Args:
        setup: the run's anchor setup (``model.anchors`` and the geometry).
        warmup_iters: the iterations to refine over (``train.warmup_iters``).
        shapes: L x A x [w, h], the shapes training starts with (the offline learned fit).
        train_dataset: the training set (its level populations decide which levels stay frozen, and
            its boxes judge the result at the end).
        generator: the RPN's anchor generator, whose shapes are replaced after every step.
        gather: ``value -> [value of each process, in rank order]``; one process's by default.
    """

    def __init__(self, setup: AnchorSetup, warmup_iters: int, shapes: Sequence, train_dataset,
                 generator: AnchorGenerator, gather: Callable[[Any], List[Any]] = _single_process) -> None:
        refiner = build_online_refiner(setup, shapes, train_dataset)
        if refiner is None:
            raise ValueError("online anchor refinement needs model.anchors.mode = learned and online_warmup = true")
        self.setup = setup
        self.gather = gather
        self.refiner = refiner
        self.generator = generator
        self.train_dataset = train_dataset
        self.start_shapes = np.asarray(shapes, dtype=np.float64)
        self.total_steps = int(warmup_iters)
        self.steps_done = 0

    @classmethod
    def create(cls, setup: AnchorSetup, warmup_iters: int, shapes: Sequence, train_dataset,
               generator: AnchorGenerator, gather: Callable[[Any], List[Any]] = _single_process
               ) -> Optional["OnlineAnchorWarmup"]:
        a = setup.settings
        if a.mode != "learned" or not a.online_warmup or warmup_iters <= 0:
            return None
        return cls(setup, warmup_iters, shapes, train_dataset, generator, gather)

    def _lr(self) -> float:
        progress = self.steps_done / max(self.total_steps, 1)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.setup.settings.learned_lr * (MIN_LR_FACTOR + (1 - MIN_LR_FACTOR) * cosine)

    def step(self, targets: Sequence[dict], image_sizes: Sequence[Sequence[int]]) -> List[List[List[float]]]:
        """One refinement step on this process's batch (and, under DDP, every other process's).

        Returns the new shapes, L x A x [w, h], already installed in the anchor generator.
        """
        wh, offsets = batch_fit_boxes(self.setup, targets, image_sizes)
        gathered = self.gather((wh, offsets))
        wh = np.concatenate([g[0] for g in gathered])
        offsets = np.concatenate([g[1] for g in gathered])
        self.refiner.set_lr(self._lr())
        self.refiner.step(wh, offsets)
        self.steps_done += 1
        shapes = self.refiner.shapes.tolist()
        self.generator.set_shapes(shapes)
        return shapes

    def finish(self, log: Callable[[str], None] = print) -> List[List[List[float]]]:
        """Judge the online result on every training box, keep it or restore the starting shapes, and
        install the outcome in the anchor generator. Returns the frozen shapes, L x A x [w, h]."""
        setup = self.setup
        strides = list(setup.strides)
        wh, offsets = fit_inputs(setup, collect_training_boxes(self.train_dataset, setup))
        keep = (wh >= MIN_FIT_SIDE).all(axis=1)
        wh, offsets = wh[keep], offsets[keep]
        num_anchors = self.start_shapes.shape[1]
        fitted = (np.bincount(assign_levels(wh, strides), minlength=len(strides)) >= num_anchors)
        # Dead or duplicated anchors first move onto their level's worst-served boxes, as at the end
        # of the offline fit; a result that still has some is not kept.
        revived = self.refiner.revive(wh, offsets)
        result = decide(wh, offsets, self.start_shapes, self.refiner.shapes, fitted.tolist(),
                        f"online refinement over {self.steps_done} warm-up iterations"
                        + (f" ({revived} dead or duplicated anchors revived)" if revived else ""))
        bad = self.refiner.find_bad_anchors(wh, offsets) if result.adopted else {}
        if bad:
            levels = ", ".join(f"level {level}: anchors {anchors}" for level, (anchors, _) in sorted(bad.items()))
            log(f"anchors: online refinement left dead or duplicated anchors ({levels}); "
                f"kept the starting anchors")
            shapes = self.start_shapes
        else:
            log(f"anchors: {result.reason}")
            shapes = result.shapes
        frozen = np.asarray(shapes, dtype=np.float64).tolist()
        self.generator.set_shapes(frozen)
        return frozen

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done, "start_shapes": self.start_shapes.tolist(),
                "refiner": self.refiner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps_done = int(state["steps_done"])
        self.start_shapes = np.asarray(state["start_shapes"], dtype=np.float64)
        self.refiner.load_state_dict(state["refiner"])
        self.generator.set_shapes(self.refiner.shapes.tolist())
