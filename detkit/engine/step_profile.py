"""Where a detkit training step's time goes: wall-clock buckets around the parts of the step.

    profiler = StepProfiler(detector)
    with profiler:                       # wraps the parts; restored on exit
        for images, targets in batches:
            with profiler.part("data"): ...            # the caller's own parts
            losses = profiler.forward(images, targets, autocast)
            with profiler.part("backward"): loss.backward()
    profiler.table()

The forward pass is split by wrapping the detector's own components (their instance ``forward`` or
method), each timed exclusively of the wrapped parts it calls: backbone (the ResNet body), FPN, RPN
head, RPN proposals (top-k, decode, NMS), RPN targets and loss, RoI targets (matching, sampling,
encoding), RoIAlign, box head (FC layers + predictor), RoI loss; "forward, other" is what is left
(preprocessing, flattening, post-processing, a cascade's box refinement between stages). A cascade
RoI head (``model.roi_head.cascade``) has each stage's parts wrapped, summed over the stages. On the
CPU every op is synchronous, so the buckets add up to the step time; CUDA would need synchronisation
and is not what this is for. The wrappers cost a perf_counter call each (microseconds): profile apart from the
timed runs anyway.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Tuple

from torch import nn

__all__ = ["StepProfiler", "FORWARD_PARTS"]

# (bucket, path of the object from the detector, attribute to wrap)
FORWARD_PARTS: Tuple[Tuple[str, str, str], ...] = (
    ("backbone", "backbone", "forward"),  # the ResNet body: the FPN inside it is its own bucket
    ("FPN", "backbone.fpn", "forward"),
    ("RPN head", "rpn.head", "forward"),
    ("RPN proposals", "rpn", "propose"),
    ("RPN targets + loss", "rpn", "loss"),
)
# The same, from a RoI head (the detector's, or each stage of a cascade's).
ROI_PARTS: Tuple[Tuple[str, str, str], ...] = (
    ("RoI targets", "", "sample_targets"),
    ("RoIAlign", "roi_pool", "forward"),
    ("box head", "box_head", "forward"),
    ("box head", "predictor", "forward"),
    ("RoI loss", "", "loss"),
)


def _resolve(root: nn.Module, path: str):
    obj = root
    for name in filter(None, path.split(".")):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _parts(detector: nn.Module) -> List[Tuple[str, object, str]]:
    """(bucket, object, attribute) of every part to wrap in ``detector``, each object's attribute once."""
    found = [(bucket, _resolve(detector, path), attr) for bucket, path, attr in FORWARD_PARTS]
    roi_head = getattr(detector, "roi_head", None)
    heads = [] if roi_head is None else list(getattr(roi_head, "stages", [roi_head]))  # a cascade: its stages
    for head in heads:
        found += [(bucket, _resolve(head, path), attr) for bucket, path, attr in ROI_PARTS]
    parts, seen = [], set()
    for bucket, obj, attr in found:
        if obj is None or not hasattr(obj, attr) or (id(obj), attr) in seen:  # e.g. no FPN in a C4 model
            continue
        seen.add((id(obj), attr))
        parts.append((bucket, obj, attr))
    return parts


class StepProfiler:
    """Accumulates seconds per part of a detector's training (or inference) steps."""

    def __init__(self, detector: nn.Module) -> None:
        self.detector = getattr(detector, "module", detector)
        self.seconds: Dict[str, float] = OrderedDict()
        self.steps = 0
        self._saved: List[Tuple[object, str, bool, Callable]] = []
        self._children: List[float] = []  # per open wrapped call: the time of the wrapped calls inside it

    # ------------------------------------------------------------------ wrapping
    def _timed(self, bucket: str, fn: Callable) -> Callable:
        def inner(*args, **kwargs):
            self._children.append(0.0)
            tic = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - tic
                inside = self._children.pop()
                self._add(bucket, elapsed - inside)  # exclusive: a wrapped part inside counts as itself
                if self._children:
                    self._children[-1] += elapsed
        return inner

    def __enter__(self) -> "StepProfiler":
        for bucket, obj, attr in _parts(self.detector):
            self.seconds.setdefault(bucket, 0.0)
            own = attr in vars(obj)
            original = getattr(obj, attr)
            self._saved.append((obj, attr, own, original))
            setattr(obj, attr, self._timed(bucket, original))
        return self

    def __exit__(self, *exc) -> None:
        for obj, attr, own, original in reversed(self._saved):
            if own:
                setattr(obj, attr, original)
            else:
                delattr(obj, attr)
        self._saved.clear()

    def _add(self, bucket: str, seconds: float) -> None:
        self.seconds[bucket] = self.seconds.get(bucket, 0.0) + seconds

    # ------------------------------------------------------------------ measuring
    @contextlib.contextmanager
    def part(self, bucket: str) -> Iterator[None]:
        """Time a block of the caller's (data loading, backward, optimizer step) into ``bucket``."""
        tic = time.perf_counter()
        try:
            yield
        finally:
            self._add(bucket, time.perf_counter() - tic)

    def forward(self, *args, autocast=None, **kwargs):
        """Run the detector's forward pass; the time its wrapped parts do not account for is
        "forward, other"."""
        inner_before = sum(self.seconds.values())
        tic = time.perf_counter()
        with (autocast if autocast is not None else contextlib.nullcontext()):
            out = self.detector(*args, **kwargs)
        total = time.perf_counter() - tic
        self._add("forward, other", total - (sum(self.seconds.values()) - inner_before))
        return out

    def end_step(self) -> None:
        self.steps += 1

    # ------------------------------------------------------------------ reporting
    def per_step(self) -> Dict[str, float]:
        """Mean seconds per step of each bucket, in the order first seen."""
        return OrderedDict((k, v / max(self.steps, 1)) for k, v in self.seconds.items())

    def table(self, title: str = "") -> str:
        rows = self.per_step()
        total = sum(rows.values()) or 1e-12
        width = max([len(k) for k in rows] + [len("total")])
        lines = [title] if title else []
        lines += [f"  {k:<{width}s} {1000 * v:9.1f} ms {100 * v / total:6.1f}%" for k, v in rows.items()]
        lines.append(f"  {'total':<{width}s} {1000 * total:9.1f} ms per step ({self.steps} steps)")
        return "\n".join(lines)
