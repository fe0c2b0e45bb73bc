"""The hook interface of the training loop, and the events the loop hands to its hooks.

A hook is a small object with plain methods that :class:`detkit.engine.trainer.Trainer` calls at
fixed points, in the order of its hook list (:func:`detkit.engine.hook_list.build_hooks`)::

    before_train                                  once, after setup (and resume)
      before_epoch(epoch)                         each epoch
        before_step(images, targets)              each iteration, inputs on the device, before forward
        after_step(StepInfo)                      each iteration, after the optimizer and LR steps
      after_epoch(EpochEnd)                       each epoch (also one stopped by train.max_iters)
        after_evaluation(Evaluation)              whenever the validation split was evaluated
    after_train                                   once, at the end

A hook that keeps state across a resume adds it to the checkpoint (:meth:`Hook.checkpoint_state`)
and reads it back (:meth:`Hook.load_checkpoint`, called after the trainer restored its own state).
Every method receives the trainer; hooks read what they need from it and change only what their
docstring says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence

import torch

if TYPE_CHECKING:  # the trainer imports the hooks, not the other way round
    from detkit.engine.trainer import Trainer

__all__ = ["Hook", "StepInfo", "StepLosses", "EpochEnd", "Evaluation"]


class StepLosses(Mapping):
    """The losses of one step as a read-only ``{name: float}`` mapping, plus ``loss`` (their sum),
    read from the device once, when a hook first looks at them.

    On the GPU a step's losses are still being computed when the step returns; turning them into
    floats waits for the GPU (a host synchronisation). Hooks that need the numbers only every
    ``train.log_every`` iterations (records, the progress bar) therefore cost nothing in the other
    steps; :attr:`on_host` says whether reading is free (CPU tensors, or already read).

    Args:
        names: the loss keys, in the order of ``values``.
        values: Tensor[len(names)] float32, on any device.
    """

    def __init__(self, names: Sequence[str], values: torch.Tensor) -> None:
        self.names = list(names)
        self.values = values
        self._floats: Optional[Dict[str, float]] = None

    @property
    def on_host(self) -> bool:
        return self._floats is not None or self.values.device.type == "cpu"

    def _read(self) -> Dict[str, float]:
        if self._floats is None:
            floats = dict(zip(self.names, self.values.tolist()))  # the one synchronisation
            floats["loss"] = sum(floats.values())
            self._floats = floats
        return self._floats

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names + ["loss"])

    def __len__(self) -> int:
        return len(self.names) + 1


@dataclass
class StepInfo:
    """One finished iteration: ``losses`` holds every loss key (mean over processes) and ``loss``
    (a :class:`StepLosses` in training: read lazily)."""

    epoch: int  # 1-based
    iteration: int  # iterations done so far, this one included
    losses: Mapping
    lr: float
    img_per_s: float  # since the start of the epoch, all processes together


@dataclass
class EpochEnd:
    """The end of epoch ``index`` (0-based).

    Attributes:
        completed: the epoch count a checkpoint written now records (``index + 1``, or ``index`` when
            ``train.max_iters`` stopped the epoch part-way: a resume repeats it).
        stopped_early: ``train.max_iters`` was reached; training ends after this epoch.
        evaluate: this epoch ends with a validation (``train.eval_every``, or the last epoch); a run
            stopped early is evaluated at the end of training instead.
        last: the last epoch of the schedule.
    """

    index: int
    completed: int
    stopped_early: bool
    evaluate: bool
    last: bool
    seconds: float
    img_per_s: float


@dataclass
class Evaluation:
    """One evaluation of the validation split (rank 0; other ranks receive none)."""

    epoch: int
    iteration: int
    metrics: dict  # what detkit.evaluation.evaluator.evaluate_detections returns
    results: List[dict]  # the detections, COCO results format
    improved: bool  # eval.best_metric beat every earlier evaluation of the run


class Hook:
    """Base class: every method does nothing, so a hook overrides only the points it needs."""

    def before_train(self, trainer: "Trainer") -> None:
        pass

    def before_epoch(self, trainer: "Trainer", epoch: int) -> None:
        pass

    def before_step(self, trainer: "Trainer", images: list, targets: list) -> None:
        pass

    def after_step(self, trainer: "Trainer", step: StepInfo) -> None:
        pass

    def after_epoch(self, trainer: "Trainer", end: EpochEnd) -> None:
        pass

    def after_evaluation(self, trainer: "Trainer", evaluation: Evaluation) -> None:
        pass

    def after_train(self, trainer: "Trainer") -> None:
        pass

    def checkpoint_state(self, trainer: "Trainer") -> dict:
        """Entries this hook adds to every checkpoint the run writes."""
        return {}

    def load_checkpoint(self, trainer: "Trainer", checkpoint: dict) -> None:
        """Take this hook's state back from the checkpoint a run resumes from."""
